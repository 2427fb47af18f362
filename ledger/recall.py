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
from .models import Install, Lot, LotSerial, Unit
from .views import RecallHit


class RecallQueryError(LedgerError):
    code = "recall.query"


class UnknownMaterial(LedgerError):
    """The lot, part serial or MPN was never received nor installed: likely a typo."""

    code = "recall.unknown"


def recall(session: Session, *, lot: str | None = None, part: str | None = None,
           mpn: str | None = None, since: datetime | None = None,
           until: datetime | None = None) -> list[RecallHit]:
    """Raises UnknownMaterial when the ledger has never seen the lot, part or MPN (an empty
    list means it is known and no unit in the time window holds it)."""
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
    if not installs:
        _must_be_known(session, lot=lot, part=part, mpn=mpn)
    units = _units(session, {i.unit for i in installs})
    # Walk up: a unit installed in another (PCBA -> server) makes the container affected too.
    containers: dict[str, str] = {s: u.installed_in for s, u in units.items() if u.installed_in}
    frontier = set(containers.values()) - units.keys()
    while frontier:
        more = _units(session, frontier)
        units.update(more)
        containers.update({s: u.installed_in for s, u in more.items() if u.installed_in})
        frontier = {u.installed_in for u in more.values() if u.installed_in} - units.keys()
    out: list[RecallHit] = []
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
                out.append(RecallHit(serial=serial, product=unit.product, state=unit.state,
                                     status=status, part=part_id, lot=i.lot, order=unit.order,
                                     carton=unit.carton,
                                     via=None if serial == i.unit else i.unit))
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


def _must_be_known(session: Session, *, lot: str | None, part: str | None,
                   mpn: str | None) -> None:
    """Refuse a lot, part or MPN that no receipt and no install ever named."""
    if lot is not None:
        known = session.get(Lot, lot) is not None or _any(session, Install.lot == lot)
        what, hint = f"lot {lot!r}", "no material.received and no install names it"
    elif part is not None:
        known = _any(session, Install.serial == part) or session.scalar(
            select(LotSerial.lot).where(LotSerial.serial == part).limit(1)) is not None
        what, hint = f"part {part!r}", "no install and no received lot names that serial"
    else:
        known = _any(session, Install.mpn == mpn) or session.scalar(
            select(Lot.lot).where(Lot.mpn == mpn).limit(1)) is not None
        what, hint = f"MPN {mpn!r}", "no received lot and no install names it"
    if not known:
        raise UnknownMaterial(f"{what} is unknown to the ledger ({hint}); check the spelling")


def _any(session: Session, condition: Any) -> bool:
    return session.scalar(select(Install.id).where(condition).limit(1)) is not None
