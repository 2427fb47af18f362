"""The SPC charts as people read them: `linetrace spc [--json]`, `GET /api/v1/spc` and one
chart's points (`GET /api/v1/spc/{station_type}/{measurement}`), judged over all their points
by the same rules as the worker's SPC stage (`spc_rules`), read from the ledger (`spc`).

`spc_document(session, config)`: one row per chart of the charted station types, in
(station type, measurement) order, the body of `linetrace spc --json`:

    {"station_type", "measurement", "test", "unit", "centre", "lcl", "ucl", "sigma",
     "baseline", "points", "state", "holds", "last_violation"}

`state`: `collecting (n/baseline)`, `constant`, `in_control` or `out_of_control`;
`last_violation`: the last point that completed any rule, `{rules, alarm, time, unit,
station, value, z}`, or null.

`chart_document(session, config, station_type, measurement)`: one chart (None: no such
chart), for the console's chart page:

    {"station_type", "measurement", "test", "unit", "state", "holds",
     "centre", "sigma", "ucl", "lcl",            # individuals limits (null while collecting)
     "mr_bar", "mr_ucl", "mr_lcl",               # moving-range limits (D4 = 3.267, D3 = 0)
     "baseline", "established",                  # points the limits came from; when frozen
     "points": [{"t", "value", "serial", "station", "event", "conforming", "baseline",
                 "z", "mr", "violations": [rule codes], "alarm": [rule codes],
                 "out_of_control"}],
     "rules_fired": {rule: count}, "violations": [the points with any violation]}

Points are in event order. `violations` are the rules the point completes (`we1`-`we4`,
Nelson `trend` and `alternation`, and `slope` when the drift rule alarms there); `alarm`
the sustained forms that put the chart out of control; baseline points are never judged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from . import spc as store
from .genealogy import iso
from .spc_rules import Judged, Limits, Point, SpcConfig, run_chart

#: Moving-range chart factors for ranges of two points: UCL = D4 * MR-bar, LCL = D3 * MR-bar.
D4 = 3.267
D3 = 0.0

FIELDS = ("station_type", "measurement", "test", "unit", "centre", "lcl", "ucl", "sigma",
          "baseline", "points", "state", "holds", "last_violation")


def chart_point(p: store.StoredPoint) -> Point:
    """A stored measurement as the chart rules take it."""
    return Point(order=p.order, value=p.value, unit=p.serial, station=p.station,
                 event_id=p.event_id, conforming=p.conforming)


def end_of(chart: store.SpcChart, recent: Sequence[store.StoredPoint]) -> tuple[str, str, int]:
    """The order of the baseline's last point: its measurement among the recent points, or
    (when the window starts later) just its event."""
    for p in recent:
        if p.event_id == chart.baseline_event:
            return p.order
    return (store.order_time(chart.established), chart.baseline_event, 2 ** 62)


@dataclass(frozen=True)
class ChartSummary:
    """One chart as `linetrace spc` shows it."""

    station_type: str
    measurement: str
    test: str | None
    unit: str | None
    centre: float | None
    lcl: float | None
    ucl: float | None
    sigma: float | None
    baseline: int | None
    points: int
    state: str  # collecting (n/baseline), constant, in_control, out_of_control
    last_violation: dict[str, Any] | None  # the last point that signalled any rule
    holds: bool


def _limits(chart: store.SpcChart) -> Limits:
    return Limits(chart.centre, chart.sigma, chart.baseline, chart.mr_bar)


def _judged(chart: store.SpcChart, pts: Sequence[store.StoredPoint], config: SpcConfig
            ) -> tuple[list[Judged], bool, tuple[str, str, int]]:
    """The points after the baseline as the chart judges them, its state (out of control?)
    and the order of the baseline's last point."""
    end = end_of(chart, pts)
    run = run_chart(_limits(chart), [chart_point(p) for p in pts if p.order > end],
                    config.sustain, config.rtn_points)
    return run.judged, run.state, end


def _summary(session: Session, key: store.ChartKey, frozen: dict[store.ChartKey, store.SpcChart],
             config: SpcConfig) -> ChartSummary:
    pts = store.all_points(session, key)
    subject = f"{key[0]}/{key[1]}"
    chart = frozen.get(key)
    if chart is None:
        n = sum(1 for p in pts if p.conforming)
        return ChartSummary(key[0], key[1], pts[0].test if pts else None,
                            pts[0].unit if pts else None, None, None, None, None, None,
                            len(pts), f"collecting ({n}/{config.baseline})", None,
                            config.holds(subject))
    limits = _limits(chart)
    state, last = "constant", None
    if not limits.constant:
        judged, out, _ = _judged(chart, pts, config)
        state = "out_of_control" if out else "in_control"
        j = next((j for j in reversed(judged) if j.signals), None)
        if j is not None:
            last = {"rules": list(j.signals), "alarm": list(j.alarm),
                    "time": store.parse_order_time(j.point.order), "unit": j.point.unit,
                    "station": j.point.station, "value": j.point.value, "z": round(j.z, 3)}
    return ChartSummary(key[0], key[1], chart.test, chart.unit, limits.centre, limits.lcl,
                        limits.ucl, limits.sigma, limits.baseline, len(pts), state, last,
                        config.holds(subject))


def chart_summaries(session: Session, config: SpcConfig) -> list[ChartSummary]:
    """Every chart of the charted station types, judged over all its points (a read)."""
    frozen = store.charts(session)
    return [_summary(session, key, frozen, config)
            for key in store.chart_keys(session, config.station_types)]


def summary_row(c: ChartSummary) -> dict[str, Any]:
    """One chart's row of `linetrace spc --json` (times RFC 3339)."""
    last = None
    if c.last_violation is not None:
        last = dict(c.last_violation, time=iso(c.last_violation["time"]))
    return {"station_type": c.station_type, "measurement": c.measurement, "test": c.test,
            "unit": c.unit, "centre": c.centre, "lcl": c.lcl, "ucl": c.ucl, "sigma": c.sigma,
            "baseline": c.baseline, "points": c.points, "state": c.state, "holds": c.holds,
            "last_violation": last}


def spc_document(session: Session, config: SpcConfig) -> list[dict[str, Any]]:
    """The body of `linetrace spc --json` and `GET /api/v1/spc` (module docstring)."""
    return [summary_row(c) for c in chart_summaries(session, config)]


def chart_document(session: Session, config: SpcConfig, station_type: str, measurement: str
                   ) -> dict[str, Any] | None:
    """One chart's points, limits and violations (module docstring); None: no such chart
    (a station type not charted, or no measurement of that name there)."""
    if not config.charted(station_type):
        return None
    key = (station_type, measurement)
    pts = store.all_points(session, key)
    if not pts:
        return None
    frozen = store.charts(session, [key])
    summary = _summary(session, key, frozen, config)
    chart = frozen.get(key)
    judged: dict[tuple[str, str, int], Judged] = {}
    end: tuple[str, str, int] | None = None
    limits = _limits(chart) if chart is not None else None
    if chart is not None and limits is not None and not limits.constant:
        found, _, end = _judged(chart, pts, config)
        judged = {j.point.order: j for j in found}
    elif chart is not None:
        end = end_of(chart, pts)
    points: list[dict[str, Any]] = []
    prev: float | None = None
    for p in pts:
        j = judged.get(p.order)
        violations = list(dict.fromkeys((*j.signals, *j.alarm))) if j is not None else []
        points.append({
            "t": iso(p.time), "value": p.value, "serial": p.serial, "station": p.station,
            "event": p.event_id, "conforming": p.conforming,
            "baseline": end is None or p.order <= end,
            "z": round(j.z, 3) if j is not None else None,
            "mr": None if prev is None else abs(p.value - prev),
            "violations": violations, "alarm": list(j.alarm) if j is not None else [],
            "out_of_control": j.out_of_control if j is not None else False})
        prev = p.value
    fired: dict[str, int] = {}
    for pt in points:
        for rule in pt["violations"]:
            fired[rule] = fired.get(rule, 0) + 1
    mr_bar = chart.mr_bar if chart is not None else None
    return {
        "station_type": station_type, "measurement": measurement, "test": summary.test,
        "unit": summary.unit, "state": summary.state, "holds": summary.holds,
        "centre": summary.centre, "sigma": summary.sigma, "ucl": summary.ucl,
        "lcl": summary.lcl, "mr_bar": mr_bar,
        "mr_ucl": None if mr_bar is None else D4 * mr_bar,
        "mr_lcl": None if mr_bar is None else D3 * mr_bar,
        "baseline": summary.baseline,
        "established": iso(chart.established) if chart is not None else None,
        "points": points, "rules_fired": dict(sorted(fired.items())),
        "violations": [pt for pt in points if pt["violations"]]}
