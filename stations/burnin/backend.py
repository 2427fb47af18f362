"""What a burn-in runner needs from the GPUs of one unit: the `GpuBackend` interface.

Two backends implement it: `NvmlBackend` (real GPUs through NVML, plus a GEMM stress load) and
`SimulatedBaseboard` (an 8-GPU baseboard on a simulated clock, with injectable faults). The
runner only talks to this interface, so the same code emits a real server's evidence and the
simulator's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from linetrace.schemas.bodies import GpuInventory, GpuSample, Thresholds

# Clock event reasons (NVML `nvmlClocksEventReason*`); DOMAIN.md §4 hard-fails the four last.
GPU_IDLE = 0x1
SW_POWER_CAP = 0x4
HW_SLOWDOWN = 0x8
SW_THERMAL = 0x20
HW_THERMAL = 0x40
HW_POWER_BRAKE = 0x80
#: Bits that fail burn-in when they appear under load (DOMAIN.md §4).
HARD_FAIL_CLOCK_BITS = HW_SLOWDOWN | SW_THERMAL | HW_THERMAL | HW_POWER_BRAKE

#: XIDs that fail burn-in outright (DOMAIN.md §4, after DCGM and NVSentinel; 92 and 94 are our
#: estimate for burn-in). Any other XID fails pending review.
FATAL_XIDS = frozenset(
    {46, 48, 62, 64, 74, 79, 95, 109, 119, 120, 136, 140, *range(143, 151), 155, 156, 158, 92, 94}
)


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the backend sees it at the start of a run."""

    index: int
    serial: str
    uuid: str
    board_pn: str | None = None
    pcie_gen_max: int | None = None  # what the link should train to under load
    pcie_width_max: int | None = None

    def inventory(self) -> GpuInventory:
        return GpuInventory(gpu_index=self.index, serial=self.serial, uuid=self.uuid,
                            board_pn=self.board_pn)


@dataclass(frozen=True)
class PlatformInfo:
    """Once per run (`burnin.run` start): versions, thresholds, power limit, SKU."""

    sku: str | None
    driver: str | None
    vbios: str | None
    thresholds: Thresholds | None
    power_limit_w: float | None


@dataclass(frozen=True)
class XidEvent:
    """One XID the driver reported for a GPU."""

    gpu_index: int
    xid: int
    raw: str = ""
    recovery_action: str | None = None

    @property
    def fatal(self) -> bool:
        return self.xid in FATAL_XIDS


@dataclass(frozen=True)
class GemmResult:
    """The stress load's outcome on one GPU: every result compared bit for bit with the first."""

    gpu_index: int
    iterations: int
    mismatches: int = 0
    nan_results: int = 0
    gflops: float | None = None
    error: str | None = None


@dataclass(frozen=True)
class StressReport:
    """What `stop_load` returns. `available` False: the backend had no stress load to run."""

    available: bool
    engine: str | None = None  # torch, cupy, simulated
    gpus: list[GemmResult] = field(default_factory=list)
    note: str | None = None


class GpuBackend(Protocol):
    """The GPUs of one unit under burn-in.

    `sample` returns one `GpuSample` per GPU that answered (a GPU that fell off the bus is simply
    absent); `counters=False` lets the backend reuse its last counter readings (ECC, remap, PCIe
    replay, NVLink), which DOMAIN.md §4 reads every 10 s rather than every second.
    `xid_events` never blocks. `stop_load` is safe to call when no load runs.
    """

    @property
    def xid_supported(self) -> bool:
        """Whether this platform can deliver XID events at all (else none ever arrive)."""
        ...

    @property
    def stress_available(self) -> bool: ...

    def inventory(self) -> list[GpuInfo]: ...

    def platform(self) -> PlatformInfo: ...

    def sample(self, *, counters: bool = True) -> list[GpuSample]: ...

    def xid_events(self) -> list[XidEvent]: ...

    def start_load(self) -> None: ...

    def stop_load(self) -> StressReport: ...

    def close(self) -> None: ...
