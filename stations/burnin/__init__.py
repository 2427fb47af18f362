"""The burn-in runner (`linetrace burnin`): GPU telemetry, XIDs and stress results of one unit.

`run_burnin(unit, backend, client, ...)` drives a `GpuBackend` and emits the burn-in events of
DOMAIN.md §4 through anything with `StationClient.emit`'s signature. Backends: `NvmlBackend`
(real GPUs; pynvml from the `[gpu]` extra is imported only when one is constructed, CuPy (or
torch) only for the GEMM stress load) and `SimulatedBaseboard` (8 GPUs on a `SimClock`, with the
faults of DOMAIN.md §9).
"""

from __future__ import annotations

from .backend import (
    FATAL_XIDS, HARD_FAIL_CLOCK_BITS, HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_THERMAL,
    GemmResult, GpuBackend, GpuInfo, PlatformInfo, StressReport, XidEvent,
)
from .clock import Clock, SimClock, WallClock
from .nvml import NvmlBackend
from .results import InventoryCheck, RunRecord, burnin_tests
from .runner import BurninSummary, Emitter, run_burnin
from .simulated import FAULTS, SimulatedBaseboard
from .sku import SKUS, SkuSpec

__all__ = [
    "FATAL_XIDS", "FAULTS", "HARD_FAIL_CLOCK_BITS", "HW_POWER_BRAKE", "HW_SLOWDOWN", "HW_THERMAL",
    "SKUS", "SW_THERMAL", "BurninSummary", "Clock", "Emitter", "GemmResult", "GpuBackend",
    "GpuInfo", "InventoryCheck", "NvmlBackend", "PlatformInfo", "RunRecord", "SimClock",
    "SimulatedBaseboard", "SkuSpec", "StressReport", "WallClock", "XidEvent", "burnin_tests",
    "run_burnin",
]

