"""Receipts by lot and station activity by station: what `lots show` and `stations show` print."""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .genealogy import iso
from .models import EventRow, Install, Lot, LotSerial, Station, StationKey


class NotFound(LedgerError):
    code = "ledger.not_found"


def _events(session: Session, subject: str, types: tuple[str, ...]) -> list[dict[str, Any]]:
    rows = session.execute(select(EventRow.time, EventRow.type, EventRow.source,
                                  EventRow.event_id, EventRow.value)
                           .where(EventRow.subject == subject, EventRow.type.in_(types))
                           .order_by(EventRow.time, EventRow.seq)).all()
    return [{"time": iso(t), "type": typ, "source": src, "event_id": eid,
             "data": json.loads(v)["data"]} for t, typ, src, eid, v in rows]


def show_lot(session: Session, lot: str) -> dict[str, Any]:
    row = session.get(Lot, lot)
    if row is None:
        raise NotFound(f"lot {lot!r} was never received (no material.received in the ledger)")
    serials = session.scalars(select(LotSerial.serial).where(LotSerial.lot == lot)
                              .order_by(LotSerial.serial)).all()
    used = session.execute(select(func.count(), func.count(func.distinct(Install.unit)))
                           .where(Install.lot == lot)).one()
    return {"lot": row.lot, "mpn": row.mpn, "supplier": row.supplier,
            "date_code": row.date_code, "qty": row.qty, "received": iso(row.received_at),
            "station": row.station, "event_id": row.event_id,
            "documents": row.documents.get("documents", []), "serials": list(serials),
            "installs": used[0], "units": used[1],
            "events": _events(session, lot, ("material.received", "material.checked"))}


def show_station(session: Session, station_id: str) -> dict[str, Any]:
    st = session.get(Station, station_id)
    if st is None:
        raise NotFound(f"station {station_id!r} is not enrolled; `linetrace stations list`")
    keys = session.scalars(select(StationKey).where(StationKey.station_id == station_id)
                           .order_by(StationKey.enrolled_at)).all()
    counts = dict(session.execute(select(EventRow.type, func.count())
                                  .where(EventRow.source == station_id)
                                  .group_by(EventRow.type)).all())
    events = _events(session, station_id, ("station.enrolled", "station.revoked",
                                           "station.state", "fault.occurred", "fault.cleared"))
    states = [e for e in events if e["type"] == "station.state"]
    open_faults: dict[str, dict[str, Any]] = {}
    for e in events:
        if e["type"] == "fault.occurred":
            open_faults[e["data"]["fault_id"]] = e
        elif e["type"] == "fault.cleared":
            open_faults.pop(e["data"]["fault_id"], None)
    return {"station_id": st.station_id, "station_type": st.station_type,
            "enrolled": iso(st.enrolled_at),
            "keys": [{"keyid": k.keyid, "enrolled": iso(k.enrolled_at),
                      "revoked": iso(k.revoked_at), "revoked_after": k.revoked_after}
                     for k in keys],
            "state": states[-1]["data"]["state"] if states else None,
            "open_faults": list(open_faults.values()),
            "events_by_type": counts, "events": events}
