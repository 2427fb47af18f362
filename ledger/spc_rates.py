"""Attribute SPC: first-pass yield per station and a p-chart of defect rates per station type.

Pure logic over a station type's test and inspection results in event order (`Result`);
the worker's `spc_stage` reads them from the ledger, and the line status
(`ledger/line_status.py`) counts first passes the same way (`linetrace.streams.detect.spc_rates`
re-exports this module). Both raise low-priority conditions only: a failing
unit is already handled by its route (repair), these say a station's failure rate moved.

- First-pass yield (`spc.first_pass_yield`, subject = station id): a unit's first result at
  a station type is its first pass. A station's baseline is its first `FPY_WINDOW` (50) first
  passes (recomputed from the same rows each time: the same events give the same baseline);
  its window the last 50. The window is alarming when its failures are improbable under the
  baseline rate: binomial tail P(X >= failures | 50, p0) < `FPY_ALPHA` (1e-3), with p0 the
  baseline's failure rate smoothed ((f + 1) / (n + 2), so a perfect baseline is not 0). It
  clears when the tail is back above `FPY_CLEAR` (0.05).
- p-chart (`spc.defect_rate`, subject = station type): results in consecutive subgroups of
  `P_SUBGROUP` (25); p-bar from the first `P_BASELINE` (8) subgroups (smoothed, (d + 1) /
  (n + 2)), frozen the same way. The limit is a probability limit (exact binomial, as the
  normal 3-sigma limit p-bar + 3 sqrt(p-bar (1 - p-bar) / n) fails for the small rates of a
  line: at 1 % it would flag 2 defects in 25): a subgroup with d defects is out of control
  when P(X >= d | 25, p-bar) < 0.00135, the 3-sigma tail; the next one within clears it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

FPY_WINDOW = 50
FPY_ALPHA = 1e-3
FPY_CLEAR = 0.05
P_SUBGROUP = 25
P_BASELINE = 8
P_ALPHA = 0.00135  # the one-sided tail of a 3-sigma limit


@dataclass(frozen=True)
class Result:
    """One test or inspection result at a station, in event order."""

    serial: str
    station: str
    event_id: str
    failed: bool


@dataclass(frozen=True)
class RateFinding:
    """A change of state at the result `at` (True: out of control)."""

    subject: str
    active: bool
    at: Result
    details: dict[str, float | int | str]


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    return sum(math.comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1))


def first_passes(results: Sequence[Result]) -> list[Result]:
    """Each unit's first result at the station type."""
    seen: set[str] = set()
    out = []
    for r in results:
        if r.serial not in seen:
            seen.add(r.serial)
            out.append(r)
    return out


def fpy_findings(results: Sequence[Result], new: set[str]) -> list[RateFinding]:
    """FPY changes of state per station at the first passes among `new` event ids."""
    by_station: dict[str, list[Result]] = {}
    for r in first_passes(results):
        by_station.setdefault(r.station, []).append(r)
    out: list[RateFinding] = []
    for station, rs in sorted(by_station.items()):
        if len(rs) < 2 * FPY_WINDOW:
            continue
        base = rs[:FPY_WINDOW]
        p0 = (sum(r.failed for r in base) + 1) / (FPY_WINDOW + 2)
        state = False
        for i in range(2 * FPY_WINDOW - 1, len(rs)):
            window = rs[i - FPY_WINDOW + 1:i + 1]
            fails = sum(r.failed for r in window)
            tail = binomial_tail(fails, FPY_WINDOW, p0)
            now = tail < FPY_ALPHA or (state and tail < FPY_CLEAR)
            if now != state and rs[i].event_id in new:
                out.append(RateFinding(station, now, rs[i], {
                    "first_pass_yield": round(1 - fails / FPY_WINDOW, 4),
                    "baseline_yield": round(1 - p0, 4), "window": FPY_WINDOW,
                    "failures": fails, "p_value": tail}))
            state = now
    return out


def p_chart_findings(station_type: str, results: Sequence[Result], new: set[str]
                     ) -> list[RateFinding]:
    """p-chart changes of state at the subgroups completed by `new` event ids."""
    n = P_SUBGROUP
    groups = [results[i:i + n] for i in range(0, len(results) - n + 1, n)]
    if len(groups) <= P_BASELINE:
        return []
    # smoothed like the yield's p0: a baseline without a defect must not give a zero limit
    p_bar = (sum(r.failed for g in groups[:P_BASELINE] for r in g) + 1) / (n * P_BASELINE + 2)
    limit = next(d for d in range(n + 2) if d > n or binomial_tail(d, n, p_bar) < P_ALPHA)
    ucl = limit / n  # the smallest defect fraction out of control
    out: list[RateFinding] = []
    state = False
    for g in groups[P_BASELINE:]:
        p = sum(r.failed for r in g) / n
        now = p >= ucl
        if now != state and g[-1].event_id in new:
            out.append(RateFinding(station_type, now, g[-1], {
                "defect_rate": round(p, 4), "p_bar": round(p_bar, 4), "ucl": round(ucl, 4),
                "subgroup": n}))
        state = now
    return out
