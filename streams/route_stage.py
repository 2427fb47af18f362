"""The route stage: every unit event checked against the unit's route and state (issue 11).

A stage of the pipeline (`stages.py`), after the system-events stage. `load` reads, per batch,
in a handful of queries: the batch's units' own earlier events (decoded, in the order stored),
their `units` rows (the route each started on), the ends of their route holds, the holds in
force, the station types, and what the consumed sub-assemblies need (their partitions' line
clocks, their events); `decide` folds each unit's progress (`schemas.routes.progress`, the
judgement `linetrace validate` applies too) and answers the batch's events in order:

- a unit that arrives at or starts a step it may not (a required step not completed, a quality
  gate not passed, the wrong station type, not on its route, a unit whose first event was not
  at its route's first step), or reports a result its step does not list: a route violation.
  linetrace holds the unit (`hold.placed`, scope unit, category quality, `placed_by`
  linetrace, its cause the event) and tells the station (`command.hold`, caused by the hold),
  and records each reason in `route_violations`. A unit already stopped by a hold in force is
  not held again: the station gets `command.hold` naming that hold, and the reasons are
  recorded against it;
- `work.completed` `Failed`: the route's rework, a `command.route` to the repair step (to the
  station that reported it) while loops are left; after `max_loops` repairs, without a rework,
  or a repair that could not repair (`unit.repaired` `UnableToRepair`): a hold for a person's
  disposition (`route.max_loops`, `route.failed_no_rework`, `route.unable_to_repair`);
- an install of a part from a held lot or MPN: the unit joins that hold (`hold_units`) and
  the station gets `command.hold`;
- the install of a consumed sub-assembly (the server's PCBA, which travels on its own
  partition): decided once the sub-assembly's event the install names (`last_event`) is
  stored, from its events up to that one, or, for an install that names none, once its
  partition's line clock has reached the install's time, from its events up to then: it must
  have completed its own route (ICT passed), or the server is held
  (`route.assembly_incomplete`). Until then the check waits in
  `route_waits`, re-checked by each later batch of that partition and by the worker's tick;
  for an install that names no event, a sub-assembly whose events up to the install already
  show its route completed is accepted at once (one that names its event waits for it: a
  scrap or a repair's return still to come would undo a completed route).

Every system event is deterministic (id from type, subject and cause; time = its cause's;
content from the cause and the unit's own history), so a redo writes nothing new.

The tick (`RouteStage.tick`, every 2 s in the writer thread) also resolves the waits whose
partition went silent (the line clock advances on wall time times `LINETRACE_LINE_SPEED`, see
`line_clock.advanced`) and records stuck units: a unit whose last event at a step is older
than the step's `max_cycle_s` on its partition's line clock (`stuck_units`; cleared by its
next event).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from linetrace.ledger.db import Ledger
from linetrace.ledger.holds import HoldInfo, HoldsInForce, hold_id_for, load_holds_in_force
from linetrace.ledger.interlock import (
    UnitEvent, UnitRecord, consumed_categories, ended_holds, named_events, progress_of,
    route_of, station_types, unit_events, unit_records, unit_rules,
)
from linetrace.ledger.log import event_seqs
from linetrace.ledger.models import (
    EventRow, HoldUnit, RouteViolation, RouteWait, StuckUnit, Unit,
)
from linetrace.ledger.records import BatchOutcome, Candidate
from linetrace.ledger.sql import in_values
from linetrace.ledger.system_events import SystemContext, system_candidate
from linetrace.ledger.unit_state import aware
from linetrace.ledger.writer import run_stages, store_events
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event, parse_time
from linetrace.schemas.routes import Route, RouteBook, SubAssembly
from linetrace.schemas.routes.progress import (
    ENTRY_TYPES, PROGRESS_TYPES, Ended, Progress, Reason, assembly_reasons,
    describe_step, hold_reason, replay,
)
from linetrace.schemas.topics import EVENTS, INPUT_TOPICS, partition_of

from linetrace.ledger.line_clock import partition_clocks as partition_clocks

from .line_clock import DEFAULT_SPEED, SILENCE_GRACE
from .stages import NO_DECISIONS, Decisions, Pipeline, write_decisions

Partition = tuple[str, int]
Row = tuple[Table, dict[str, Any]]
_EVENTS_PARTITIONS = next(t.partitions for t in INPUT_TOPICS if t.name == EVENTS)
_ALL_SEQS = 2 ** 62  # "every event stored": the clocks count the batch's own events too
_JUDGED = frozenset(PROGRESS_TYPES)
_CHUNK = 400
#: How often the tick looks for stuck units (wall seconds).
STUCK_SCAN_SECONDS = 10.0
#: Most open waits the tick resolves at a time.
WAITS_PER_TICK = 500
#: Line events that show a unit alive at its step (for stuck units).
_ALIVE_TYPES = (*PROGRESS_TYPES, "unit.departed", "firmware.flashed", "unit.packed",
                "unit.shipped")
_OPEN_STATES = ("in_progress", "in_repair")

_VIOLATIONS: Table = RouteViolation.__table__  # type: ignore[assignment]
_WAITS: Table = RouteWait.__table__  # type: ignore[assignment]
_HOLD_UNITS: Table = HoldUnit.__table__  # type: ignore[assignment]
_STUCK: Table = StuckUnit.__table__  # type: ignore[assignment]


def events_partition(serial: str) -> Partition:
    """The line.events partition a unit's events travel on (the murmur2 key partitioner)."""
    return EVENTS, partition_of(serial.encode(), _EVENTS_PARTITIONS)


def _utc(t: datetime) -> datetime:
    return aware(t).astimezone(UTC)


def _judged(c: Candidate) -> bool:
    """A station's unit event of a type the route check reads."""
    return (c.record.topic == EVENTS and c.event.type in _JUDGED
            and c.event.source != SYSTEM_SOURCE)


# --- the line clock of partitions -----------------------------------------------------------


# --- what decide needs --------------------------------------------------------------------


@dataclass(frozen=True)
class OpenWait:
    """A `route_waits` row not yet resolved."""

    id: int
    serial: str
    kind: str
    source: str
    event_id: str
    awaited: str
    partition: Partition
    until: datetime
    created: datetime


def open_waits(session: Session, partitions: Iterable[Partition] | None = None,
               limit: int | None = None) -> list[OpenWait]:
    """Unresolved waits (on `partitions` when given), oldest first."""
    q = select(RouteWait).where(RouteWait.resolved.is_(None))
    if partitions is not None:
        parts = sorted(set(partitions))
        if not parts:
            return []
        q = q.where(RouteWait.topic.in_(sorted({t for t, _ in parts})),
                    RouteWait.partition.in_(sorted({p for _, p in parts})))
    q = q.order_by(RouteWait.id)
    if limit is not None:
        q = q.limit(limit)
    wanted = None if partitions is None else set(partitions)
    out = []
    for w in session.scalars(q):
        tp = (w.topic, w.partition)
        if wanted is None or tp in wanted:
            out.append(OpenWait(w.id, w.serial, w.kind, w.source, w.event_id, w.awaited, tp,
                                _utc(w.until), _utc(w.created)))
    return out


def wait_due(wait: OpenWait, clock: datetime | None) -> bool:
    """Has the awaited partition's line clock reached the wait's time? A partition with no
    event at all has no clock (it may just not have been read yet): the wait goes on."""
    return clock is not None and clock >= wait.until


@dataclass(frozen=True)
class RouteState:
    """What `decide` needs for a batch (module docstring)."""

    seqs: dict[tuple[str, str], int]
    records: dict[str, UnitRecord]
    history: dict[str, list[UnitEvent]]  # each batch unit's events before the batch
    ended: dict[str, list[Ended]]
    holds: HoldsInForce
    station_types: dict[str, str]
    clocks: dict[Partition, datetime | None]  # of the consumed sub-assemblies' partitions
    assemblies: dict[str, list[UnitEvent]]  # the consumed sub-assemblies' events
    due: list[tuple[OpenWait, Event | None]]  # waits to decide now, with their install
    now: datetime
    #: waits not due yet whose sub-assembly may show a completed route already
    early: list[tuple[OpenWait, Event | None]] = field(default_factory=list)
    #: (sub-assembly, event id) -> events.seq of the events installs name that are stored
    named: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class RouteStage:
    """Route enforcement (module docstring). `speed`: LINETRACE_LINE_SPEED."""

    ctx: SystemContext
    speed: float = DEFAULT_SPEED
    grace: timedelta = SILENCE_GRACE
    stuck_every: float = STUCK_SCAN_SECONDS
    name: str = "routes"
    _last_stuck: datetime | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        if self.speed < 0:
            raise ValueError("the line speed must be 0 (never advance on wall time) or more")

    @property
    def routes(self) -> RouteBook:
        return self.ctx.routes

    # --- the stage ---------------------------------------------------------------------

    def load(self, session: Session, batch: Sequence[Candidate]) -> RouteState | None:
        mine = [c for c in batch if _judged(c)]
        parts = {(c.record.topic, c.record.partition) for c in batch
                 if c.record.topic == EVENTS and c.record.partition is not None}
        now = datetime.now(UTC)
        waits = open_waits(session, parts) if parts else []  # (Partition typed: int, not None)
        due, installs, named = self._due(session, waits, now)
        arrived = {c.event.subject for c in batch if c.record.topic == EVENTS}
        early = [w for w in waits if w not in due and w.awaited in arrived]
        if not mine and not due and not early:
            return None
        return self._gather(session, mine, due, now, early, installs, named)

    def decide(self, batch: Sequence[Candidate], state: RouteState | None) -> Decisions:
        if state is None:
            return NO_DECISIONS
        decider = _Decider(self, state)
        for c in batch:
            if _judged(c):
                decider.event(c)
        for wait, install in state.due:
            decider.wait(wait, install, due=True)
        for wait, install in state.early:
            decider.wait(wait, install, due=False)
        return decider.decisions()

    # --- the tick ----------------------------------------------------------------------

    def tick(self, session: Session, now: datetime | None = None) -> Decisions:
        """What the quiet line needs (reads only; the caller writes the decisions): the waits
        due on any partition, and, every `stuck_every` seconds, stuck units found and
        cleared."""
        now = now or datetime.now(UTC)
        decisions = NO_DECISIONS
        waits = open_waits(session, limit=WAITS_PER_TICK)
        if waits:
            due, installs, named = self._due(session, waits, now)
            early = [w for w in waits if w not in due]
            decisions = self.decide([], self._gather(session, [], due, now, early, installs,
                                                     named))
        rows: list[Row] = []
        if self._last_stuck is None or (now - self._last_stuck).total_seconds() >= self.stuck_every:
            self._last_stuck = now
            rows = self.stuck(session, now)
        updates = cleared_stuck(session)  # every tick: a cleared unit is seen at once
        if rows or updates:
            decisions = Decisions(system=decisions.system, messages=decisions.messages,
                                  rows=[*decisions.rows, *rows],
                                  updates=[*decisions.updates, *updates])
        return decisions

    def stuck(self, session: Session, now: datetime) -> list[Row]:
        """New stuck units (`stuck_units` rows)."""
        clocks = partition_clocks(session, [(EVENTS, p) for p in range(_EVENTS_PARTITIONS)],
                                  now, self.speed, self.grace)
        return find_stuck(session, self.routes, clocks, now, self.grace)

    # --- reads -------------------------------------------------------------------------

    def _due(self, session: Session, waits: Sequence[OpenWait], now: datetime
             ) -> tuple[list[OpenWait], dict[tuple[str, str], Event],
                        dict[tuple[str, str], int]]:
        """The waits due now: the sub-assembly's event its install names is stored, or, for
        an install that names none, the partition's line clock reached the install. With the
        installs (by source and id) and the named events stored (by subject and id)."""
        if not waits:
            return [], {}, {}
        installs = _stored_events(session, [(w.source, w.event_id) for w in waits])
        names = {w: _last_event(installs.get((w.source, w.event_id)), w.awaited) for w in waits}
        named = named_events(session, [(w.awaited, n) for w, n in names.items() if n])
        clocks = partition_clocks(session, [w.partition for w in waits if not names[w]], now,
                                  self.speed, self.grace)
        due = [w for w in waits
               if ((w.awaited, n) in named if (n := names[w]) else
                   wait_due(w, clocks.get(w.partition)))]
        return due, installs, named

    def _gather(self, session: Session, mine: Sequence[Candidate], due: Sequence[OpenWait],
                now: datetime, early: Sequence[OpenWait] = (),
                installed_by: dict[tuple[str, str], Event] | None = None,
                named: dict[tuple[str, str], int] | None = None) -> RouteState:
        seqs = event_seqs(session, [(c.event.source, c.event.id) for c in mine])
        serials = {c.event.subject for c in mine}
        first = min((seqs[k] for k in ((c.event.source, c.event.id) for c in mine) if k in seqs),
                    default=None)
        # consumed sub-assemblies the batch installs: decided now where their partition's
        # clock has reached the install (their events are all here) or their events show the
        # route completed already, else they wait
        categories = consumed_categories(self.routes)
        items = [i for c in mine if isinstance(c.event.body, b.MaterialsInstalled)
                 for i in c.event.body.items if i.serial is not None and i.category in categories]
        named = {**(named or {}), **named_events(session, [
            (i.serial, i.last_event) for i in items
            if i.serial is not None and i.last_event is not None])}
        clocks = partition_clocks(session, [events_partition(i.serial) for i in items
                                            if i.serial is not None and i.last_event is None],
                                  now, self.speed, self.grace)
        ready = {i.serial for i in items if i.serial is not None}
        awaited = {w.awaited for w in (*due, *early)}
        installed_by = installed_by if installed_by is not None else _stored_events(
            session, [(w.source, w.event_id) for w in (*due, *early)])
        records = unit_records(session, serials | ready | awaited
                               | {w.serial for w in (*due, *early)})
        history = unit_events(session, serials, before_seq=first) if serials else {}
        assemblies = unit_events(session, ready | awaited) if ready or awaited else {}
        ended = ended_holds(session, serials | ready | awaited)
        holds = load_holds_in_force(session)
        cached: dict[str, str | None] = session.info.get("station_types", {})
        sources = {c.event.source for c in mine if c.event.type in ENTRY_TYPES}
        types = {s: t for s in sources if (t := cached.get(s)) is not None}
        types.update(station_types(session, sources - types.keys()))
        return RouteState(seqs=seqs, records=records, history=history, ended=ended,
                          holds=holds, station_types=types, clocks=clocks,
                          assemblies=assemblies,
                          due=[(w, installed_by.get((w.source, w.event_id))) for w in due],
                          now=now,
                          early=[(w, installed_by.get((w.source, w.event_id))) for w in early],
                          named=named)


def _stored_events(session: Session, keys: Sequence[tuple[str, str]]
                   ) -> dict[tuple[str, str], Event]:
    out: dict[tuple[str, str], Event] = {}
    wanted = sorted(set(keys))
    for i in range(0, len(wanted), _CHUNK):
        part = wanted[i:i + _CHUNK]
        for source, eid, value in session.execute(
                select(EventRow.source, EventRow.event_id, EventRow.value).where(
                    EventRow.source.in_(sorted({k[0] for k in part})),
                    EventRow.event_id.in_(sorted({k[1] for k in part})))):
            if (source, eid) in set(part):
                out[(source, eid)] = decode_stored_event(value)
    return out


# --- the decisions ---------------------------------------------------------------------------


def _merged(reasons: Sequence[Reason]) -> list[Reason]:
    """One reason per code (route_violations keeps one row per event and code)."""
    by_code: dict[str, list[str]] = {}
    for r in reasons:
        by_code.setdefault(r.code, []).append(r.message)
    return [Reason(code, "; ".join(dict.fromkeys(msgs))) for code, msgs in by_code.items()]


def _text(reasons: Sequence[Reason]) -> str:
    return "; ".join(dict.fromkeys(r.message for r in reasons))[:4096]


class _Decider:
    """Folds each unit's progress through the batch, in order, deciding as it goes."""

    def __init__(self, stage: RouteStage, state: RouteState) -> None:
        self.stage, self.state = stage, state
        self.routes = stage.routes
        self.key = stage.ctx.plant_key
        self.progress: dict[str, Progress] = {}
        self.stops: dict[str, list[Ended]] = {}
        self.placed: dict[str, list[HoldInfo]] = {}  # holds this batch placed, by unit
        self.system: list[Candidate] = []
        self.rows: list[Row] = []
        self.updates: list[Any] = []
        self.seen: set[str] = set()  # system event ids decided (never twice)

    def decisions(self) -> Decisions:
        return Decisions(system=self.system, rows=self.rows, updates=self.updates)

    # --- per unit ----------------------------------------------------------------------

    def _unit(self, serial: str, seq: int) -> Progress:
        progress = self.progress.get(serial)
        if progress is None:
            st = self.state
            ended = sorted(st.ended.get(serial, []), key=lambda e: e.seq)
            before = [e for e in ended if e.seq < seq]
            progress = replay(serial, unit_rules(self.routes, st.records.get(serial)),
                              [(s, t, body, source)
                               for s, t, source, _, body in st.history.get(serial, [])],
                              before)
            self.progress[serial] = progress
            self.stops[serial] = [e for e in ended if e.seq >= seq]
        stops = self.stops[serial]
        while stops and stops[0].seq < seq:
            progress.end_hold(stops.pop(0))
        return progress

    def event(self, c: Candidate) -> None:
        ev = c.event
        seq = self.state.seqs.get((ev.source, ev.id))
        if seq is None:
            return
        progress = self._unit(ev.subject, seq)
        body = ev.body
        if ev.type in ENTRY_TYPES:
            self._entry(ev, body, progress, seq)
        elif isinstance(body, b.WorkCompleted):
            self._completed(ev, body, progress)
        elif isinstance(body, b.UnitRepaired):
            outcome = progress.repair_outcome(body)
            if outcome is not None and outcome.hold is not None:
                self._place(ev, ev.subject, [outcome.hold], outcome.step, ev.source)
        elif isinstance(body, b.MaterialsInstalled):
            self._installed(ev, body, progress, seq)
        progress.apply(ev.type, body, ev.source)

    # --- entries: arrival, start ---------------------------------------------------------

    def _entry(self, ev: Event, body: b.Body, progress: Progress, seq: int) -> None:
        assert isinstance(body, (b.UnitArrived, b.WorkStarted))
        serial, station, step = ev.subject, ev.source, body.step
        if isinstance(body, b.WorkStarted):
            progress.learn(body)
        route_reasons = progress.entry_reasons(step, self.state.station_types.get(station))
        holds = [*self.state.holds.for_unit(
            serial, work_order=progress.work_order, lots=progress.held_lots,
            mpns=progress.held_mpns, station=station, before_seq=seq),
            *self.placed.get(serial, [])]
        unit_holds = [h for h in holds if h.scope != "station"]
        held = [(h.hold_id, hold_reason(serial, h.hold_id, h.scope, h.target, h.reason))
                for h in holds]
        if route_reasons and not unit_holds:
            hold_id = self._place(ev, serial, route_reasons, step, station)
            self._violations(ev, step, [(hold_id, r) for r in route_reasons] + held)
        elif unit_holds:
            first = unit_holds[0]
            reasons = [r for _, r in held] + route_reasons
            if station != progress.station:  # a station already told needs no second command
                self._command_hold(ev, station, serial, first.hold_id, _text(reasons))
            self._violations(ev, step, held + [(first.hold_id, r) for r in route_reasons])
        elif held:
            self._violations(ev, step, held)  # a locked station: command.lock told it already

    # --- results -------------------------------------------------------------------------

    def _completed(self, ev: Event, body: b.WorkCompleted, progress: Progress) -> None:
        reasons = progress.completion_reasons(body)
        if reasons:
            hold_id = self._place(ev, ev.subject, reasons, body.step, ev.source)
            self._violations(ev, body.step, [(hold_id, r) for r in reasons])
            return
        if body.result != "Failed":
            return
        outcome = progress.failure_outcome(body.step)
        if outcome is None:
            return
        if outcome.hold is not None:
            self._place(ev, ev.subject, [outcome.hold], body.step, ev.source)
            return
        repair = outcome.repair
        assert repair is not None
        why = (f"{describe_step(progress.route, body.step)} failed: repair at "
               f"{describe_step(progress.route, repair.step)}, then back to step "
               f"{outcome.return_to} (rework loop {outcome.loop} of {outcome.max_loops})")
        self._system(system_candidate("command.route", ev.source, b.CommandRoute(
            unit=ev.subject, step=repair.step, station_type=repair.station_type,
            decision="rework", reason=why), ev, self.key))

    # --- installs --------------------------------------------------------------------------

    def _installed(self, ev: Event, body: b.MaterialsInstalled, progress: Progress,
                   seq: int) -> None:
        serial, holds = ev.subject, self.state.holds
        have = {h.hold_id for h in holds.for_unit(
            serial, work_order=None, lots=progress.held_lots, mpns=progress.held_mpns,
            station=None, before_seq=seq)}
        have |= {h.hold_id for h in self.placed.get(serial, [])}
        joins: list[tuple[HoldInfo, b.InstalledItem]] = []
        for item in body.items:
            for h in holds.for_unit(item.serial or "", work_order=None, lots=[item.lot],
                                    mpns=[item.mpn], station=None, before_seq=seq):
                if h.scope in ("lot", "mpn") and h.hold_id not in have:
                    have.add(h.hold_id)
                    joins.append((h, item))
        if joins:
            t = parse_time(ev.envelope.time)
            found: list[tuple[str, Reason]] = []
            for h, item in joins:
                self.rows.append((_HOLD_UNITS, {"hold_id": h.hold_id, "serial": serial,
                                                "added": t, "event_id": ev.id}))
                part = f" serial {item.serial}" if item.serial else ""
                found.append((h.hold_id, hold_reason(
                    serial, h.hold_id, h.scope, h.target,
                    f"{item.mpn} lot {item.lot}{part} installed in {serial}: {h.reason}")))
            self._command_hold(ev, ev.source, serial, joins[0][0].hold_id,
                               _text([r for _, r in found]))
            self._violations(ev, progress.current_step, found)
        for item, sub in progress.consumed(body):
            self._assembly(ev, serial, item, sub, progress.current_step)

    def _assembly(self, ev: Event, serial: str, item: b.InstalledItem, sub: SubAssembly,
                  step: int | None) -> None:
        """Judge the consumed sub-assembly now if the event its install names is stored (its
        events up to that one), or, where the install names none, if its partition's clock
        has reached the install (its events up to the install's time); or if its events show
        its route completed already and the install names no event. Else wait."""
        part, last = item.serial, item.last_event
        if part is None:
            return
        where = events_partition(part)
        t = parse_time(ev.envelope.time)
        if last is not None:
            seq = self.state.named.get((part, last))
            ready = seq is not None
        else:
            seq = None
            clock = self.state.clocks.get(where)
            ready = clock is not None and clock >= t
        if ready:
            self._judge_assembly(ev, serial, part, sub, step, t, until_seq=seq)
            return
        # An install that names the board's event waits for exactly it: the board's events
        # read so far may show its route completed, yet the named one (a scrap, a repair's
        # return) may undo that. Only one that names none is accepted early.
        if last is not None or self._judge_assembly(ev, serial, part, sub, step, t,
                                                    hold=False):
            self.rows.append((_WAITS, {
                "serial": serial, "kind": "assembly", "source": ev.source, "event_id": ev.id,
                "awaited": part, "topic": where[0], "partition": where[1], "until": t,
                "created": self.state.now, "resolved": None}))

    def _judge_assembly(self, ev: Event, serial: str, part: str, sub: SubAssembly,
                        step: int | None, until: datetime, *, until_seq: int | None = None,
                        hold: bool = True) -> bool:
        """Is the sub-assembly short of its route, by its events up to the one stored at
        `until_seq` (the event its install names), else up to time `until`? If so and `hold`,
        hold the unit it went into."""
        st = self.state
        assembly = progress_of(part, self.routes, st.records.get(part), st.assemblies.get(part, []),
                               st.ended.get(part, []), until=until if until_seq is None else None,
                               until_seq=until_seq)
        at = step if step is not None else 0
        reasons = assembly_reasons(assembly, sub, serial, at)
        if reasons and hold:
            hold_id = self._place(ev, serial, reasons, step, ev.source,
                                  cause_key=f"{ev.id}/{part}")
            self._violations(ev, step, [(hold_id, r) for r in reasons])
        return bool(reasons)

    def wait(self, wait: OpenWait, install: Event | None, *, due: bool) -> None:
        """A wait whose partition's clock has reached it (`due`): decide, and mark it
        resolved. One not due yet is resolved only if the sub-assembly's events show its
        route completed already."""
        incomplete = False
        if install is not None and isinstance(install.body, b.MaterialsInstalled):
            route = route_of(self.routes, self.state.records.get(wait.serial))
            sub, step = _consumed_by(route, install.body, wait.awaited)
            last = _last_event(install, wait.awaited)
            if last is not None and not due:
                return  # waits for exactly the event its install names (see `_assembly`)
            seq = self.state.named.get((wait.awaited, last)) if last and due else None
            if sub is not None:
                incomplete = self._judge_assembly(install, wait.serial, wait.awaited, sub, step,
                                                  wait.until, until_seq=seq, hold=due)
        if due or not incomplete:
            self.updates.append((_WAITS, {"id": wait.id}, {"resolved": self.state.now}))

    # --- what to write -----------------------------------------------------------------------

    def _system(self, c: Candidate) -> None:
        if c.event.id not in self.seen:
            self.seen.add(c.event.id)
            self.system.append(c)

    def _place(self, ev: Event, serial: str, reasons: Sequence[Reason], step: int | None,
               station: str, cause_key: str | None = None) -> str:
        """A hold of the unit for `reasons`, caused by `ev`, and the command telling the
        station; returns the hold id."""
        code = reasons[0].code
        hold_id = hold_id_for(cause_key or ev.id, code)
        text = _text(reasons)
        placed = system_candidate("hold.placed", hold_id, b.HoldPlaced(
            hold_id=hold_id, scope="unit", target=serial, reason=text, category="quality",
            code=code, placed_by=SYSTEM_SOURCE, units=[serial], step=step, station=station,
            cause=ev.id), ev, self.key)
        self._system(placed)
        self._system(system_candidate("command.hold", station, b.CommandHold(
            unit=serial, reason=text, hold_id=hold_id), placed.event, self.key))
        self.placed.setdefault(serial, []).append(
            HoldInfo(hold_id=hold_id, scope="unit", target=serial, reason=text,
                     category="quality", code=code))
        return hold_id

    def _command_hold(self, ev: Event, station: str, serial: str, hold_id: str,
                      reason: str) -> None:
        self._system(system_candidate("command.hold", station, b.CommandHold(
            unit=serial, reason=reason or "on hold", hold_id=hold_id), ev, self.key))

    def _violations(self, ev: Event, step: int | None,
                    found: Sequence[tuple[str, Reason]]) -> None:
        t = parse_time(ev.envelope.time)
        by_hold: dict[str, str] = {}
        for hold_id, r in found:
            by_hold.setdefault(r.code, hold_id)
        for r in _merged([r for _, r in found]):
            self.rows.append((_VIOLATIONS, {
                "serial": ev.subject, "step": step, "station": ev.source, "code": r.code,
                "message": r.message[:4096], "source": ev.source, "event_id": ev.id, "time": t,
                "hold_id": by_hold.get(r.code)}))


def _last_event(install: Event | None, part: str) -> str | None:
    """The event of `part` its install names (`InstalledItem.last_event`), if any."""
    if install is None or not isinstance(install.body, b.MaterialsInstalled):
        return None
    return next((i.last_event for i in install.body.items if i.serial == part), None)


def _consumed_by(route: Route | None, body: b.MaterialsInstalled, part: str
                 ) -> tuple[SubAssembly | None, int | None]:
    """The consumed sub-assembly (and its step) an install's item `part` is, on `route`."""
    if route is None:
        return None, None
    for item in body.items:
        if item.serial == part:
            for s in route.steps:
                sub = next((a for a in s.consumes if a.category == item.category), None)
                if sub is not None:
                    return sub, s.step
    return None, None


# --- stuck units ----------------------------------------------------------------------------


def find_stuck(session: Session, routes: RouteBook, clocks: dict[Partition, datetime | None],
               now: datetime, grace: timedelta = SILENCE_GRACE) -> list[Row]:
    """Units at a step (their last line event is not a departure) for longer than the step's
    `max_cycle_s` on their partition's line clock, not stopped by a hold: new `stuck_units`
    rows (one per stay: serial, step, since). The last event must also have been stored
    `grace` ago (wall time): a unit whose events merely arrive after its partition's others
    (a station that sends late, a simulator waiting on the interlock) is not stuck."""
    known = [c for c in clocks.values() if c is not None]
    cycles = [s.max_cycle_s for r in routes.routes.values() for s in (*r.steps, *r.repair_steps)]
    if not known or not cycles:
        return []
    cutoff = max(known) - timedelta(seconds=min(cycles))
    candidates = session.execute(select(
        Unit.serial, Unit.route_product, Unit.route_sha256, Unit.step, Unit.work_order).where(
        Unit.state.in_(_OPEN_STATES), Unit.route_sha256.is_not(None),
        Unit.updated < cutoff)).all()
    if not candidates:
        return []
    last = _last_events(session, [r[0] for r in candidates])
    holds: HoldsInForce | None = None
    out: list[Row] = []
    for serial, product, sha, unit_step, work_order in candidates:
        route = route_of(routes, UnitRecord(serial, product or "", "", work_order, product, sha))
        found = last.get(serial)
        if route is None or found is None or found[0] == "unit.departed":
            continue
        etype, source, since, recorded, body = found
        if now - recorded < grace:
            continue
        step = getattr(body, "step", None)
        step = step if isinstance(step, int) else unit_step
        clock = clocks.get(events_partition(serial))
        if step is None or clock is None or not route.has_step(step):
            continue
        limit = route.step(step).max_cycle_s
        if (clock - since).total_seconds() <= limit:
            continue
        holds = holds if holds is not None else load_holds_in_force(session)
        if holds.for_unit(serial, work_order=work_order, lots=(), mpns=(), station=None):
            continue  # stopped by a hold: not stuck, held
        out.append((_STUCK, {"serial": serial, "step": step, "since": since, "station": source,
                             "max_cycle_s": limit, "detected": clock, "cleared": None}))
    return out


def _last_events(session: Session, serials: Sequence[str]
                 ) -> dict[str, tuple[str, str, datetime, datetime, b.Body]]:
    """Each unit's last station event on line.events: (type, station, time, when stored,
    body)."""
    out: dict[str, tuple[str, str, datetime, datetime, b.Body]] = {}
    for i in range(0, len(serials), _CHUNK):
        part = serials[i:i + _CHUNK]
        tops = select(func.max(EventRow.seq)).where(
            in_values(session, EventRow.subject, part), EventRow.type.in_(_ALIVE_TYPES),
            EventRow.source != SYSTEM_SOURCE).group_by(EventRow.subject).scalar_subquery()
        for subject, etype, source, t, recorded, value in session.execute(select(
                EventRow.subject, EventRow.type, EventRow.source, EventRow.time,
                EventRow.recorded, EventRow.value).where(EventRow.seq.in_(tops))):
            out[subject] = (etype, source, _utc(t), _utc(recorded),
                            decode_stored_event(value).body)
    return out


def cleared_stuck(session: Session) -> list[Any]:
    """Updates clearing the open stuck rows whose unit has had an event since (`cleared` =
    the time of that next event), or has left the line's open states (installed in another
    unit, packed, shipped, scrapped: `cleared` = its latest change)."""
    rows = session.execute(select(StuckUnit.serial, StuckUnit.step, StuckUnit.since)
                           .where(StuckUnit.cleared.is_(None))).all()
    if not rows:
        return []
    serials = sorted({r[0] for r in rows})
    gone: dict[str, datetime] = {}
    for i in range(0, len(serials), _CHUNK):
        for serial, state, updated in session.execute(select(
                Unit.serial, Unit.state, Unit.updated).where(
                in_values(session, Unit.serial, serials[i:i + _CHUNK]))):
            if state not in _OPEN_STATES:
                gone[serial] = _utc(updated)
    earliest = min(r[2] for r in rows)
    later: dict[str, list[datetime]] = {}
    for i in range(0, len(serials), _CHUNK):
        for subject, t in session.execute(select(EventRow.subject, EventRow.time).where(
                in_values(session, EventRow.subject, serials[i:i + _CHUNK]),
                EventRow.type.in_(_ALIVE_TYPES), EventRow.source != SYSTEM_SOURCE,
                EventRow.time > earliest)):
            later.setdefault(subject, []).append(_utc(t))
    out: list[Any] = []
    for serial, step, since in rows:
        after = [t for t in later.get(serial, []) if t > _utc(since)]
        if serial in gone:
            after.append(max(gone[serial], _utc(since)))
        if after:
            out.append((_STUCK, {"serial": serial, "step": step, "since": since},
                        {"cleared": min(after)}))
    return out



def tick_routes(ledger: Ledger, pipeline: Pipeline, ctx: SystemContext | None,
                now: datetime | None = None) -> BatchOutcome:
    """Every stage's tick in the writer thread (the route stage's waits and stuck units, the
    detectors' time-based findings: a telemetry gap, a lot never received): each decides in a
    read, then, only if there is something to write, writes it in one transaction with the
    system events it decided recorded and run through the stages (as a batch's are)."""
    out = BatchOutcome()
    for stage in pipeline.stages:
        tick = getattr(stage, "tick", None)
        if tick is None:
            continue
        with ledger.reader() as session:
            decisions: Decisions = tick(session, now)
        if decisions.empty:
            continue
        with ledger.transaction() as session:
            pipeline.enqueued += write_decisions(session, decisions)
            if decisions.system:
                nested = store_events(session, decisions.system, ctx)
                out.system.extend(nested.stored)
                run_stages(session, nested, pipeline, ctx)
                out.system.extend(nested.system)
    return out
