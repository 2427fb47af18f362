"""The SPC stage: each batch's measurements judged on their charts (`spc`), from SQL.

`load` runs only for a batch with `unit.tested` events at charted station types: it reads
the batch's measurements, the charts' frozen limits (`spc_charts`), a chart's first
`baseline` conforming points when its limits are not established yet, and the last
`config.context` points of each chart involved (one windowed query). Nothing lives only in
memory: a worker that restarts, or another worker, judges the same points the same way.

`decide` freezes a chart's limits once it has its baseline (insert-or-ignore: the first
writer wins, a redo writes the same row), then judges the chart's recent points in event
order and turns each change of state among the batch's points into a `spc.out_of_control`
condition (active, or back in control). A chart the plant marked as holding (`hold` in
`ledger/data/spc.json`, like SAP ME's "Hold SPC Viol") also holds the units of the violation
at that step: a plant-signed `hold.placed` per unit (scope unit, category quality, code
`spc.out_of_control`), and a `command.hold` to the station that measured the last one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.orm import Session

from linetrace.ledger import spc as store
from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.holds import hold_id_for
from linetrace.ledger.models import Operation
from linetrace.ledger.records import Candidate
from linetrace.ledger.spc_views import ChartSummary as ChartSummary  # re-exported
from linetrace.ledger.spc_views import chart_point, end_of
from linetrace.ledger.spc_views import chart_summaries as chart_summaries  # re-exported
from linetrace.ledger.system_events import SystemContext, system_candidate
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event

from ..stages import NO_DECISIONS, Decisions
from .spc import Limits, SpcConfig, Transition, baseline_limits, describe, load_config
from .spc import run_chart, transitions
from .spc_rates import Result, fpy_findings, p_chart_findings

CONDITION = "spc.out_of_control"
_RESULT_TYPES = ("unit.tested", "unit.inspected")
_CHARTS: Table = store.SpcChart.__table__  # type: ignore[assignment]


@dataclass
class SpcState:
    new: dict[store.ChartKey, list[store.StoredPoint]]  # the batch's points per chart
    charts: dict[store.ChartKey, store.SpcChart]
    baselines: dict[store.ChartKey, list[store.StoredPoint]]  # charts without limits yet
    recent: dict[store.ChartKey, list[store.StoredPoint]]
    steps: dict[tuple[str, str], int] = field(default_factory=dict)  # (serial, station) -> step
    #: first-pass yield and p-chart: the batch's result events, their types' results
    results: dict[str, list[store.StoredResult]] = field(default_factory=dict)
    new_results: set[str] = field(default_factory=set)


@dataclass
class SpcStage:
    """SPC per (station type, measurement); `ctx` None: alert only (no plant key to hold)."""

    ctx: SystemContext | None
    config: SpcConfig = field(default_factory=load_config)  # the packaged default
    name: str = "spc"
    rates: bool = True  # first-pass yield and the p-chart

    @classmethod
    def of(cls, ctx: SystemContext | None) -> SpcStage:
        """The stage with the plant's SPC file (`ctx.spc_file`, LINETRACE_SPC) if it has one."""
        if ctx is None or ctx.spc_file is None:
            return cls(ctx)
        return cls(ctx, config=load_config(ctx.spc_file))

    def load(self, session: Session, batch: Sequence[Candidate]) -> SpcState | None:
        results = [c.event for c in batch if c.event.type in _RESULT_TYPES]
        if not results:
            return None
        state = SpcState({}, {}, {}, {})
        if self.rates:
            types = store.station_types_of(session, {e.source for e in results})
            state.results = store.results_of_types(session, set(types.values()))
            state.new_results = {e.id for e in results}
        tested = {(e.subject, e.id) for e in results if e.type == "unit.tested"}
        points = store.points_of_events(session, tested, self.config.station_types)
        for p in points:
            state.new.setdefault(p.key, []).append(p)
        if not points:
            return state
        new = state.new
        state.charts = store.charts(session, new.keys())
        state.baselines = {k: store.first_points(session, k, self.config.baseline)
                           for k in sorted(new) if k not in state.charts}
        per_chart = self.config.context + max(len(v) for v in new.values())
        state.recent = store.recent_points(session, new.keys(), per_chart)
        if self.config.hold and self.ctx is not None:
            state.steps = _steps(session, {(p.serial, p.station) for p in points})
        return state

    def decide(self, batch: Sequence[Candidate], state: SpcState | None) -> Decisions:
        if state is None:
            return NO_DECISIONS
        events = {c.event.id: c.event for c in batch}
        rows: list[tuple[Table, dict[str, Any]]] = []
        conditions: list[Condition] = []
        system: list[Candidate] = []
        for key in sorted(state.new):
            limits, end = self._limits(key, state, rows)
            if limits is None or limits.constant:
                continue
            after = [p for p in state.recent.get(key, []) if p.order > end]
            new_orders = {p.order for p in state.new[key]}
            first = next((i for i, p in enumerate(after) if p.order in new_orders), None)
            if first is None:
                continue
            run = run_chart(limits, [chart_point(p) for p in after], self.config.sustain,
                            self.config.rtn_points)
            subject = f"{key[0]}/{key[1]}"
            uom = state.new[key][0].unit
            for t in transitions(run, first):
                conditions.append(self._condition(subject, t, limits, uom))
                if t.active and self.config.holds(subject):
                    system += self._holds(subject, t, events, state)
        conditions += self._rates(state)
        if not (rows or conditions or system):
            return NO_DECISIONS
        return Decisions(system=system, rows=rows, conditions=conditions)

    def _rates(self, state: SpcState) -> list[Condition]:
        """First-pass yield per station and the p-chart per station type (low priority)."""
        out: list[Condition] = []
        for st, stored in sorted(state.results.items()):
            rs = [Result(r.serial, r.station, r.event_id, r.failed) for r in stored]
            times = {r.event_id: r.time for r in stored}
            for condition, found in (
                    ("spc.first_pass_yield", fpy_findings(rs, state.new_results)),
                    ("spc.defect_rate", p_chart_findings(st, rs, state.new_results))):
                for f in found:
                    what = ("first-pass yield" if condition == "spc.first_pass_yield"
                            else "defect rate")
                    out.append(Condition(
                        condition=condition, subject=f.subject, active=f.active,
                        time=times[f.at.event_id], cause=f.at.event_id,
                        message=f"{what} of {f.subject} "
                                f"{'out of' if f.active else 'back in'} control: {f.details}",
                        details={**f.details, "station_type": st}, unit=f.at.serial,
                        station=f.at.station))
        return out

    def _limits(self, key: store.ChartKey, state: SpcState,
                rows: list[tuple[Table, dict[str, Any]]]
                ) -> tuple[Limits | None, tuple[str, str, int]]:
        """The chart's frozen limits and the order of its baseline's last point; limits
        established now are written (insert-or-ignore)."""
        chart = state.charts.get(key)
        if chart is not None:
            limits = Limits(centre=chart.centre, sigma=chart.sigma, baseline=chart.baseline,
                            mr_bar=chart.mr_bar)
            return limits, end_of(chart, state.recent.get(key, []))
        base = state.baselines.get(key, [])
        if len(base) < self.config.baseline:
            return None, ("", "", 0)
        limits = baseline_limits([p.value for p in base])
        last = base[-1]
        rows.append((_CHARTS, {
            "station_type": key[0], "measurement": key[1], "test": last.test, "unit": last.unit,
            "centre": limits.centre, "sigma": limits.sigma, "mr_bar": limits.mr_bar,
            "baseline": limits.baseline, "established": last.time,
            "baseline_event": last.event_id}))
        return limits, last.order

    def _condition(self, subject: str, t: Transition, limits: Limits, uom: str) -> Condition:
        message, details = describe(subject, t, limits, uom)
        p = t.at.point
        return Condition(condition=CONDITION, subject=subject, active=t.active,
                         time=store.parse_order_time(p.order), cause=p.event_id,
                         message=message, details=details, unit=p.unit, station=p.station)

    def _holds(self, subject: str, t: Transition, events: dict[str, Event],
               state: SpcState) -> list[Candidate]:
        """A unit hold per unit of the violation, caused by the test event that completed it
        (only when that event is in this batch: its system events are caused by it)."""
        cause = events.get(t.at.point.event_id)
        if cause is None or self.ctx is None:
            return []
        key = self.ctx.plant_key
        out: list[Candidate] = []
        reason = (f"SPC: {subject} out of statistical control ({', '.join(t.at.alarm)}); "
                  "quality reviews the chart before the units go on")[:4096]
        for unit in dict.fromkeys(j.point.unit for j in t.involved):
            station = next(j.point.station for j in t.involved if j.point.unit == unit)
            hold_id = hold_id_for(f"{cause.id}:{unit}", CONDITION)
            placed = system_candidate("hold.placed", hold_id, b.HoldPlaced(
                hold_id=hold_id, scope="unit", target=unit, reason=reason, category="quality",
                code=CONDITION, placed_by=SYSTEM_SOURCE, units=[unit],
                step=state.steps.get((unit, station)), station=station, cause=cause.id),
                cause, key)
            out.append(placed)
            if unit == t.at.point.unit:
                out.append(system_candidate("command.hold", station, b.CommandHold(
                    unit=unit, reason=reason, hold_id=hold_id), placed.event, key))
        return out


def _steps(session: Session, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The step each (unit, station) was measured at (its operation there)."""
    serials = sorted({s for s, _ in pairs})
    out: dict[tuple[str, str], int] = {}
    for serial, station, step in session.execute(
            select(Operation.serial, Operation.station, Operation.step)
            .where(Operation.serial.in_(serials)).order_by(Operation.id)):
        if (serial, station) in pairs:
            out[(serial, station)] = step
    return out
