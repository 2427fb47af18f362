"""Receipts by lot, station activity by station and refused records: what `lots show`,
`stations show` and `rejected` print, as the read models of `views.py`."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .genealogy import iso
from .models import EventRow, Install, Lot, LotSerial, Rejected, Station, StationKey
from .views import (
    AvlResult, LedgerEvent, LotDocument, LotReport, RejectedRecord, StationKeyRecord,
    StationReport, station_state_name,
)


class NotFound(LedgerError):
    code = "ledger.not_found"


def _events(session: Session, subject: str, types: tuple[str, ...]) -> list[LedgerEvent]:
    rows = session.execute(select(EventRow.time, EventRow.type, EventRow.source,
                                  EventRow.event_id, EventRow.value)
                           .where(EventRow.subject == subject, EventRow.type.in_(types))
                           .order_by(EventRow.time, EventRow.seq)).all()
    return [LedgerEvent(time=iso(t), type=typ, source=src, event_id=eid,
                        data=json.loads(v)["data"]) for t, typ, src, eid, v in rows]


def _avl(events: list[LedgerEvent], receipt: str) -> AvlResult | None:
    """The latest check of this receipt against the approved vendor list, if any."""
    checks = [e for e in events
              if e.type == "material.checked" and e.data.get("receipt") == receipt]
    if not checks:
        return None
    c = checks[-1]
    return AvlResult(result=str(c.data.get("result")), reason=c.data.get("reason"),
                     avl_sha256=c.data.get("avl_sha256"), time=c.time, event_id=c.event_id)


def show_lot(session: Session, lot: str) -> LotReport:
    row = session.get(Lot, lot)
    if row is None:
        raise NotFound(f"lot {lot!r} was never received (no material.received in the ledger)")
    serials = session.scalars(select(LotSerial.serial).where(LotSerial.lot == lot)
                              .order_by(LotSerial.serial)).all()
    used = session.execute(select(func.count(), func.count(func.distinct(Install.unit)))
                           .where(Install.lot == lot)).one()
    events = _events(session, lot, ("material.received", "material.checked"))
    return LotReport(lot=row.lot, mpn=row.mpn, supplier=row.supplier, date_code=row.date_code,
                     qty=row.qty, received=iso(row.received_at), station=row.station,
                     event_id=row.event_id,
                     documents=[LotDocument(kind=d["kind"], sha256=d["sha256"],
                                            name=d.get("name"))
                                for d in row.documents.get("documents", [])],
                     serials=list(serials), installs=used[0], units=used[1], events=events,
                     avl=_avl(events, row.event_id))


def show_station(session: Session, station_id: str) -> StationReport:
    st = session.get(Station, station_id)
    if st is None:
        raise NotFound(f"station {station_id!r} is not enrolled; `linetrace stations list`")
    keys = session.scalars(select(StationKey).where(StationKey.station_id == station_id)
                           .order_by(StationKey.enrolled_at)).all()
    counts = {str(t): int(n) for t, n in session.execute(
        select(EventRow.type, func.count()).where(EventRow.source == station_id)
        .group_by(EventRow.type)).all()}
    events = _events(session, station_id, ("station.enrolled", "station.revoked",
                                           "station.state", "fault.occurred", "fault.cleared"))
    states = [e for e in events if e.type == "station.state"]
    open_faults: dict[str, LedgerEvent] = {}
    for e in events:
        if e.type == "fault.occurred":
            open_faults[e.data["fault_id"]] = e
        elif e.type == "fault.cleared":
            open_faults.pop(e.data["fault_id"], None)
    state = states[-1].data["state"] if states else None
    return StationReport(
        station_id=st.station_id, station_type=st.station_type, enrolled=iso(st.enrolled_at),
        keys=[StationKeyRecord(keyid=k.keyid, enrolled=iso(k.enrolled_at),
                               revoked=iso(k.revoked_at), revoked_after=k.revoked_after)
              for k in keys],
        state=state, open_faults=list(open_faults.values()), events_by_type=counts,
        events=events, state_name=station_state_name(state))


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def rejected(session: Session, *, code: str | None = None,
             since: datetime | None = None) -> list[RejectedRecord]:
    """Records ingest refused (dead-lettered or quarantined), oldest first; `since` is
    compared with the time linetrace recorded the refusal."""
    q = select(Rejected.id, Rejected.recorded, Rejected.destination, Rejected.code,
               Rejected.message, Rejected.stage, Rejected.topic, Rejected.partition,
               Rejected.offset, Rejected.source, Rejected.event_id, Rejected.key,
               Rejected.value).order_by(Rejected.id)
    if code is not None:
        q = q.where(Rejected.code == code)
    if since is not None:
        q = q.where(Rejected.recorded >= since.astimezone(UTC))
    return [RejectedRecord(id=r.id, recorded=iso(r.recorded), destination=r.destination,
                           code=r.code, message=r.message, stage=r.stage, topic=r.topic,
                           partition=r.partition, offset=r.offset, source=r.source,
                           event_id=r.event_id, key_b64=_b64(r.key), value_b64=_b64(r.value))
            for r in session.execute(q)]
