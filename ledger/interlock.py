"""The synchronous interlock (IPC-CFX ValidateUnits / BlockMaterials): "may unit S start step N
at station X?", answered yes or no with every reason, from the ledger's state and the holds in
force. And the reads it shares with the worker's route stage (`linetrace.streams.route_stage`):
a unit's own events, the route it started on, the ends of its route holds.

The judgement itself is `linetrace.schemas.routes.progress` (pure), the one the stage applies
to every unit event; this module only reads what it needs:

- the unit's progress from its own events, in the order stored, with its route holds' ends
  (releases waive, dispositions decide) folded in at their positions in the log;
- the holds in force (`holds.load_holds_in_force`) that stop it: on the unit, its work order,
  a lot or MPN it contains or would receive (`lots`), the station (locked);
- the lots to install: received (a `material.received`; otherwise CFX BlockMaterials refuses
  them), not held; the part serials to install (`parts`): not installed in another unit now
  (a cloned serial), and a sub-assembly among them completed its own route.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas.routes import Route, RouteBook
from linetrace.schemas.routes.progress import (
    DISPOSITION_CODES, LOT_NOT_RECEIVED, PART_INSTALLED_ELSEWHERE, PROGRESS_TYPES, ROUTE_CODES,
    Ended, Fact, Progress, Reason, Rules, assembly_reasons, first_steps_of, hold_reason,
    read_fact, replay,
)

from .errors import LedgerError
from .holds import load_holds_in_force
from .models import EventRow, Hold, Install, Lot, Station, Unit
from .sql import in_values
from .unit_state import aware

_CHUNK = 400
#: Hold codes whose end the fold reads (the unit's own route holds).
ENDED_CODES = tuple(sorted(ROUTE_CODES | DISPOSITION_CODES))


class InterlockError(LedgerError):
    """The question cannot be asked as put (an unknown station, a bad step): exit 2."""

    code = "validate.invalid"


@dataclass(frozen=True)
class UnitRecord:
    """A unit as the `units` table has it: what it is and the route it started on."""

    serial: str
    product: str
    kind: str
    work_order: str | None
    route_product: str | None
    route_sha256: str | None


@dataclass(frozen=True)
class Verdict:
    """The interlock's answer: allowed, and every reason it is not."""

    allowed: bool
    reasons: list[Reason] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"allowed": self.allowed, "reasons": [r.to_json() for r in self.reasons]}


# --- reads shared with the route stage ------------------------------------------------------


def unit_rules(routes: RouteBook, record: UnitRecord | None) -> Rules:
    """The fold's rules for one unit: the route its first `work.started` names, if it is the
    one the unit started on (the hash the ledger recorded on it; a route changed since is not
    used to judge it: None), or, for a unit the ledger has no row of, the route in force."""

    def route_for(product: str, kind: str) -> Route | None:
        route = routes.find_route_for_unit(product, kind)
        if route is None or record is None:
            return route
        if record.route_sha256 is None or record.route_sha256 != route.sha256:
            return None
        return route

    return Rules(route_for=route_for, first_steps=first_steps_of(routes.routes.values()))


def unit_records(session: Session, serials: Iterable[str]) -> dict[str, UnitRecord]:
    items = sorted(set(serials))
    out: dict[str, UnitRecord] = {}
    for i in range(0, len(items), _CHUNK):
        for r in session.execute(select(
                Unit.serial, Unit.product, Unit.kind, Unit.work_order, Unit.route_product,
                Unit.route_sha256).where(in_values(session, Unit.serial, items[i:i + _CHUNK]))):
            out[r[0]] = UnitRecord(r[0], r[1], r[2], r[3], r[4], r[5])
    return out


#: One of a unit's own events as the fold reads it: (seq, type, source, time, what it says).
UnitEvent = tuple[int, str, str, datetime, Fact]


def unit_events(session: Session, serials: Iterable[str], *, before_seq: int | None = None
                ) -> dict[str, list[UnitEvent]]:
    """Each unit's own events of the types the fold reads, in the order stored (before
    `before_seq` when given), read as the fold reads them (`progress.read_fact`)."""
    items = sorted(set(serials))
    out: dict[str, list[UnitEvent]] = {s: [] for s in items}
    for i in range(0, len(items), _CHUNK):
        q = (select(EventRow.subject, EventRow.seq, EventRow.type, EventRow.source,
                    EventRow.time, EventRow.value)
             .where(in_values(session, EventRow.subject, items[i:i + _CHUNK]),
                    EventRow.type.in_(PROGRESS_TYPES)))
        if before_seq is not None:
            q = q.where(EventRow.seq < before_seq)
        for subject, seq, etype, source, t, value in session.execute(q):
            out[subject].append((int(seq), etype, source, aware(t), read_fact(value)[1]))
    for events in out.values():
        events.sort(key=lambda e: e[0])
    return out


def ended_holds(session: Session, serials: Iterable[str]) -> dict[str, list[Ended]]:
    """The unit route holds (scope unit) that ended, by unit, with their log positions."""
    items = sorted(set(serials))
    out: dict[str, list[Ended]] = {}
    for i in range(0, len(items), _CHUNK):
        for target, seq, code, step, decision in session.execute(select(
                Hold.target, Hold.released_seq, Hold.code, Hold.step, Hold.decision).where(
                Hold.scope == "unit", in_values(session, Hold.target, items[i:i + _CHUNK]),
                Hold.state != "active", Hold.released_seq.is_not(None),
                Hold.code.in_(ENDED_CODES))):
            if seq is not None:
                out.setdefault(target, []).append(Ended(int(seq), code, step, decision))
    return out


def named_events(session: Session, keys: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """(subject, event id) -> events.seq of those of `keys` that are stored."""
    wanted = sorted(set(keys))
    out: dict[tuple[str, str], int] = {}
    for i in range(0, len(wanted), _CHUNK):
        part = wanted[i:i + _CHUNK]
        asked = set(part)
        for subject, eid, seq in session.execute(select(
                EventRow.subject, EventRow.event_id, EventRow.seq).where(
                in_values(session, EventRow.subject, sorted({k[0] for k in part})),
                EventRow.event_id.in_(sorted({k[1] for k in part})))):
            if (subject, eid) in asked:
                out[(subject, eid)] = int(seq)
    return out


def station_types(session: Session, stations: Iterable[str]) -> dict[str, str]:
    wanted = sorted(set(stations))
    if not wanted:
        return {}
    return {r[0]: r[1] for r in session.execute(select(Station.station_id, Station.station_type)
                                                .where(Station.station_id.in_(wanted)))}


def progress_of(serial: str, routes: RouteBook, record: UnitRecord | None,
                events: Sequence[UnitEvent], ended: Sequence[Ended] = (),
                until: datetime | None = None, until_seq: int | None = None) -> Progress:
    """The unit's progress after `events` (those at or before time `until`, and up to and
    including the one stored at `until_seq`, when given)."""
    chosen = [(seq, t, body, source) for seq, t, source, at, body in events
              if (until is None or at <= until) and (until_seq is None or seq <= until_seq)]
    return replay(serial, unit_rules(routes, record), chosen, ended)


def load_progress(session: Session, serial: str, routes: RouteBook) -> Progress:
    """One unit's progress from everything the ledger holds (three queries)."""
    record = unit_records(session, [serial]).get(serial)
    events = unit_events(session, [serial])[serial]
    return progress_of(serial, routes, record, events, ended_holds(session, [serial]).get(serial, []))


# --- the interlock ----------------------------------------------------------------------------


def validate(session: Session, serial: str, step: int, station: str, *, routes: RouteBook,
             lots: Collection[str] = (), parts: Collection[str] = ()) -> Verdict:
    """May unit `serial` start step `step` at station `station` (installing the parts of
    `lots` and the serialized `parts`)? Every reason it may not (module docstring).

    InterlockError `validate.invalid` for a station that is not enrolled or a negative step.
    """
    if step < 0:
        raise InterlockError(f"step {step} is not a step number (0 or more)")
    stype = station_types(session, [station]).get(station)
    if stype is None:
        raise InterlockError(f"station {station!r} is not enrolled (`linetrace stations list` "
                             "shows the enrolled ones)", code="validate.unknown_station")
    progress = load_progress(session, serial, routes)
    reasons: list[Reason] = list(progress.entry_reasons(step, stype))

    received = _lots(session, lots)
    for lot in sorted(set(lots)):
        if lot not in received:
            reasons.append(Reason(LOT_NOT_RECEIVED, f"lot {lot} was never received (no "
                                  "material.received in the ledger): receive and check it "
                                  "before installing its parts"))
    holds = load_holds_in_force(session)
    work_order = progress.work_order
    if work_order is None:
        record = unit_records(session, [serial]).get(serial)
        work_order = record.work_order if record is not None else None
    found = holds.for_unit(serial, work_order=work_order,
                           lots=sorted({*progress.held_lots, *lots}),
                           mpns=sorted({*progress.held_mpns, *received.values()}),
                           station=station)
    for part in sorted(set(parts)):  # a sub-assembly that a lot or MPN hold reached
        found += [h for h in holds.for_unit(part, work_order=None, lots=(), mpns=(), station=None)
                  if h.scope in ("lot", "mpn") and h not in found]
    reasons += [hold_reason(serial, h.hold_id, h.scope, h.target, h.reason) for h in found]
    reasons += _part_reasons(session, serial, step, parts, routes, progress)
    return Verdict(allowed=not reasons, reasons=reasons)


def _lots(session: Session, lots: Collection[str]) -> dict[str, str]:
    """lot -> MPN of the lots among `lots` that were received."""
    wanted = sorted(set(lots))
    if not wanted:
        return {}
    return {r[0]: r[1] for r in session.execute(select(Lot.lot, Lot.mpn)
                                                .where(Lot.lot.in_(wanted)))}


def _part_reasons(session: Session, serial: str, step: int, parts: Collection[str],
                  routes: RouteBook, progress: Progress) -> list[Reason]:
    wanted = sorted(set(parts))
    if not wanted:
        return []
    out: list[Reason] = []
    elsewhere: dict[str, tuple[str, datetime]] = {}
    for part, unit, at in session.execute(select(Install.serial, Install.unit,
                                                 Install.installed_at).where(
            Install.serial.in_(wanted), Install.removed_at.is_(None),
            Install.unit != serial)):
        if part is not None:
            elsewhere.setdefault(part, (unit, aware(at)))
    for part in wanted:
        if part in elsewhere:
            unit, at = elsewhere[part]
            out.append(Reason(PART_INSTALLED_ELSEWHERE, (
                f"part {part} is installed in {unit} (since {at.isoformat()}) and was not "
                "removed: a serial goes into one unit only (a second one is a cloned serial)")))
    route = progress.route
    consumed = {a.category: a for a in route.step(step).consumes} \
        if route is not None and route.has_step(step) else {}
    if not consumed:
        return out
    records = unit_records(session, wanted)
    assemblies = [p for p in wanted if p in records and records[p].kind == "assembly"]
    if not assemblies:
        return out
    events = unit_events(session, assemblies)
    ended = ended_holds(session, assemblies)
    for part in assemblies:
        ap = progress_of(part, routes, records[part], events[part], ended.get(part, []))
        sub = next((a for a in consumed.values()
                    if ap.route is not None and a.route == ap.route.product),
                   next(iter(consumed.values())))
        out += assembly_reasons(ap, sub, serial, step)
    return out


def consumed_categories(routes: RouteBook) -> frozenset[str]:
    """Every category a route in force consumes as a sub-assembly (`consumes`)."""
    return frozenset(a.category for r in routes.routes.values() for s in r.steps
                     for a in s.consumes)


def route_of(routes: RouteBook, record: UnitRecord | None) -> Route | None:
    """The route a unit started on, if it is still in force (same hash)."""
    if record is None or record.route_product is None or record.route_sha256 is None:
        return None
    route = routes.routes.get(record.route_product)
    return route if route is not None and route.sha256 == record.route_sha256 else None
