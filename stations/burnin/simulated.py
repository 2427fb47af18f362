"""A simulated 8-GPU baseboard: thermal inertia, power following load, throttling, faults.

Physics (all constants are our estimates, tuned so a clean run looks like a healthy HGX board):
power follows the load with a 1 s first-order lag; each GPU's temperature follows
`inlet + R_th * power` with a 20 s time constant (cold-plate thermal mass), so a step in load
shows as an exponential rise, not a jump. Within `SW_THERMAL_MARGIN_C` of the SKU's slowdown
threshold the software thermal controller lowers the SM clock (`SW_THERMAL` 0x20), which lowers
power and so temperature; at the threshold the hardware halves the clock (`HW_SLOWDOWN` 0x8 |
`HW_THERMAL` 0x40). A power demand above 105 % of the limit asserts the power brake (0x80), above
100 % the software power cap (0x4). PCIe trains down to gen 1 at idle.

Faults (DOMAIN.md §9), each on one GPU drawn from the seed, each leaving only its evidence:
`hot-gpu`: the GPU's thermal resistance is 1.35x its siblings' from the start (>= 8 C hotter at
steady load), and from the fault time it keeps degrading until throttle bits appear (allow about
`fault_after_s + 90` s of load); `ecc-dbe`: its `ecc_dbe_vol` rises by one at the fault time;
`fatal-xid`: XID 79 at the fault time; `gpu-off-bus`: from the fault time it answers nothing
(no sample, no XID) while its siblings go on.

Variation (the line simulator's `@vary` and near misses; each default keeps the behaviour
above): `fault_onsets` gives each fault its own time after the load starts; `hot_gpu_delta`
sets how far above its siblings' median the hot GPU runs at steady load before it degrades
(computed from the drawn siblings, so it is exact); `warm_gpus` makes GPUs run a steady
`delta` C above that median without degrading (a near miss: 5-7 C is not a fault);
`dbe_count` and `xid` set what `ecc-dbe` and `fatal-xid` report.

Everything runs on the given clock and one `random.Random(seed)`: the same seed and the same
calls give the same samples.
"""

from __future__ import annotations

import math
import random
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from linetrace.schemas.bodies import GpuSample, Thresholds

from ..errors import StationError
from .backend import (
    GPU_IDLE, HW_POWER_BRAKE, HW_SLOWDOWN, HW_THERMAL, SW_POWER_CAP, SW_THERMAL, GemmResult,
    GpuInfo, PlatformInfo, StressReport, XidEvent,
)
from .clock import Clock
from .sku import DEFAULT_SKU, sku_named

FAULTS = ("hot-gpu", "ecc-dbe", "fatal-xid", "gpu-off-bus")

INLET_C = 30.0  # baseboard inlet air/coolant (estimate)
LOAD_RISE_C = 36.0  # steady rise above inlet at full load (estimate)
TAU_THERMAL_S = 20.0
TAU_MEM_THERMAL_S = 30.0
TAU_POWER_S = 1.0
SW_THERMAL_MARGIN_C = 5.0
IDLE_POWER_FRACTION = 0.10
LOAD_POWER_FRACTION = 0.90
HOT_GPU_RESISTANCE = 1.35
HOT_GPU_RAMP_PER_S = 0.005
HOT_GPU_MAX_RESISTANCE = 1.9
GEMM_PER_S = 40.0  # GEMM iterations per second at full clock
SBE_PER_S = 2e-6  # natural rates: a clean run normally shows none of these
PCIE_REPLAY_PER_S = 2e-4
NVLINK_CRC_PER_S = 0.02
STEP_S = 1.0  # integration step of the physics (exact for first-order lags)
SIM_DRIVER = "570.133.20"
SIM_VBIOS = "97.00.88.00.0F"
_UUID_NS = uuid.UUID("0c5b2f9e-2a43-5d6f-8e1b-6275726e696e")


@dataclass
class _Gpu:
    index: int
    serial: str
    uuid: str
    r_th: float  # C per W
    inlet_c: float
    efficiency: float  # load power relative to the nominal
    perf: float  # GFLOPS relative to the SKU floor at full clock
    temp_c: float
    mem_temp_c: float
    power_w: float
    clock_factor: float = 1.0
    reasons: int = GPU_IDLE
    ecc_sbe: int = 0
    ecc_dbe: int = 0
    pcie_replay: int = 0
    nvlink_crc: int = 0
    on_bus: bool = True
    gemm_iterations: float = 0.0
    clock_seconds: float = 0.0
    load_seconds: float = 0.0


class SimulatedBaseboard:
    """A `GpuBackend` for an N-GPU (default 8) baseboard of one SKU, on a simulated clock."""

    def __init__(
        self,
        clock: Clock,
        *,
        serials: Sequence[str] | None = None,
        sku: str = DEFAULT_SKU,
        seed: int = 0,
        faults: Iterable[str] = (),
        fault_after_s: float = 60.0,
        fault_gpus: Mapping[str, int] | None = None,
        fault_onsets: Mapping[str, float] | None = None,
        hot_gpu_delta: float | None = None,
        warm_gpus: Mapping[int, float] | None = None,
        dbe_count: int = 1,
        xid: int = 79,
    ) -> None:
        self.sku = sku_named(sku)
        self.clock = clock
        self.seed = seed
        self.fault_after_s = fault_after_s
        self._rng = random.Random(seed)
        serials = list(serials) if serials is not None else [
            f"SIMGPU-{seed}-{i}" for i in range(8)]
        if not 1 <= len(serials) <= 64 or len(set(serials)) != len(serials):
            raise StationError(f"a baseboard needs 1..64 distinct GPU serials, got {serials}",
                               code="burnin.invalid_config")
        self.faults = tuple(dict.fromkeys(f for f in faults if f != "none"))
        unknown = [f for f in self.faults if f not in FAULTS]
        if unknown:
            raise StationError(f"unknown burn-in fault(s) {', '.join(unknown)}; known: "
                               f"{', '.join(FAULTS)} (or none)", code="burnin.unknown_fault")
        r_nominal = LOAD_RISE_C / (LOAD_POWER_FRACTION * self.sku.power_w)
        idle_w = IDLE_POWER_FRACTION * self.sku.power_w
        self._gpus: list[_Gpu] = []
        for i, serial in enumerate(serials):
            inlet = INLET_C + self._rng.uniform(-1.5, 1.5)
            r_th = r_nominal * self._rng.uniform(0.97, 1.03)
            self._gpus.append(_Gpu(
                index=i, serial=serial, uuid=f"GPU-{uuid.uuid5(_UUID_NS, serial)}", r_th=r_th,
                inlet_c=inlet, efficiency=self._rng.uniform(0.98, 1.02),
                perf=self._rng.uniform(1.0, 1.06), temp_c=inlet + r_th * idle_w,
                mem_temp_c=inlet + 2 + r_th * idle_w, power_w=idle_w))
        given = dict(fault_gpus or {})
        #: fault name -> GPU index it strikes (drawn from the seed unless given).
        self.fault_gpus: dict[str, int] = {
            f: given[f] if f in given else self._rng.randrange(len(self._gpus)) for f in FAULTS
            if f in self.faults}
        self.fault_onsets = dict(fault_onsets or {})
        self.dbe_count, self.xid = dbe_count, xid
        #: GPU index -> thermal resistance multiplier (a warm GPU; the hot GPU's start).
        self._mult: dict[int, float] = {i: self._multiplier(i, d)
                                        for i, d in (warm_gpus or {}).items()}
        self._hot_mult = HOT_GPU_RESISTANCE
        if hot_gpu_delta is not None and "hot-gpu" in self.fault_gpus:
            self._hot_mult = self._multiplier(self.fault_gpus["hot-gpu"], hot_gpu_delta)
        self._t = 0.0  # simulated seconds since construction
        self._last = clock.now()
        self._load_since: float | None = None
        self._fired: set[str] = set()
        self._xids: list[XidEvent] = []
        self._counters: dict[int, dict[str, int]] = {}

    def _steady_c(self, g: _Gpu) -> float:
        """The GPU's temperature at steady full load, unthrottled (its own resistance)."""
        return g.inlet_c + g.r_th * LOAD_POWER_FRACTION * self.sku.power_w * g.efficiency

    def _multiplier(self, index: int, delta: float) -> float:
        """The resistance multiplier that puts GPU `index` `delta` C above the median of its
        siblings' steady temperatures (no random draw: the board's draws are unchanged)."""
        g = self._gpus[index]
        others = sorted(self._steady_c(o) for o in self._gpus if o.index != index)
        mid = len(others) // 2
        median = others[mid] if len(others) % 2 else (others[mid - 1] + others[mid]) / 2
        rise = g.r_th * LOAD_POWER_FRACTION * self.sku.power_w * g.efficiency
        return max(0.5, (median + delta - g.inlet_c) / rise)

    # --- GpuBackend ---------------------------------------------------------------------

    @property
    def xid_supported(self) -> bool:
        return True

    @property
    def stress_available(self) -> bool:
        return True

    def inventory(self) -> list[GpuInfo]:
        return [GpuInfo(index=g.index, serial=g.serial, uuid=g.uuid, board_pn=self.sku.board_pn,
                        pcie_gen_max=self.sku.pcie_gen, pcie_width_max=self.sku.pcie_width)
                for g in self._gpus]

    def platform(self) -> PlatformInfo:
        s = self.sku
        return PlatformInfo(
            sku=s.name, driver=SIM_DRIVER, vbios=SIM_VBIOS, power_limit_w=s.power_w,
            thresholds=Thresholds(slowdown_c=s.slowdown_c, shutdown_c=s.shutdown_c,
                                  max_operating_c=s.max_operating_c))

    def start_load(self) -> None:
        self._advance()
        if self._load_since is None:
            self._load_since = self._t

    def stop_load(self) -> StressReport:
        self._advance()
        if self._load_since is None:
            return StressReport(available=True, engine="simulated", note="no load was started")
        self._load_since = None
        results = []
        for g in self._gpus:
            mean_clock = g.clock_seconds / g.load_seconds if g.load_seconds else 0.0
            results.append(GemmResult(
                gpu_index=g.index, iterations=int(g.gemm_iterations),
                gflops=round(self.sku.gflops_floor * g.perf * mean_clock, 1),
                error=None if g.on_bus else "GPU is lost (fell off the bus)"))
        return StressReport(available=True, engine="simulated", gpus=results)

    def sample(self, *, counters: bool = True) -> list[GpuSample]:
        self._advance()
        loading = self._load_since is not None
        s, rng = self.sku, self._rng
        out = []
        for g in self._gpus:
            if not g.on_bus:
                continue
            if counters or g.index not in self._counters:
                self._counters[g.index] = {
                    "ecc_sbe_vol": g.ecc_sbe, "ecc_dbe_vol": g.ecc_dbe,
                    "pcie_replay": g.pcie_replay, "nvlink_crc": g.nvlink_crc}
            temp = float(round(g.temp_c + rng.gauss(0, 0.3)))
            clock = s.sm_clock_max_mhz * g.clock_factor if loading else s.sm_clock_idle_mhz
            out.append(GpuSample(
                gpu_index=g.index, gpu_serial=g.serial, gpu_uuid=g.uuid, temp_c=temp,
                mem_temp_c=float(round(g.mem_temp_c + rng.gauss(0, 0.3))),
                temp_margin_c=s.slowdown_c - temp,
                power_w=round(max(0.0, g.power_w * (1 + rng.gauss(0, 0.005))), 1),
                sm_clock_mhz=float(round(clock / 15) * 15),
                mem_clock_mhz=float(s.mem_clock_mhz),
                util_pct=100.0 if loading else 0.0, clocks_event_reasons=g.reasons,
                pcie_gen=s.pcie_gen if loading else 1, pcie_width=s.pcie_width,
                nvlink_links_up=s.nvlink_links, **self._counters[g.index]))
        return out

    def xid_events(self) -> list[XidEvent]:
        self._advance()
        out, self._xids = self._xids, []
        return out

    def close(self) -> None:
        pass

    # --- physics ------------------------------------------------------------------------

    def _advance(self) -> None:
        """Integrate from the last observation up to the clock's now, in STEP_S steps."""
        now = self.clock.now()
        remaining = (now - self._last).total_seconds()
        self._last = now
        while remaining > 1e-9:
            dt = min(STEP_S, remaining)
            remaining -= dt
            self._t += dt
            self._fire_faults()
            for g in self._gpus:
                if g.on_bus:
                    self._step(g, dt)

    def _fault_time(self, fault: str = "hot-gpu") -> float | None:
        after = self.fault_onsets.get(fault, self.fault_after_s)
        return None if self._load_since is None else self._load_since + after

    def _fire_faults(self) -> None:
        for fault in self.faults:
            if fault in self._fired or fault == "hot-gpu":
                continue
            t_on = self._fault_time(fault)
            if t_on is None or self._t < t_on:
                continue
            self._fired.add(fault)
            g = self._gpus[self.fault_gpus[fault]]
            if fault == "ecc-dbe":
                g.ecc_dbe += self.dbe_count
            elif fault == "fatal-xid":
                what = "GPU has fallen off the bus." if self.xid == 79 else "fatal error."
                self._xids.append(XidEvent(
                    gpu_index=g.index, xid=self.xid, recovery_action="drain the node and reboot",
                    raw=f"NVRM: Xid (PCI:0000:{0x18 + 0x10 * g.index:02x}:00): {self.xid}, "
                        f"pid=0, {what}"))
            elif fault == "gpu-off-bus":
                g.on_bus = False

    def _resistance(self, g: _Gpu) -> float:
        if "hot-gpu" not in self.faults or self.fault_gpus["hot-gpu"] != g.index:
            return g.r_th * self._mult[g.index] if g.index in self._mult else g.r_th
        mult = self._hot_mult
        t_on = self._fault_time()
        if t_on is not None and self._t > t_on:
            mult = min(HOT_GPU_MAX_RESISTANCE, mult + HOT_GPU_RAMP_PER_S * (self._t - t_on))
        return g.r_th * mult

    def _step(self, g: _Gpu, dt: float) -> None:
        s, rng = self.sku, self._rng
        load = 1.0 if self._load_since is not None else 0.0
        factor, reasons = 1.0, 0 if load else GPU_IDLE
        sw_at = s.slowdown_c - SW_THERMAL_MARGIN_C
        if load and g.temp_c >= s.slowdown_c:
            factor, reasons = 0.5, reasons | HW_SLOWDOWN | HW_THERMAL
        elif load and g.temp_c >= sw_at:
            factor, reasons = max(0.6, 1 - 0.1 * (g.temp_c - sw_at)), reasons | SW_THERMAL
        idle_w = IDLE_POWER_FRACTION * s.power_w
        demand = idle_w + load * (LOAD_POWER_FRACTION * s.power_w * g.efficiency - idle_w) * factor
        if demand > 1.05 * s.power_w:
            factor, reasons = min(factor, 0.5), reasons | HW_POWER_BRAKE
            demand = idle_w + (demand - idle_w) * 0.5
        elif demand > s.power_w:
            demand, reasons = s.power_w, reasons | SW_POWER_CAP
        g.power_w += (demand - g.power_w) * (1 - math.exp(-dt / TAU_POWER_S))
        rise = self._resistance(g) * g.power_w
        g.temp_c += (g.inlet_c + rise - g.temp_c) * (1 - math.exp(-dt / TAU_THERMAL_S))
        g.mem_temp_c += (g.inlet_c + 2 + 1.1 * rise - g.mem_temp_c) * (
            1 - math.exp(-dt / TAU_MEM_THERMAL_S))
        g.clock_factor, g.reasons = factor, reasons
        if load:
            g.gemm_iterations += GEMM_PER_S * factor * dt
            g.clock_seconds += factor * dt
            g.load_seconds += dt
        if rng.random() < SBE_PER_S * dt:
            g.ecc_sbe += 1
        if load and rng.random() < PCIE_REPLAY_PER_S * dt:
            g.pcie_replay += 1
        if load and s.nvlink_links and rng.random() < NVLINK_CRC_PER_S * dt:
            g.nvlink_crc += 1
