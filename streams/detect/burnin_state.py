"""The burn-in anomaly detectors' plain data: condition names, thresholds (`Limits`), the
per-run state (`RunState`, one `GpuTrack` per GPU) and the peer statistics they use.

Split from `burnin_anomaly` (the rules) so each stays readable; `burnin_anomaly` re-exports
what callers need. Everything here is plain data or a pure function.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event

PEER = "burnin.peer_deviation"
POWER_CLOCK = "burnin.power_clock_deviation"
HEADROOM = "burnin.thermal_headroom"
RISE = "burnin.temp_rise"
SBE = "burnin.ecc_sbe"
GAP = "burnin.telemetry_gap"
MISSING = "burnin.gpu_missing"
DRIFT = "burnin.drift"
TYPES = frozenset({"burnin.run", "burnin.telemetry"})
MAD_SCALE = 0.6745  # robust z = 0.6745 (x - median) / MAD (Iglewicz and Hoaglin)
D2 = 1.128  # moving range of 2 -> sigma


@dataclass(frozen=True)
class Limits:
    """The thresholds (DOMAIN.md §4 estimates, to be tuned per SKU)."""

    loaded_util_pct: float = 90.0
    settle_s: float = 60.0
    peer_dev_c: float = 8.0
    peer_z: float = 3.5
    mad_floor_c: float = 1.5
    peer_hold_s: float = 60.0
    deadband_c: float = 1.0
    min_siblings: int = 3
    pc_rel: float = 0.10
    pc_clear_rel: float = 0.08
    pc_hold_s: float = 10.0
    headroom_c: float = 5.0
    rise_c: float = 5.0
    rise_window_s: float = 10.0
    rise_power_rel: float = 0.10
    gap_s: float = 5.0
    drift_lambda: float = 0.2
    drift_l: float = 3.0
    drift_k: float = 0.5
    drift_h: float = 5.0
    drift_base_n: int = 120
    drift_sigma_floor_c: float = 1.5


LIMITS = Limits()


@dataclass
class GpuTrack:
    """One GPU's running figures in a run."""

    serial: str
    last_seen: float
    sbe_base: int
    sbe_new: int = 0
    hot_since: float | None = None
    pc_since: float | None = None
    window: deque[tuple[float, float, float]] = field(default_factory=deque)  # t, temp, power
    base_n: int = 0
    base_sum: float = 0.0
    mr_sum: float = 0.0
    last_resid: float | None = None
    mu: float = 0.0
    sigma: float = 0.0
    ewma: float = 0.0
    cusum_hi: float = 0.0
    cusum_lo: float = 0.0
    on: set[str] = field(default_factory=set)  # conditions active on this GPU

    def reset_drift(self) -> None:
        self.base_n, self.base_sum, self.mr_sum, self.last_resid = 0, 0.0, 0.0, None
        self.cusum_hi = self.cusum_lo = 0.0


@dataclass
class RunState:
    """Everything the detectors know about one run; a fold of its events (`rebuild`)."""

    run_id: str
    serial: str
    station: str = ""
    slowdown_c: float | None = None
    expected: dict[int, str] = field(default_factory=dict)  # inventory: index -> GPU serial
    started: float | None = None
    ended: bool = False
    last_time: float | None = None  # event time of the run's last event folded (epoch s)
    last_event: str = ""  # its id
    last_seq: int = -1  # its stationseq
    steady_since: float | None = None
    reporting: int = 0  # GPUs in the last telemetry event
    gpus: dict[int, GpuTrack] = field(default_factory=dict)
    active: dict[str, str] = field(default_factory=dict)  # subject\0condition -> condition
    subjects: dict[int, str] = field(default_factory=dict, compare=False, repr=False)

    def is_active(self, condition: str, subject: str) -> bool:
        return f"{subject}\x00{condition}" in self.active


def run_id_of(event: Event) -> str | None:
    body = event.body
    if isinstance(body, (b.BurninTelemetry, b.BurninRun)):
        return str(body.run_id)
    return None


def new_state(event: Event) -> RunState:
    return RunState(run_id=run_id_of(event) or "", serial=event.subject, station=event.source)


def when(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


def sib_median(ordered: list[float], rank: int) -> float:
    """Median of `ordered` (sorted) without the element at `rank`."""
    m = len(ordered) - 1
    k = m // 2
    hi = ordered[k] if k < rank else ordered[k + 1]
    if m % 2:
        return hi
    lo = ordered[k - 1] if k - 1 < rank else ordered[k]
    return (lo + hi) / 2


def ranks(values: list[float]) -> tuple[list[float], list[int]]:
    """`values` sorted, and each value's position in that order (one sort for 8 medians)."""
    order = sorted(range(len(values)), key=values.__getitem__)
    rank = [0] * len(values)
    for j, i in enumerate(order):
        rank[i] = j
    return [values[i] for i in order], rank


def median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def sd_without(values: list[float], skip: int) -> float:
    """Population standard deviation of `values` without the one at `skip`."""
    n = len(values) - 1
    mean = (sum(values) - values[skip]) / n
    ss = sum((v - mean) ** 2 for k, v in enumerate(values) if k != skip)
    return math.sqrt(ss / n)
