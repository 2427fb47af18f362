"""The burn-in verdict stage: one `burnin.verdict` per burn-in run, and a failing one routed.

A run's evidence travels on two partitions: its `burnin.run` start and end, telemetry and XIDs
on `line.telemetry`, its `unit.tested` (method Burnin) results on `line.events`. The run end
(`burnin.run` phase end) is the verdict's cause: its id and time are the verdict's, whichever
partition the worker read first. Everything on `line.telemetry` is stored by the time the end
is (one partition, read in order). The results are known to be stored once any event of the
unit on `line.events` at or after the end's time is: a station sends a run's results before
its end, and a unit's events reach its partition in event-time order, so a later one stored
means the earlier ones are (the runner's own result carries the end's time; on the line the
station's `work.completed` follows). If that is not so when the end is stored, the run waits
in `burnin_waits` and is decided in the batch that brings such an event.

The verdict is decided from the run's own events (`verdict.decide_verdict`), the GPUs the
unit's installs put in it up to the run's start, and the limits in force (`SystemContext`'s
`burnin_limits`, data). A failing verdict routes the unit to repair (`command.route`, the
route's rework from the unit's current step, to the burn-in station) only when the station's
own results passed: when they failed, the station's `work.completed` `Failed` is what the
route stage answers with the same rework, so a failure is never routed twice. Verdicts raise
no alerts.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from linetrace.ledger.burnin_limits import BurninLimits
from linetrace.ledger.interlock import ended_holds, progress_of, unit_events, unit_records
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SystemContext, system_candidate
from linetrace.ledger.telemetry_store import require_bytes
from linetrace.ledger.unit_state import aware
from linetrace.ledger.verdicts import BurninVerdictRow, BurninWait, waiting_runs
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_stored_event, deterministic_id, parse_time
from linetrace.schemas.routes.progress import describe_step
from linetrace.schemas.topics import EVENTS, TELEMETRY, TOPIC_OF_TYPE

from ..stages import NO_DECISIONS, Decisions
from .verdict import RunEvents, assemble, decide_verdict, installed_gpus

_WAITS: Table = BurninWait.__table__  # type: ignore[assignment]


@dataclass(frozen=True)
class Rework:
    """Where a failing verdict sends the unit (the route's rework from its current step)."""

    step: int
    station_type: str
    why: str


@dataclass(frozen=True)
class Ready:
    end: Event
    run: RunEvents
    rework: Rework | None
    waited: bool


@dataclass
class VerdictState:
    ready: list[Ready] = field(default_factory=list)
    waits: list[Event] = field(default_factory=list)  # run ends to park in burnin_waits


def _is_end(ev: Event) -> bool:
    return isinstance(ev.body, b.BurninRun) and ev.body.phase == "end"


def _rows(session: Session, serial: str, topic: str, until: datetime | None = None
          ) -> list[tuple[Event, bytes]]:
    q = select(EventRow).where(EventRow.subject == serial, EventRow.topic == topic)
    if until is not None:
        q = q.where(EventRow.time <= until)
    out = []
    for row in session.scalars(q.order_by(EventRow.seq)):
        value = require_bytes(row.value, f"event {row.source}/{row.event_id}", row.digest)
        out.append((decode_stored_event(value), value))
    return out


class VerdictStage:
    """`burnin.run` (end) -> `burnin.verdict` (and, failing, `command.route` to repair)."""

    name = "burnin-verdict"

    def __init__(self, ctx: SystemContext, limits: BurninLimits | None = None) -> None:
        self.ctx = ctx
        self.limits = limits or ctx.burnin_limits

    def load(self, session: Session, batch: Sequence[Candidate]) -> VerdictState:
        ends = [c.event for c in batch if c.event.type == "burnin.run" and _is_end(c.event)]
        later: dict[str, datetime] = {}  # unit -> latest time of its line.events in the batch
        for c in batch:
            if TOPIC_OF_TYPE.get(c.event.type) == EVENTS:
                t = parse_time(c.event.envelope.time)
                later[c.event.subject] = max(later.get(c.event.subject, t), t)
        woken: list[tuple[Event, bool]] = [(e, False) for e in ends]
        mine = {e.id for e in ends}
        for w in waiting_runs(session, sorted(later)):
            if w.event_id in mine or later[w.serial] < aware(w.until):
                continue
            row = session.scalar(select(EventRow).where(EventRow.source == w.source,
                                                        EventRow.event_id == w.event_id))
            if row is not None:
                woken.append((decode_stored_event(require_bytes(row.value, "run end")), True))
        state = VerdictState()
        for end, waited in woken:
            vid = deterministic_id("burnin.verdict", end.subject, end.id)
            if session.get(BurninVerdictRow, vid) is not None:
                continue  # decided already (a redo)
            ready = self._gather(session, end, waited)
            if ready is None:
                state.waits.append(end)
            else:
                state.ready.append(ready)
        return state

    def _gather(self, session: Session, end: Event, waited: bool) -> Ready | None:
        serial, t_end = end.subject, parse_time(end.envelope.time)
        unit = [e for e, _ in _rows(session, serial, EVENTS)]
        if not any(parse_time(e.envelope.time) >= t_end for e in unit):
            return None
        tel = _rows(session, serial, TELEMETRY, t_end)
        probe = assemble(end, tel, [], None)
        started = probe.start_time or probe.end_time
        run = assemble(end, tel, [e for e in unit if e.type == "unit.tested"],
                       installed_gpus([e for e in unit if e.type.startswith("materials.")],
                                      started))
        return Ready(end, run, self._rework(session, serial, t_end), waited)

    def _rework(self, session: Session, serial: str, t_end: datetime) -> Rework | None:
        record = unit_records(session, [serial]).get(serial)
        if record is None:
            return None
        progress = progress_of(serial, self.ctx.routes, record,
                               unit_events(session, [serial])[serial],
                               ended_holds(session, [serial]).get(serial, []), until=t_end)
        step = progress.current_step
        if step is None:
            return None
        outcome = progress.failure_outcome(step)
        if outcome is None or outcome.repair is None:
            return None
        why = (f"{describe_step(progress.route, step)}: linetrace's burn-in verdict failed: "
               f"repair at {describe_step(progress.route, outcome.repair.step)}, then back to "
               f"step {outcome.return_to} (rework loop {outcome.loop} of {outcome.max_loops})")
        return Rework(outcome.repair.step, outcome.repair.station_type, why)

    def decide(self, batch: Sequence[Candidate], state: VerdictState) -> Decisions:
        if not state.ready and not state.waits:
            return NO_DECISIONS
        system: list[Candidate] = []
        rows: list[tuple[Table, dict[str, Any]]] = []
        updates: list[tuple[Table, dict[str, Any], dict[str, Any]]] = []
        key = self.ctx.plant_key
        for end in state.waits:
            rows.append((_WAITS, {"serial": end.subject, "source": end.source,
                                  "event_id": end.id, "until": parse_time(end.envelope.time),
                                  "resolved": None}))
        for r in state.ready:
            verdict = decide_verdict(r.run, self.limits)
            system.append(system_candidate("burnin.verdict", r.end.subject, verdict, r.end, key))
            if r.waited:
                updates.append((_WAITS, {"source": r.end.source, "event_id": r.end.id},
                                {"resolved": parse_time(r.end.envelope.time)}))
            if verdict.result == "Failed" and verdict.station_result in (None, "Passed") \
                    and r.rework is not None:
                reasons = "; ".join(x.message for x in verdict.reasons)
                system.append(system_candidate("command.route", r.end.source, b.CommandRoute(
                    unit=r.end.subject, step=r.rework.step, station_type=r.rework.station_type,
                    decision="rework", reason=f"{r.rework.why} ({reasons})"[:4096]),
                    r.end, key))
        return Decisions(system=system, rows=rows, updates=updates)
