"""Flow detectors (issue 12): route violations, stuck WIP, stations down, fault storms (pure).

Plain data in, `Condition`s out; `flow_stage.py` reads the data from the ledger. Every time is
event time (the line clock), so a replay finds the same conditions.

- `flow.route_violation` (subject: the unit serial): the route stage found the unit breaking
  its route and held it (`route_violations` rows). Active while a hold placed for a violation
  of the unit is in force; returns to normal once they have all ended (released or disposed).
  One alert per unit: a second violation while held is the same activation.
- `flow.stuck_unit` (subject: the serial): an open `stuck_units` row (the route stage's tick:
  no event for longer than the step's `max_cycle_s`). Returns to normal when the row is
  cleared. A unit stopped by a hold in force is held, not stuck: never active. A unit stuck at
  a station that is down is a consequence of that station's alarm: its condition names the
  station-down alert as `parent`, and the engine suppresses it while the parent is active.
- `flow.station_down` (subject: the station id): the station reported SEMI E10 `SDT` (4000,
  scheduled down) or `USD` (5000, unscheduled down); returns to normal when it reports `PRD`
  (1000) or `SBY` (2000). `ENG` and `NST` change nothing (neither down nor producing).
- `flow.fault_storm` (subject: the station id): `STORM_FAULTS` `fault.occurred` from one
  station within `STORM_WINDOW` of event time (a station faulting once an hour is
  maintenance's daily work; five in ten minutes is a station that should be stopped). Returns
  to normal at the station's next `fault.cleared` or `station.state` whose window holds fewer.
"""

from __future__ import annotations

import hashlib

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.schemas.bodies import E10_STATES

ROUTE_VIOLATION = "flow.route_violation"
STUCK_UNIT = "flow.stuck_unit"
STATION_DOWN = "flow.station_down"
FAULT_STORM = "flow.fault_storm"

#: E10 states in which a station is down (SDT scheduled, USD unscheduled downtime).
DOWN_STATES = frozenset({4000, 5000})
#: E10 states that end a station-down alert (PRD productive, SBY standby).
UP_STATES = frozenset({1000, 2000})
#: A fault storm: this many `fault.occurred` from one station ...
STORM_FAULTS = 5
#: ... within this much event time.
STORM_WINDOW = timedelta(minutes=10)


def station_down_id(station: str) -> str:
    """The id of a station's station-down alert (the parent of units stuck there)."""
    return alert_id(STATION_DOWN, station)


# --- route violations -------------------------------------------------------------------------


@dataclass(frozen=True)
class Violation:
    """A `route_violations` row written for the batch's events."""

    serial: str
    step: int | None
    station: str | None
    code: str
    message: str
    event_id: str
    time: datetime
    hold_id: str | None


def route_violations(rows: Sequence[Violation]) -> list[Condition]:
    """One active condition per unit among `rows` (its first violation in the batch carries
    the message; every code is listed in the details)."""
    by_serial: dict[str, list[Violation]] = {}
    for r in rows:
        by_serial.setdefault(r.serial, []).append(r)
    out = []
    for serial, found in by_serial.items():
        first = min(found, key=lambda v: (v.time, v.event_id))
        codes = sorted({v.code for v in found})
        where = f" at step {first.step}" if first.step is not None else ""
        at = f" ({first.station})" if first.station else ""
        out.append(Condition(
            condition=ROUTE_VIOLATION, subject=serial, active=True, time=first.time,
            cause=first.event_id,
            message=f"{serial} broke its route{where}{at} and is held: {first.message}"[:1024],
            action=f"see `linetrace trace {serial}`; release or disposition the hold "
                   f"{first.hold_id or ''}".rstrip(),
            details={"codes": codes, "holds": sorted({v.hold_id for v in found if v.hold_id}),
                     "step": first.step, "station": first.station},
            unit=serial, station=first.station))
    return out


def violations_ended(serials_time: Mapping[str, tuple[datetime, str]],
                     still_held: Iterable[str]) -> list[Condition]:
    """Return-to-normal for the units whose violation holds all ended (`serials_time`: serial
    -> (time the last of them ended, the event that ended it)); units in `still_held` keep
    theirs."""
    held = set(still_held)
    return [Condition(condition=ROUTE_VIOLATION, subject=serial, active=False, time=t,
                      cause=cause, message=f"{serial}: the holds for its route violation ended",
                      unit=serial)
            for serial, (t, cause) in sorted(serials_time.items()) if serial not in held]


# --- stuck units ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Stuck:
    """A `stuck_units` row: `cleared` None while the unit has not moved."""

    serial: str
    step: int
    since: datetime
    station: str | None
    max_cycle_s: int
    detected: datetime
    cleared: datetime | None


def stuck_units(rows: Sequence[Stuck], held: Iterable[str],
                down: Mapping[str, datetime]) -> list[Condition]:
    """One condition per unit: active for an open row (its latest stay) unless the unit is
    held, else returned to normal at its latest clearing. `down`: the stations down now (->
    since when); a unit stuck at one names its station-down alert as `parent`."""
    on_hold = set(held)
    latest: dict[str, Stuck] = {}
    for r in rows:
        have = latest.get(r.serial)
        if have is None or _later(r, have):
            latest[r.serial] = r
    out = []
    for serial, r in sorted(latest.items()):
        cause = stuck_cause(r)
        if r.cleared is not None or serial in on_hold:
            why = "is held" if r.cleared is None else "moved again"
            out.append(Condition(condition=STUCK_UNIT, subject=serial, active=False,
                                 time=r.cleared or r.detected, cause=cause,
                                 message=f"{serial} {why}", unit=serial, station=r.station))
            continue
        parent = station_down_id(r.station) if r.station is not None and r.station in down \
            else None
        waited = int((r.detected - r.since).total_seconds())
        at = f" at {r.station}" if r.station else ""
        because = f"; {r.station} is down" if parent else ""
        out.append(Condition(
            condition=STUCK_UNIT, subject=serial, active=True, time=r.detected, cause=cause,
            message=(f"{serial} has not moved at step {r.step}{at} for {waited} s (its max "
                     f"cycle is {r.max_cycle_s} s){because}"),
            details={"step": r.step, "since": r.since.isoformat(),
                     "max_cycle_s": r.max_cycle_s, "waited_s": waited},
            unit=serial, station=r.station, parent=parent))
    return out


def stuck_cause(r: Stuck) -> str:
    """A deterministic cause for one stay (the unit, its step and since when): the same stay
    found again is the same finding."""
    key = f"{r.serial}\x00{r.step}\x00{r.since.isoformat()}".encode()
    return "stuck-" + hashlib.sha256(key).hexdigest()[:24]


def _later(a: Stuck, b: Stuck) -> bool:
    """Is stay `a` the unit's latest (open rows before cleared ones, then by time)?"""
    return (a.cleared is None, a.since) > (b.cleared is None, b.since)


# --- stalls found from event history (replays and fast reads) --------------------------------


@dataclass(frozen=True)
class LineEvent:
    """A unit's line event (`step`: the step it is at, carried over events without one)."""

    serial: str
    type: str
    station: str
    step: int | None
    time: datetime
    event_id: str


@dataclass(frozen=True)
class Stall:
    """A unit silent at `step` from `before` to `after` for longer than `limit` seconds."""

    before: LineEvent
    after: LineEvent
    step: int
    limit: int


def stalls(previous: Mapping[str, LineEvent], batch: Sequence[LineEvent],
           limits: Mapping[str, Mapping[int, int]]) -> list[Stall]:
    """The stalls the batch's events end: a unit's next event more than its step's
    `max_cycle_s` (`limits`: serial -> step -> seconds) after its previous one, the unit at
    that step (not departed). `previous`: each unit's last event before the batch. The route
    stage's tick finds a unit stuck while it is silent (`stuck_units`); this finds, from event
    time alone, the same stall once the unit moves again, so a replay, or a line read faster
    than the tick (a simulated run), shows it too."""
    last = dict(previous)
    out = []
    for e in batch:
        p = last.get(e.serial)
        if p is not None and p.type != "unit.departed" and p.step is not None:
            limit = limits.get(e.serial, {}).get(p.step)
            if limit is not None and (e.time - p.time).total_seconds() > limit:
                out.append(Stall(p, e, p.step, limit))
        if e.step is None and p is not None and p.type != "unit.departed":
            e = LineEvent(e.serial, e.type, e.station, p.step, e.time, e.event_id)
        last[e.serial] = e
    return out


def stall_conditions(found: Sequence[Stall], held: Iterable[str],
                     down: Mapping[str, datetime]) -> list[Condition]:
    """A stall the batch ended: the unit was stuck from its step's max cycle on, and moved at
    the event that ended it (raised, then returned to normal). A unit held meanwhile was
    held, not stuck; one stuck at a station that is down names that station's alert."""
    on_hold = set(held)
    out = []
    for s in found:
        serial, station = s.after.serial, s.before.station
        if serial in on_hold:
            continue
        waited = int((s.after.time - s.before.time).total_seconds())
        parent = station_down_id(station) if station in down else None
        out.append(Condition(
            condition=STUCK_UNIT, subject=serial, active=True,
            time=s.before.time + timedelta(seconds=s.limit), cause=f"{s.after.event_id}/stall",
            message=(f"{serial} did not move at step {s.step} ({station}) for {waited} s (its "
                     f"max cycle is {s.limit} s)"),
            details={"step": s.step, "since": s.before.time.isoformat(),
                     "max_cycle_s": s.limit, "waited_s": waited,
                     "moved": s.after.time.isoformat()},
            unit=serial, station=station, parent=parent))
        out.append(Condition(condition=STUCK_UNIT, subject=serial, active=False,
                             time=s.after.time, cause=s.after.event_id,
                             message=f"{serial} moved again ({s.after.type})", unit=serial,
                             station=station))
    return out


# --- stations ---------------------------------------------------------------------------------


def station_state(station: str, state: int, reason: str | None, time: datetime,
                  cause: str) -> Condition | None:
    """The station-down condition a `station.state` report gives (None: no change)."""
    name = E10_STATES.get(state, str(state))
    if state in DOWN_STATES:
        why = f": {reason}" if reason else ""
        return Condition(condition=STATION_DOWN, subject=station, active=True, time=time,
                         cause=cause, message=f"{station} is down ({name}){why}",
                         details={"state": state, "e10": name, "reason": reason},
                         station=station)
    if state in UP_STATES:
        return Condition(condition=STATION_DOWN, subject=station, active=False, time=time,
                         cause=cause, message=f"{station} is back ({name})",
                         details={"state": state, "e10": name}, station=station)
    return None


def faults_within(times: Iterable[datetime], at: datetime,
                  window: timedelta = STORM_WINDOW) -> int:
    """How many fault times fall in the window `(at - window, at]`."""
    return sum(1 for t in times if at - window < t <= at)


def fault_storm(station: str, times: Sequence[datetime], at: datetime, cause: str, *,
                occurred: bool, n: int = STORM_FAULTS,
                window: timedelta = STORM_WINDOW) -> Condition | None:
    """The storm condition at event time `at` of a station whose `fault.occurred` times are
    `times` (those of the batch included). `occurred`: the event at `at` is a fault (it may
    raise the storm); else a `fault.cleared` / `station.state` (it may end one)."""
    count = faults_within(times, at, window)
    minutes = window.total_seconds() / 60
    details = {"faults": count, "threshold": n, "window_minutes": minutes}
    if count >= n:
        if not occurred:
            return None
        return Condition(condition=FAULT_STORM, subject=station, active=True, time=at,
                         cause=cause, message=(f"{station} reported {count} faults within "
                                               f"{minutes:g} minutes"),
                         details=details, station=station)
    if occurred:
        return None
    return Condition(condition=FAULT_STORM, subject=station, active=False, time=at, cause=cause,
                     message=f"{station}: fewer than {n} faults in the last {minutes:g} minutes",
                     details=details, station=station)
