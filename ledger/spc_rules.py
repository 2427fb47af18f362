"""Statistical process control: individuals / moving-range charts and their rules (DOMAIN.md §5).

Pure logic over plain data, no database: the worker's SPC stage (`streams/detect/spc_stage.py`)
and the chart views of `linetrace spc` and the console (`ledger/spc_views.py`) read the points
and frozen limits from the ledger and hand them here. It lives in the ledger so that both
read one definition; `linetrace.streams.detect.spc` re-exports it.

A chart is one (station type, measurement name), e.g. `ict/TP1`. Its points are the
measurement's values in event order (event time, then event id, then measurement id).

Limits (frozen). The first `baseline` conforming points of the chart (inside the
measurement's own min/max; a value outside them is a defective unit, not process variation)
set the centre line (their mean) and sigma (MR-bar / d2, d2 = 1.128 for moving ranges of
two). Once established they never move: the data they judge cannot drag them along. A chart
whose baseline shows no variation (a count that is always 8) is `constant`: not judged.

Rules (signals), each evaluated at the point that completes its pattern, on the points after
the baseline (nonconforming points included, at their value):
`we1` one point beyond 3 sigma; `we2` 2 of 3 beyond 2 sigma, same side; `we3` 4 of 5 beyond
1 sigma, same side; `we4` 8 in a row on one side; `trend` (Nelson 3) 6 points steadily rising
or falling; `alternation` (Nelson 4) 14 points alternating up and down.

The alarm (out of control). Each rule alone has a false-alarm probability of 0.1-0.8 % per
point on an in-control chart; a plant judges dozens of charts on every unit, and the line
fails some units naturally (7 % of boards fail one ICT check, far beyond 3 sigma). Raising an
alarm on any single signal would alarm every few units on a healthy line. So the signals are
recorded (shown by `linetrace spc`) and the chart is declared out of control only on
*sustained* evidence, whose in-control probability is controlled for the whole family
(docs/detection.md has the figures measured on clean simulator runs):

A rule is sustained when it signals on `sustain` (5) points in a row:

- `we1` sustained: 5 points in a row beyond the same 3-sigma limit. A natural failure is
  isolated (about 1 in 150 boards per chart and side): five in a row is ~1e-11 per point; a
  shift or drift past the limit keeps every point there.
- `trend` sustained: 10 points steadily rising or falling (the 6-point rule on 5 points in a
  row): 2/10! = 5.5e-7 per point in control, 0.004 false alarms in 1,000 boards on the six
  ICT charts (9 points, 5.5e-6, gave one in eight clean 1,000-unit runs); a drift rises at
  every unit.

- `slope`: a significant linear trend over the last `SLOPE_POINTS` + 1 (9) conforming
  points less the one farthest from their least-squares line (a board tested out of step,
  e.g. a retest in the middle of the drift, or the last point before it started): the 8
  points' least-squares slope's Student t (residual scatter from the same points) beyond
  `SLOPE_T` (25), and the fitted change over the window at least `SLOPE_MOVE` (0.5) sigma.
  A fixture or supply that drifts moves the value a little at every unit, steadily: the
  points line up and the slope stands far above their scatter, well before they leave the
  3-sigma limits (a drift of 8 boards moving 0.8 sigma in all, with 0.03 sigma of scatter,
  has t near 25-30). Random points scatter about any line they fit: on one 8-point window
  t > 25 has probability 3e-7 (t, 6 df); leaving the farthest of 9 out raises it to about
  3e-6 per point in control (simulated, docs/detection.md). A tiny trend inside the noise
  (a near miss) has a t of a few units. Nonconforming points (outside the measurement's
  own min/max: a defective unit, 5-10 sigma out) are not in the window: they are the repair
  route's business, and one would break the line.

`we2`-`we4` and `alternation` detect shifts inside the limits: they are signals only, never an
alarm, because a small shift inside the noise (a near-miss) must not alarm and on dozens of
charts they fire by chance every few dozen units.

Return to normal: after `rtn_points` (10) consecutive points none of which signals an alarm
rule (sustained we1 or trend) nor lies beyond 3 sigma.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from .errors import LedgerError

D2 = 1.128  # E[moving range of two] / sigma, for normal data
RULES = ("we1", "we2", "we3", "we4", "trend", "alternation")
ALARM_RULES = ("we1", "trend", "slope")  # sustained forms (module docstring)
#: Points of context a rule may look back over (alternation needs 14).
RULE_SPAN = 14
DEFAULT_SPC = "data/spc.json"
#: The `slope` rule (module docstring): window (one more point is read, the farthest from
#: the line left out), Student t limit, and the least fitted change over it, in sigma.
SLOPE_POINTS = 8
SLOPE_T = 25.0
SLOPE_MOVE = 0.5


class SpcConfigError(LedgerError):
    """The SPC plant data file (LINETRACE_SPC, or the packaged one) is unreadable or
    malformed; the message names the file and what to fix."""

    code = "config.invalid"  # a file a LINETRACE_* setting names: exit 2, docs/errors.md


@dataclass(frozen=True)
class SpcConfig:
    """Plant data (`ledger/data/spc.json`): which station types are charted, the baseline
    size, how long a signal must be sustained, when a chart is back in control, and which
    charts hold the step when they go out of control (default: alert only)."""

    station_types: frozenset[str] = frozenset({"ict"})
    baseline: int = 25
    sustain: int = 5
    rtn_points: int = 10
    hold: frozenset[str] = frozenset()  # "ict/TP1", or "ict/*" for every chart of a type

    def charted(self, station_type: str | None) -> bool:
        return station_type is not None and station_type in self.station_types

    def holds(self, subject: str) -> bool:
        return subject in self.hold or f"{subject.split('/', 1)[0]}/*" in self.hold

    @property
    def context(self) -> int:
        """Points before a new one that judging it needs (rules, sustain, return to normal)."""
        return RULE_SPAN + self.sustain + self.rtn_points + 5

    @classmethod
    def from_json(cls, data: str | bytes, origin: str = "SPC config") -> SpcConfig:
        try:
            doc: Any = json.loads(data)
        except json.JSONDecodeError as e:
            raise SpcConfigError(f"{origin} is not JSON ({e}); fix the file") from None
        if not isinstance(doc, dict):
            raise SpcConfigError(f"{origin} must be a JSON object; see docs/detection.md")
        types, hold = doc.get("station_types", ["ict"]), doc.get("hold", [])
        if not (isinstance(types, list) and all(isinstance(t, str) for t in types)
                and isinstance(hold, list) and all(isinstance(h, str) and "/" in h
                                                   for h in hold)):
            raise SpcConfigError(f'{origin}: "station_types" must be a list of station types '
                                 'and "hold" a list of "type/measurement" charts')
        ints = {k: doc.get(k, d) for k, d in (("baseline", 25), ("sustain", 5),
                                                ("rtn_points", 10))}
        bad = [k for k, v in ints.items() if not isinstance(v, int) or v < 1]
        if bad or ints["baseline"] < 8:
            raise SpcConfigError(f"{origin}: {', '.join(bad) or 'baseline'} must be a whole "
                                 "number >= 1 (baseline >= 8 points)")
        return cls(frozenset(types), ints["baseline"], ints["sustain"], ints["rtn_points"],
                   frozenset(hold))


def load_config(path: str | Path | None = None) -> SpcConfig:
    """The plant's file (LINETRACE_SPC or `path`), else the packaged default."""
    if path is not None:
        p = Path(path)
        try:
            return SpcConfig.from_json(p.read_bytes(), origin=str(p))
        except OSError as e:
            raise SpcConfigError(f"cannot read the SPC config {p}: {e.strerror}; give a "
                                 "readable file") from None
    text = resources.files("linetrace.ledger").joinpath(DEFAULT_SPC).read_bytes()
    return SpcConfig.from_json(text, origin=DEFAULT_SPC)


@dataclass(frozen=True)
class Point:
    """One measurement on a chart. `order` sorts points in event order."""

    order: tuple[str, str, int]  # (event time RFC 3339, event id, measurement id)
    value: float
    unit: str  # the serial measured
    station: str
    event_id: str
    conforming: bool = True  # inside the measurement's own min/max


@dataclass(frozen=True)
class Limits:
    centre: float
    sigma: float
    baseline: int  # points it was computed from
    mr_bar: float

    @property
    def ucl(self) -> float:
        return self.centre + 3 * self.sigma

    @property
    def lcl(self) -> float:
        return self.centre - 3 * self.sigma

    @property
    def constant(self) -> bool:
        return self.sigma <= 0.0

    def z(self, value: float) -> float:
        return (value - self.centre) / self.sigma


def baseline_limits(values: Sequence[float]) -> Limits:
    """Centre and sigma (MR-bar / d2) from the baseline's values, in event order."""
    if len(values) < 2:
        raise ValueError("a baseline needs at least two points")
    centre = sum(values) / len(values)
    mr = [abs(b - a) for a, b in zip(values, values[1:], strict=False)]
    mr_bar = sum(mr) / len(mr)
    return Limits(centre=centre, sigma=mr_bar / D2, baseline=len(values), mr_bar=mr_bar)


def signals(z: Sequence[float]) -> list[str]:
    """The rules the last point of `z` (sigma units from the centre) completes."""
    if not z:
        return []
    out: list[str] = []
    last = z[-1]
    if abs(last) > 3:
        out.append("we1")
    for rule, n, k, beyond in (("we2", 3, 2, 2.0), ("we3", 5, 4, 1.0)):
        if len(z) >= n and abs(last) > beyond:
            side = 1 if last > 0 else -1
            if sum(1 for x in z[-n:] if x * side > beyond) >= k:
                out.append(rule)
    if len(z) >= 8 and (all(x > 0 for x in z[-8:]) or all(x < 0 for x in z[-8:])):
        out.append("we4")
    if _monotone(z[-6:]) and len(z) >= 6:
        out.append("trend")
    if len(z) >= 14 and _alternating(z[-14:]):
        out.append("alternation")
    return out


def _monotone(xs: Sequence[float]) -> bool:
    d = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    return bool(d) and (all(x > 0 for x in d) or all(x < 0 for x in d))


def _alternating(xs: Sequence[float]) -> bool:
    d = [b - a for a, b in zip(xs, xs[1:], strict=False)]
    return all(x != 0 for x in d) and all(a * b < 0 for a, b in zip(d, d[1:], strict=False))


def alarm_rules(z: Sequence[float], sustain: int) -> list[str]:
    """The sustained forms of the alarm rules the last point completes (module docstring)."""
    out: list[str] = []
    if len(z) >= sustain and abs(z[-1]) > 3:
        side = 1 if z[-1] > 0 else -1
        if all(x * side > 3 for x in z[-sustain:]):
            out.append("we1")
    if len(z) >= 5 + sustain and _monotone(z[-(5 + sustain):]):
        out.append("trend")
    return out


def slope_t(z: Sequence[float]) -> tuple[float, float]:
    """The least-squares slope's t statistic over `z` and the fitted change across it (in
    sigma); t is infinite for points exactly on a sloped line, 0 for a flat one."""
    n = len(z)
    xbar, zbar = (n - 1) / 2, sum(z) / n
    sxx = sum((i - xbar) ** 2 for i in range(n))
    b = sum((i - xbar) * (v - zbar) for i, v in enumerate(z)) / sxx
    sse = sum((v - zbar - b * (i - xbar)) ** 2 for i, v in enumerate(z))
    change = b * (n - 1)
    if b == 0:
        return 0.0, 0.0
    se = (sse / (n - 2) / sxx) ** 0.5
    return (abs(b) / se if se > 0 else float("inf")), change


def slope_window(z: Sequence[float]) -> int | None:
    """Which of the last `SLOPE_POINTS` + 1 points the `slope` rule leaves out: the one
    farthest from their least-squares line (None: too few points)."""
    w = list(z[-(SLOPE_POINTS + 1):])
    n = len(w)
    if n <= SLOPE_POINTS:
        return None
    xbar, zbar = (n - 1) / 2, sum(w) / n
    sxx = sum((i - xbar) ** 2 for i in range(n))
    b = sum((i - xbar) * (v - zbar) for i, v in enumerate(w)) / sxx
    res = [abs(v - zbar - b * (i - xbar)) for i, v in enumerate(w)]
    return res.index(max(res))


def slope_alarm(z: Sequence[float]) -> bool:
    """The `slope` rule on the last `SLOPE_POINTS` + 1 conforming points, the one farthest
    from their line left out (module docstring)."""
    out = slope_window(z)
    if out is None:
        return False
    w = list(z[-(SLOPE_POINTS + 1):])
    del w[out]
    t, change = slope_t(w)
    return t > SLOPE_T and abs(change) >= SLOPE_MOVE


@dataclass(frozen=True)
class Judged:
    """One point as the chart judged it."""

    point: Point
    z: float
    signals: tuple[str, ...]  # every rule the point completes
    alarm: tuple[str, ...]  # the sustained alarm rules it completes
    out_of_control: bool  # the chart's state after this point


@dataclass
class ChartRun:
    """A chart's judgement over its points after the baseline, in order."""

    limits: Limits
    sustain: int = 5
    rtn_points: int = 10
    z: list[float] = field(default_factory=list)
    cz: list[float] = field(default_factory=list)  # the conforming points' z (`slope`)
    judged: list[Judged] = field(default_factory=list)
    calm: int = 0  # consecutive points without an alarm rule or a point beyond 3 sigma
    state: bool = False  # out of control

    def add(self, p: Point) -> Judged:
        z = self.limits.z(p.value)
        self.z.append(z)
        window = self.z[-(RULE_SPAN + self.sustain + 1):]
        sig = tuple(signals(window))
        alarm = tuple(alarm_rules(window, self.sustain))
        if p.conforming:
            self.cz.append(z)
            del self.cz[:-(SLOPE_POINTS + 1)]
            if slope_alarm(self.cz):
                alarm += ("slope",)
        if alarm:
            self.state, self.calm = True, 0
        elif abs(z) > 3:
            self.calm = 0
        else:
            self.calm += 1
            if self.state and self.calm >= self.rtn_points:
                self.state = False
        j = Judged(p, z, sig, alarm, self.state)
        self.judged.append(j)
        return j


def run_chart(limits: Limits, points: Sequence[Point], sustain: int = 5,
              rtn_points: int = 10) -> ChartRun:
    run = ChartRun(limits, sustain, rtn_points)
    for p in points:
        run.add(p)
    return run


@dataclass(frozen=True)
class Transition:
    """The chart went out of control (`active`) or back in control at `at`."""

    active: bool
    at: Judged
    involved: tuple[Judged, ...]  # the points of the violation (or of the calm run)


def transitions(run: ChartRun, first_new: int) -> list[Transition]:
    """State changes among the judged points from index `first_new` on."""
    out: list[Transition] = []
    before = run.judged[first_new - 1].out_of_control if first_new > 0 else False
    for i in range(first_new, len(run.judged)):
        j = run.judged[i]
        if j.out_of_control != before:
            span = 5 + run.sustain if "trend" in j.alarm else run.sustain
            if not j.out_of_control:
                span = run.rtn_points
            involved = tuple(run.judged[max(0, i - span + 1):i + 1])
            if j.out_of_control and "slope" in j.alarm and "trend" not in j.alarm:
                conf = [x for x in run.judged[:i + 1] if x.point.conforming]
                conf = conf[-(SLOPE_POINTS + 1):]
                out_at = slope_window([x.z for x in conf])
                involved = tuple(x for k, x in enumerate(conf) if k != out_at)
            elif j.out_of_control:  # the points beyond the limit, for a sustained we1
                involved = tuple(x for x in involved if "trend" in j.alarm or abs(x.z) > 3)
            out.append(Transition(j.out_of_control, j, involved))
            before = j.out_of_control
    return out


def describe(subject: str, t: Transition, limits: Limits, unit_of_measure: str
             ) -> tuple[str, Mapping[str, Any]]:
    """The alert message and details for a transition (plain language, JSON-able)."""
    j = t.at
    units = list(dict.fromkeys(x.point.unit for x in t.involved))
    details: dict[str, Any] = {
        "chart": subject, "rules": list(j.alarm) if t.active else [],
        "signals": list(j.signals), "station": j.point.station,
        "centre": limits.centre, "ucl": limits.ucl, "lcl": limits.lcl,
        "sigma": limits.sigma, "unit_of_measure": unit_of_measure, "units": units,
        "points": [{"unit": x.point.unit, "value": x.point.value, "z": round(x.z, 3),
                    "event": x.point.event_id} for x in t.involved]}
    if not t.active:
        return (f"{subject} is back in control: {len(t.involved)} points in a row within "
                "its limits without a trend", details)
    why = " and ".join({"we1": "points beyond the 3-sigma limit",
                        "trend": "a sustained trend",
                        "slope": "a significant linear drift"}[r] for r in j.alarm)
    return (f"{subject} out of statistical control at {j.point.station}: {why} "
            f"(last {j.point.value} {unit_of_measure} on {j.point.unit}; limits "
            f"{limits.lcl:.6g}..{limits.ucl:.6g})", details)
