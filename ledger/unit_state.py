"""A unit's state as a function of its events, whatever order the partitions are read in.

A unit's own events (work, repair, scrap, pack, ship) travel on its own partition, in order.
The install of a sub-assembly into a server, and its removal, travel on the server's
partition, which the worker may read earlier or later than the board's. So the state has
two sources, combined by event time:

- the route state: the unit's own state-bearing events folded in their order by
  `route_state`, the rule the projections apply one event at a time;
- custody: the `installs` rows naming the unit's serial. A unit with an install not removed
  is `installed` (in the latest such install's unit), whatever its own events say; one taken
  out is `in_repair`, unless one of its own state-bearing events is later (event time; a tie
  goes to the removal, which can only follow the unit's time in the server).

The projections apply a unit's own events incrementally, which is exact for a unit no install
names. A unit that custody may concern is marked (`mark`): a unit seen for the first time, one
that is `installed` or `in_repair` when its own event arrives, and every serial an install or
removal names. Once per batch the writer calls `settle_units`, which finds the marked units
that installs name and recomputes their state, step and `updated` from their events and
custody. Units no install names (servers) cost one membership test per state event.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import decode_stored_event

from .models import EventRow, Install, Station, Unit
from .sql import in_values

FINAL_STATES = frozenset({"packed", "shipped", "scrapped"})
CUSTODY_STATES = frozenset({"installed", "in_repair"})
STATE_TYPES = ("work.started", "unit.repaired", "unit.scrapped", "unit.packed", "unit.shipped")
REPAIR_STATION_TYPE = "repair"
_MARKED = "units_to_settle"
_CHUNK = 400


def aware(t: datetime) -> datetime:
    """SQLite returns naive datetimes; every time the ledger stores is UTC."""
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def route_state(state: str, step: int | None, body: b.Body, at_repair: bool
                ) -> tuple[str, int | None]:
    """(state, step) after one of the unit's own events (the state as its route says)."""
    if isinstance(body, b.WorkStarted):
        if state not in FINAL_STATES:
            return ("in_repair" if at_repair else "in_progress"), body.step
        # A packed unit still has its route's last steps to go (ship): the step follows the
        # work, the state stays packed until unit.shipped.
        return state, body.step if state == "packed" else step
    if isinstance(body, b.UnitRepaired):
        if body.result == "Scrap":
            return "scrapped", step
        if state in FINAL_STATES:
            return state, step
        after = "in_progress" if body.result == "RepairSuccessful" else "in_repair"
        return after, body.return_step if body.return_step is not None else step
    if isinstance(body, b.UnitScrapped):
        return "scrapped", step
    if isinstance(body, b.UnitPacked):
        return "packed", step
    if isinstance(body, b.UnitShipped):
        return "shipped", step
    return state, step


@dataclass(frozen=True)
class InstallFact:
    """An `installs` row naming the unit: where it went, when, and when it came out."""

    unit: str
    installed_at: datetime
    installed_event: str
    removed_at: datetime | None


@dataclass(frozen=True)
class Custody:
    installed_in: str | None  # the unit it is in now (None: not installed)
    removed_at: datetime | None  # its latest removal
    latest: datetime  # its latest install or removal (for `updated`)


def custody_of(facts: Sequence[InstallFact]) -> Custody:
    """Custody from the install facts naming a unit, in any order."""
    current = [f for f in facts if f.removed_at is None]
    inside = max(current, key=lambda f: (f.installed_at, f.installed_event, f.unit),
                 default=None)
    removals = [f.removed_at for f in facts if f.removed_at is not None]
    times = [f.installed_at for f in facts] + removals
    return Custody(inside.unit if inside else None, max(removals, default=None), max(times))


def combined_state(route: str, route_at: datetime | None, custody: Custody) -> str:
    """The state a unit shows: custody wins while it is in a unit, and after its removal
    until one of its own events is later."""
    if custody.installed_in is not None:
        return "installed"
    if custody.removed_at is not None and (route_at is None or custody.removed_at >= route_at):
        return "in_repair"
    return route


def mark(session: Session, serial: str) -> None:
    """Custody may concern this unit: `settle_units` looks at it before the batch commits."""
    session.info.setdefault(_MARKED, set()).add(serial)


def needs_settling(unit: Unit) -> bool:
    """Is the incremental state of this unit possibly not its route state?"""
    return unit.state in CUSTODY_STATES or unit.installed_in is not None


def settle_units(session: Session) -> int:
    """Recompute the marked units that installs name; returns how many. Call once per batch,
    after the projections (the writer does)."""
    marked: set[str] | None = session.info.pop(_MARKED, None)
    if not marked:
        return 0
    session.flush()
    units = _units(session, sorted(marked))  # most marked serials are parts, not units
    facts = _install_facts(session, sorted(units))
    named = sorted(s for s in units if s in facts)
    routes = own_routes(session, named)
    for serial in named:
        restate(session, units[serial], facts[serial], routes[serial])
    return len(named)


def _install_facts(session: Session, serials: Sequence[str]) -> dict[str, list[InstallFact]]:
    out: dict[str, list[InstallFact]] = {}
    for i in range(0, len(serials), _CHUNK):
        rows = session.execute(select(
            Install.serial, Install.unit, Install.installed_at, Install.installed_event,
            Install.removed_at).where(in_values(session, Install.serial,
                                                serials[i:i + _CHUNK])))
        for r in rows:
            if r[0] is None:
                continue
            out.setdefault(r[0], []).append(InstallFact(
                r[1], aware(r[2]), r[3], aware(r[4]) if r[4] is not None else None))
    return out


def _units(session: Session, serials: Sequence[str]) -> dict[str, Unit]:
    cache: dict[str, Unit] = session.info.setdefault("units", {})
    found = {s: cache[s] for s in serials if s in cache}
    missing = [s for s in serials if s not in found]
    for i in range(0, len(missing), _CHUNK):
        for u in session.scalars(select(Unit).where(
                in_values(session, Unit.serial, missing[i:i + _CHUNK]))):
            found[u.serial] = cache[u.serial] = u
    return found


def own_route(session: Session, serial: str) -> tuple[str, int | None, datetime | None]:
    """(route state, step, latest time) from the unit's own state-bearing events, in order."""
    return own_routes(session, [serial])[serial]


def own_routes(session: Session, serials: Sequence[str]
               ) -> dict[str, tuple[str, int | None, datetime | None]]:
    """`own_route` of each unit, for all of them in one query per chunk of serials."""
    events: dict[str, list[tuple[int, str, datetime, bytes]]] = {s: [] for s in serials}
    for i in range(0, len(serials), _CHUNK):
        rows = session.execute(
            select(EventRow.subject, EventRow.seq, EventRow.source, EventRow.time,
                   EventRow.value)
            .where(in_values(session, EventRow.subject, serials[i:i + _CHUNK]),
                   EventRow.type.in_(STATE_TYPES)))
        for subject, seq, source, t, value in rows:
            events[subject].append((seq, source, t, value))
    repair = _repair_stations(session, {e[1] for own in events.values() for e in own})
    out: dict[str, tuple[str, int | None, datetime | None]] = {}
    for serial, own in events.items():
        state, step, latest = "in_progress", None, None
        for _, source, t, value in sorted(own, key=lambda r: r[0]):
            state, step = route_state(state, step, decode_stored_event(value).body,
                                      source in repair)
            at = aware(t)
            latest = at if latest is None or at > latest else latest
        out[serial] = (state, step, latest)
    return out


def _repair_stations(session: Session, sources: Iterable[str]) -> set[str]:
    wanted = sorted(sources)
    if not wanted:
        return set()
    return set(session.scalars(select(Station.station_id).where(
        Station.station_id.in_(wanted), Station.station_type == REPAIR_STATION_TYPE)))


def restate(session: Session, unit: Unit, facts: Sequence[InstallFact],
            route: tuple[str, int | None, datetime | None] | None = None) -> None:
    """Set the unit's state, step, `installed_in` and `updated` from its events and custody
    (and its `own_route`, when the caller read it already)."""
    state, step, route_at = route or own_route(session, unit.serial)
    custody = custody_of(facts)
    unit.state = combined_state(state, route_at, custody)
    unit.step = step
    unit.installed_in = custody.installed_in
    if custody.latest > aware(unit.updated):
        unit.updated = custody.latest
