"""The flow stage: `flow.*` conditions from the ledger (the logic is `flow.py`).

A stage of the pipeline, after route enforcement:

- `load` reads, only for what the batch holds: the `route_violations` rows of the holds the
  route stage placed in the batch for a route violation (`hold.placed` with an alerted code,
  `ALERTED_CODES`; a unit already held gets no new activation), and the `fault.occurred` times
  of the stations that report in the batch, back to `STORM_WINDOW` before their first report;
- `load` also reads, for the batch's unit events, each unit's previous line event and its
  route's max cycle times (`flow.stalls`: a unit whose next event comes more than its step's
  `max_cycle_s` after the previous one was stuck meanwhile; found from event time alone, so a
  replay or a line read faster than the tick shows it too), and, only when it finds one, the
  holds that stopped those units meanwhile and the stations down;
- `decide` raises `flow.route_violation` per held unit, `flow.stuck_unit` for each stall the
  batch ended (raised and returned to normal), `flow.station_down` from each
  `station.state`, and `flow.fault_storm` from the faults.

The tick (every `scan_every` wall seconds) reads the state the batch path cannot see: the
`stuck_units` rows (written by the route stage's own tick), with the holds in force (a held
unit is not stuck) and each station's latest E10 state (a unit stuck at a station that is down
is suppressed under the station's alert), and the route-violation holds that ended (released
or disposed by a person's CLI command, recorded outside the worker's stages). It hands the
engine only what changed since it last handed it (`_sent`, a cache: after a restart every
finding is handed once more, and the engine raises nothing new for an alert already in that
state).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.holds import load_holds_in_force
from linetrace.ledger.interlock import route_of, unit_records
from linetrace.ledger.log import event_seqs
from linetrace.ledger.models import EventRow, Hold, HoldUnit, RouteViolation, StuckUnit
from linetrace.ledger.records import Candidate
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_stored_event, parse_time
from linetrace.ledger.sql import in_values
from linetrace.schemas.routes import RouteBook
from linetrace.schemas.routes import progress as codes
from linetrace.schemas.topics import EVENTS, STATIONS

from ..stages import NO_DECISIONS, Decisions
from . import flow

#: Route-check codes that raise `flow.route_violation`. Not: a unit stopped by a hold already
#: in force (`route.held`, `route.material_held`, `route.station_locked`: the hold's own
#: consequence), a part installed elsewhere or a lot never received (the supply-chain
#: detectors' `supply.cloned_serial` / `supply.unknown_lot` own those), and the natural
#: failures held for a disposition (`route.max_loops`, ...: routing, not alarms).
ALERTED_CODES = frozenset({codes.SKIPPED_STEP, codes.GATE_FAILED, codes.RESULT_NOT_ALLOWED,
                           codes.UNKNOWN_UNIT, codes.UNKNOWN_STEP, codes.WRONG_STATION,
                           codes.ASSEMBLY_INCOMPLETE})
#: How often the tick reads stuck units and ended holds (wall seconds).
FLOW_SCAN_SECONDS = 5.0
_STATION_TYPES = ("station.state", "fault.occurred", "fault.cleared")
#: Line events that show a unit alive at its step (as the route stage's stuck units read).
ALIVE_TYPES = (*codes.PROGRESS_TYPES, "unit.departed", "firmware.flashed", "unit.packed",
               "unit.shipped")
_CHUNK = 400


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def _station_report(c: Candidate) -> bool:
    return (c.record.topic == STATIONS and c.event.type in _STATION_TYPES
            and c.event.source != SYSTEM_SOURCE)


def _violation_hold(c: Candidate) -> str | None:
    """The hold id of a `hold.placed` linetrace placed for an alerted route violation."""
    body = c.event.body
    if (c.event.source == SYSTEM_SOURCE and isinstance(body, b.HoldPlaced)
            and body.placed_by == SYSTEM_SOURCE and body.code in ALERTED_CODES):
        return body.hold_id
    return None


@dataclass(frozen=True)
class FlowState:
    violations: list[flow.Violation]
    faults: dict[str, list[datetime]]  # station -> fault.occurred times (the batch's included)
    stalls: list[flow.Stall] = field(default_factory=list)
    held: set[str] = field(default_factory=set)  # units of `stalls` held meanwhile
    down: dict[str, datetime] = field(default_factory=dict)  # stations down (if stalls)


@dataclass
class FlowStage:
    """Flow detectors (module docstring)."""

    routes: RouteBook | None = None  # the max cycle times (None: no stalls judged)
    name: str = "flow"
    scan_every: float = FLOW_SCAN_SECONDS
    storm_faults: int = flow.STORM_FAULTS
    storm_window: timedelta = flow.STORM_WINDOW
    _last_scan: datetime | None = field(default=None, repr=False)
    _sent: dict[str, tuple[bool, str | None]] = field(default_factory=dict, repr=False)

    def load(self, session: Session, batch: Sequence[Candidate]) -> FlowState | None:
        holds = sorted({h for c in batch if (h := _violation_hold(c)) is not None})
        reports = [c for c in batch if _station_report(c)]
        found = self._stalls(session, batch)
        if not holds and not reports and not found:
            return None
        violations = []
        if holds:
            for r in session.scalars(select(RouteViolation).where(
                    RouteViolation.hold_id.in_(holds), RouteViolation.code.in_(
                        sorted(ALERTED_CODES))).order_by(RouteViolation.id)):
                violations.append(flow.Violation(
                    serial=r.serial, step=r.step, station=r.station, code=r.code,
                    message=r.message, event_id=r.event_id, time=_utc(r.time),
                    hold_id=r.hold_id))
        faults: dict[str, list[datetime]] = {}
        if reports:
            stations = sorted({c.event.source for c in reports})
            since = min(parse_time(c.event.envelope.time) for c in reports) - self.storm_window
            for source, t in session.execute(select(EventRow.source, EventRow.time).where(
                    EventRow.source.in_(stations), EventRow.type == "fault.occurred",
                    EventRow.time > since)):
                faults.setdefault(source, []).append(_utc(t))
        if not found:
            return FlowState(violations, faults)
        return FlowState(violations, faults, found, _held_during(session, found),
                         stations_down(session))

    def _stalls(self, session: Session, batch: Sequence[Candidate]) -> list[flow.Stall]:
        """The stalls the batch's unit events end (`flow.stalls`): one query for the units'
        previous events, one for their routes."""
        mine = [c for c in batch if c.record.topic == EVENTS and c.event.type in ALIVE_TYPES
                and c.event.source != SYSTEM_SOURCE]
        if self.routes is None or not mine:
            return []
        seqs = event_seqs(session, [(c.event.source, c.event.id) for c in mine])
        if not seqs:
            return []
        serials = sorted({c.event.subject for c in mine})
        previous = _previous(session, serials, min(seqs.values()))
        records = unit_records(session, serials)
        limits: dict[str, dict[int, int]] = {}
        for serial in serials:
            route = route_of(self.routes, records.get(serial))
            if route is not None:
                limits[serial] = {st.step: st.max_cycle_s
                                  for st in (*route.steps, *route.repair_steps)}
        ordered = sorted(mine, key=lambda c: seqs.get((c.event.source, c.event.id), 0))
        return flow.stalls(previous, [_line_event(c.event.subject, c.event.type, c.event.source,
                                                  parse_time(c.event.envelope.time), c.event.id,
                                                  c.event.body) for c in ordered], limits)

    def decide(self, batch: Sequence[Candidate], state: FlowState | None) -> Decisions:
        if state is None:
            return NO_DECISIONS
        out = flow.route_violations(state.violations)
        out += flow.stall_conditions(state.stalls, state.held, state.down)
        stormed: set[str] = set()
        for c in batch:
            if not _station_report(c):
                continue
            ev, body = c.event, c.event.body
            t = parse_time(ev.envelope.time)
            if isinstance(body, b.StationState):
                found = flow.station_state(ev.source, body.state, body.reason, t, ev.id)
                if found is not None:
                    out.append(found)
            occurred = isinstance(body, b.FaultOccurred)
            if occurred and ev.source in stormed:
                continue  # one storm condition per station and batch
            storm = flow.fault_storm(ev.source, state.faults.get(ev.source, []), t, ev.id,
                                     occurred=occurred, n=self.storm_faults,
                                     window=self.storm_window)
            if storm is not None:
                out.append(storm)
                if storm.active:
                    stormed.add(ev.source)
        return Decisions(conditions=out) if out else NO_DECISIONS

    # --- the tick ----------------------------------------------------------------------------

    def tick(self, session: Session, now: datetime | None = None) -> Decisions:
        """Stuck units and ended violation holds, handed to the engine when they change."""
        now = now or datetime.now(UTC)
        if self._last_scan is not None and (now - self._last_scan).total_seconds() < self.scan_every:
            return NO_DECISIONS
        self._last_scan = now
        found = [*self.stuck(session), *self.ended_violations(session)]
        changed = []
        for c in found:
            key = alert_id(c.condition, c.subject)
            seen = (c.active, c.parent)
            if self._sent.get(key) != seen:
                self._sent[key] = seen
                changed.append(c)
        return Decisions(conditions=changed) if changed else NO_DECISIONS

    def stuck(self, session: Session) -> list[Condition]:
        rows = [flow.Stuck(serial=r.serial, step=r.step, since=_utc(r.since), station=r.station,
                           max_cycle_s=r.max_cycle_s, detected=_utc(r.detected),
                           cleared=None if r.cleared is None else _utc(r.cleared))
                for r in session.scalars(select(StuckUnit))]
        if not rows:
            return []
        open_rows = [r for r in rows if r.cleared is None]
        held: set[str] = set()
        down: dict[str, datetime] = {}
        if open_rows:
            holds = load_holds_in_force(session)
            held = {r.serial for r in open_rows if holds.for_unit(
                r.serial, work_order=None, lots=(), mpns=(), station=None)}
            down = stations_down(session)
        return flow.stuck_units(rows, held, down)

    def ended_violations(self, session: Session) -> list[Condition]:
        """Return-to-normal for units whose route-violation holds have all ended."""
        rows = session.execute(select(
            RouteViolation.serial, Hold.state, Hold.released, Hold.released_event).join(
            Hold, Hold.hold_id == RouteViolation.hold_id).where(
            RouteViolation.code.in_(sorted(ALERTED_CODES)))).all()
        ended: dict[str, tuple[datetime, str]] = {}
        held: set[str] = set()
        for serial, state, released, event in rows:
            if state == "active":
                held.add(serial)
            elif released is not None:
                t = _utc(released)
                if serial not in ended or ended[serial][0] < t:
                    ended[serial] = (t, event or "")
        return flow.violations_ended(ended, held)


def _line_event(serial: str, etype: str, station: str, t: datetime, event_id: str,
                body: Any) -> flow.LineEvent:
    step = getattr(body, "step", None)
    return flow.LineEvent(serial, etype, station, step if isinstance(step, int) else None,
                          _utc(t), event_id)


def _previous(session: Session, serials: Sequence[str], before_seq: int
              ) -> dict[str, flow.LineEvent]:
    """Each unit's last line event stored before `before_seq`."""
    out: dict[str, flow.LineEvent] = {}
    for i in range(0, len(serials), _CHUNK):
        tops = select(func.max(EventRow.seq)).where(
            in_values(session, EventRow.subject, serials[i:i + _CHUNK]),
            EventRow.type.in_(ALIVE_TYPES), EventRow.source != SYSTEM_SOURCE,
            EventRow.seq < before_seq).group_by(EventRow.subject).scalar_subquery()
        for subject, etype, source, t, eid, value in session.execute(select(
                EventRow.subject, EventRow.type, EventRow.source, EventRow.time,
                EventRow.event_id, EventRow.value).where(EventRow.seq.in_(tops))):
            out[subject] = _line_event(subject, etype, source, t, eid,
                                       decode_stored_event(value).body)
    return out


def _held_during(session: Session, found: Sequence[flow.Stall]) -> set[str]:
    """Units of `found` that a hold stopped at some time during their stall."""
    serials = sorted({s.after.serial for s in found})
    spans: dict[str, list[tuple[datetime, datetime | None]]] = {}
    named = select(HoldUnit.serial, Hold.placed, Hold.released).join(
        Hold, Hold.hold_id == HoldUnit.hold_id).where(HoldUnit.serial.in_(serials))
    targeted = select(Hold.target, Hold.placed, Hold.released).where(
        Hold.scope == "unit", Hold.target.in_(serials))
    for q in (named, targeted):
        for serial, placed, released in session.execute(q):
            spans.setdefault(serial, []).append(
                (_utc(placed), None if released is None else _utc(released)))
    out = set()
    for s in found:
        for placed, released in spans.get(s.after.serial, []):
            if placed <= s.after.time and (released is None or released >= s.before.time):
                out.add(s.after.serial)
    return out


def stations_down(session: Session) -> dict[str, datetime]:
    """Stations whose latest `station.state` is a down state (-> that report's time)."""
    last = (select(func.max(EventRow.seq)).where(EventRow.type == "station.state",
                                                  EventRow.source != SYSTEM_SOURCE)
            .group_by(EventRow.source).scalar_subquery())
    out: dict[str, datetime] = {}
    for source, t, value in session.execute(select(EventRow.source, EventRow.time,
                                                   EventRow.value).where(EventRow.seq.in_(last))):
        body: Any = decode_stored_event(value).body
        if isinstance(body, b.StationState) and body.state in flow.DOWN_STATES:
            out[source] = _utc(t)
    return out
