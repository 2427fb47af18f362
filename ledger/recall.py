"""Forward traceability: every unit that contains or ever contained a lot, part or MPN.

Includes units that contain it through a sub-assembly (a reel on the PCBA -> the server the
PCBA went into), and units already shipped (with order and carton, for the recall letter).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .models import Install, Unit


class RecallQueryError(LedgerError):
    code = "recall.query"


def recall(session: Session, *, lot: str | None = None, part: str | None = None,
           mpn: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> list[dict[str, Any]]:
    if sum(x is not None for x in (lot, part, mpn)) != 1:
        raise RecallQueryError("give exactly one of --lot, --part or --mpn")
    # Installs first, then their units by primary key: a join lets PostgreSQL's default
    # planner scan every unit (docs/benchmarks.md, recall diagnosis).
    q = select(Install.unit, Install.serial, Install.mpn, Install.lot, Install.removed_at)
    if lot is not None:
        q = q.where(Install.lot == lot)
    elif part is not None:
        q = q.where(Install.serial == part)
    else:
        q = q.where(Install.mpn == mpn)
    if since is not None:
        q = q.where(Install.installed_at >= since)
    if until is not None:
        q = q.where(Install.installed_at <= until)
    installs = session.execute(q.order_by(Install.unit, Install.id)).all()
    units = _units(session, {i.unit for i in installs})
    # Walk up: a unit installed in another (PCBA -> server) makes the container affected too.
    containers: dict[str, str] = {s: u.installed_in for s, u in units.items() if u.installed_in}
    frontier = set(containers.values()) - units.keys()
    while frontier:
        more = _units(session, frontier)
        units.update(more)
        containers.update({s: u.installed_in for s, u in more.items() if u.installed_in})
        frontier = {u.installed_in for u in more.values() if u.installed_in} - units.keys()
    out: list[dict[str, Any]] = []
    seen: set[tuple[str, str, str]] = set()
    for i in installs:
        status = "installed" if i.removed_at is None else "removed"
        part_id = i.serial or i.mpn
        serial = i.unit
        while True:
            key = (serial, part_id, status)
            unit = units.get(serial)
            if unit is not None and key not in seen:
                seen.add(key)
                out.append({"serial": serial, "product": unit.product, "state": unit.state,
                            "status": status, "part": part_id, "lot": i.lot,
                            "order": unit.order, "carton": unit.carton,
                            "via": None if serial == i.unit else i.unit})
            if serial not in containers:
                break
            serial = containers[serial]
    return out


def _units(session: Session, serials: set[str]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    items = sorted(serials)
    for n in range(0, len(items), 500):
        found.update({u.serial: u for u in session.execute(
            select(Unit.serial, Unit.product, Unit.state, Unit.order, Unit.carton,
                   Unit.installed_in).where(Unit.serial.in_(items[n:n + 500])))})
    return found
