"""Forward traceability: every unit that contains or ever contained a lot, part or MPN.

Includes units that contain it through a sub-assembly (a reel on the PCBA -> the server the
PCBA went into), and units already shipped (with order and carton, for the recall letter).
"""

from __future__ import annotations

from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ARRAY, Connection, Select, String, any_, bindparam, func, select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .holds import stopped_units
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
    by = "lot" if lot is not None else "part" if part is not None else "mpn"
    conn = session.connection()
    # Plain tuples, not the result's rows: the rows are objects the garbage collector tracks,
    # and ~6,400 of them kept alive through the call made a full collection every few recalls
    # (a third of a recall's time); a tuple of strings and times is untracked once seen.
    rows = conn.execute(_installs(by, since is not None, until is not None),
                        {"key": lot if lot is not None else part if part is not None else mpn,
                         "since": since, "until": until})
    installs = [(unit, part_id, part_lot, removed_at)
                for unit, part_id, part_lot, removed_at in rows]
    if not installs:
        _must_be_known(session, lot=lot, part=part, mpn=mpn)
    units = _units(conn, {i[0] for i in installs})
    # Walk up: a unit installed in another (PCBA -> server) makes the container affected too.
    containers: dict[str, str] = {s: u[4] for s, u in units.items() if u[4]}
    frontier = set(containers.values()) - units.keys()
    while frontier:
        more = _units(conn, frontier)
        units.update(more)
        containers.update({s: u[4] for s, u in more.items() if u[4]})
        frontier = {u[4] for u in more.values() if u[4]} - units.keys()
    # A unit an active hold stops shows `on_hold`, as `units` shows it (worked out on read).
    held = stopped_units(session) if units else {}
    out: list[RecallHit] = []
    seen: set[tuple[str, str, str]] = set()
    for in_unit, part_id, part_lot, removed_at in installs:
        status = "installed" if removed_at is None else "removed"
        serial = in_unit
        while True:
            key = (serial, part_id, status)
            unit = units.get(serial)
            if unit is not None and key not in seen:
                seen.add(key)
                product, state, order, carton, _ = unit
                out.append(RecallHit(serial=serial, product=product,
                                     state="on_hold" if serial in held else state,
                                     status=status, part=part_id, lot=part_lot, order=order,
                                     carton=carton, via=None if serial == in_unit else in_unit))
            container = containers.get(serial)
            if container is None:
                break
            serial = container
    return out


# Installs first, then their units by primary key: a join lets PostgreSQL's default planner
# scan every unit (docs/benchmarks.md, recall diagnosis). Statements are built once and rows
# read as plain tuples on the session's connection: a GPU lot is ~6,400 hits, and ORM rows,
# statement building per call and attribute access were most of a recall's time.
_BY = {"lot": Install.lot, "part": Install.serial, "mpn": Install.mpn}


@cache
def _installs(by: str, since: bool, until: bool) -> Select[str, str, str, datetime | None]:
    """(unit, part serial or else MPN, lot, removed_at) of the installs naming the material."""
    q = (select(Install.unit, func.coalesce(Install.serial, Install.mpn), Install.lot,
                Install.removed_at)
         .where(_BY[by] == bindparam("key")))
    if since:
        q = q.where(Install.installed_at >= bindparam("since"))
    if until:
        q = q.where(Install.installed_at <= bindparam("until"))
    return q.order_by(Install.unit, Install.id)


_UNITS = select(Unit.serial, Unit.product, Unit.state, Unit.order, Unit.carton,
                Unit.installed_in)
_UNITS_SQLITE = _UNITS.where(Unit.serial.in_(bindparam("serials", expanding=True)))
_UNITS_POSTGRESQL = _UNITS.where(Unit.serial == any_(bindparam("serials", type_=ARRAY(String))))


def _units(conn: Connection, serials: set[str]) -> dict[str, tuple[Any, ...]]:
    """serial -> (product, state, order, carton, installed_in) of the units among `serials`.

    PostgreSQL gets the serials as one array parameter: an IN list of hundreds of parameters
    costs more to render, parse and plan than the lookups themselves. With its default
    random_page_cost (4, for spinning disks) it would also rather scan every unit than probe
    the primary key for hundreds of keys (16 vs 3.5 ms for 816 of 40,000 units), so the cost
    is lowered for this read transaction only. SQLite searches the key once per term of an
    IN list, in chunks under its variable limit.
    """
    items = sorted(serials)
    if not items:
        return {}
    found: dict[str, tuple[Any, ...]] = {}
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("SET LOCAL random_page_cost = 1.1")
        found.update((serial, tuple(rest)) for serial, *rest
                     in conn.execute(_UNITS_POSTGRESQL, {"serials": items}))
    else:
        for n in range(0, len(items), 500):
            found.update((serial, tuple(rest)) for serial, *rest
                         in conn.execute(_UNITS_SQLITE, {"serials": items[n:n + 500]}))
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
