"""The station's own burn-in test results (`unit.tested`, method Burnin), from plain data.

`RunRecord` folds every telemetry sample of a run into per-GPU figures; `burnin_tests` turns
them, the inventory check and the stress report into `TestResult`s following the hard-fail
rules of DOMAIN.md §4. linetrace still decides the unit's verdict from the raw telemetry; these
results are what the station itself measured, with their limits, so a person reading the ledger
sees why a run failed. Peer-deviation anomalies are alerts downstream, not results here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from linetrace.schemas.bodies import GpuSample, Measurement, TestResult

from .backend import HARD_FAIL_CLOCK_BITS, GpuInfo, PlatformInfo, StressReport, XidEvent

UNDER_LOAD_UTIL_PCT = 50.0  # a sample counts as "under load" from this utilisation
SBE_LIMIT = 10  # new single-bit ECC errors in a run (more fails)
PCIE_REPLAY_LIMIT = 80  # per test
NVLINK_CRC_PER_S_LIMIT = 100.0


@dataclass
class GpuRecord:
    """What one GPU showed over the run (counters: first and last reading)."""

    samples: int = 0
    loaded: int = 0
    temp_max: float = float("-inf")
    margin_min: float | None = None
    power_sum: float = 0.0
    clock_sum: float = 0.0
    hard_clock_samples: int = 0
    clock_bits: int = 0
    pcie_gen_min: int | None = None
    pcie_width_min: int | None = None
    first: GpuSample | None = None
    last: GpuSample | None = None

    def add(self, s: GpuSample) -> None:
        self.samples += 1
        self.first = self.first or s
        self.last = s
        self.temp_max = max(self.temp_max, s.temp_c)
        if s.temp_margin_c is not None:
            self.margin_min = s.temp_margin_c if self.margin_min is None else min(
                self.margin_min, s.temp_margin_c)
        if s.util_pct < UNDER_LOAD_UTIL_PCT:
            return
        self.loaded += 1
        self.power_sum += s.power_w
        self.clock_sum += s.sm_clock_mhz
        if s.clocks_event_reasons & HARD_FAIL_CLOCK_BITS:
            self.hard_clock_samples += 1
            self.clock_bits |= s.clocks_event_reasons & HARD_FAIL_CLOCK_BITS
        if s.pcie_gen is not None:
            self.pcie_gen_min = min(self.pcie_gen_min or s.pcie_gen, s.pcie_gen)
        if s.pcie_width is not None:
            self.pcie_width_min = min(self.pcie_width_min or s.pcie_width, s.pcie_width)

    def delta(self, name: str) -> int:
        if self.first is None or self.last is None:
            return 0
        return max(0, int(getattr(self.last, name)) - int(getattr(self.first, name)))


@dataclass
class RunRecord:
    """Every telemetry event of a run, folded per GPU index."""

    intervals: int = 0
    seconds: float = 0.0
    gpus: dict[int, GpuRecord] = field(default_factory=dict)

    def add(self, samples: Sequence[GpuSample]) -> None:
        self.intervals += 1
        for s in samples:
            self.gpus.setdefault(s.gpu_index, GpuRecord()).add(s)


@dataclass(frozen=True)
class InventoryCheck:
    """Installed serials (step 60) against what the backend reports."""

    expected: tuple[str, ...] | None
    found: tuple[str, ...]

    @property
    def missing(self) -> list[str]:
        return [s for s in self.expected or () if s not in self.found]

    @property
    def unexpected(self) -> list[str]:
        return [] if self.expected is None else [s for s in self.found if s not in self.expected]

    @property
    def ok(self) -> bool:
        return self.expected is None or (not self.missing and not self.unexpected
                                         and len(self.found) == len(self.expected))


def _m(name: str, value: float, unit: str, *, expected: float | None = None,
       min: float | None = None, max: float | None = None) -> Measurement:  # noqa: A002
    return Measurement(name=name, value=value, unit=unit, expected=expected, min=min, max=max)


def _within(ms: list[Measurement]) -> bool:
    return all((m.min is None or m.value >= m.min) and (m.max is None or m.value <= m.max)
               for m in ms)


def _test(name: str, ms: list[Measurement], failed: bool | None = None) -> TestResult:
    bad = not _within(ms) if failed is None else failed
    return TestResult(name=name, result="Failed" if bad else "Passed", measurements=ms)


def burnin_tests(record: RunRecord, inventory: Sequence[GpuInfo], platform: PlatformInfo,
                 check: InventoryCheck, xids: Sequence[XidEvent], xid_supported: bool,
                 stress: StressReport) -> list[TestResult]:
    tests: list[TestResult] = []
    inv = [_m("gpu_count", len(check.found), "count")]
    if check.expected is None:
        tests.append(TestResult(name="inventory", result="Skipped", measurements=inv))
    else:
        e = len(check.expected)
        inv = [_m("gpu_count", len(check.found), "count", expected=e, min=e, max=e),
               _m("installed_serials_absent", len(check.missing), "count", max=0),
               _m("unexpected_serials", len(check.unexpected), "count", max=0)]
        tests.append(_test("inventory", inv, failed=not check.ok))

    presence = [_m(f"gpu{g.index}.samples_missing",
                   record.intervals - record.gpus.get(g.index, GpuRecord()).samples, "count",
                   max=0) for g in inventory]
    tests.append(_test("gpu_presence", presence))

    fatal = sum(x.fatal for x in xids)
    xm = [_m("xid_fatal", fatal, "count", max=0), _m("xid_other", len(xids) - fatal, "count",
                                                      max=0)]
    tests.append(_test("xid", xm) if xid_supported or xids else
                 TestResult(name="xid", result="Skipped", measurements=xm))

    ecc: list[Measurement] = []
    thermal: list[Measurement] = []
    no_margin = False  # DOMAIN.md §4: thermal margin <= 0 fails (a limit here is inclusive)
    link: list[Measurement] = []
    perf: list[Measurement] = []
    t = platform.thresholds
    limit_c = None if t is None else (t.max_operating_c or t.shutdown_c)
    for g in inventory:
        r = record.gpus.get(g.index)
        if r is None or r.last is None:
            continue
        p = f"gpu{g.index}."
        ecc += [_m(p + "ecc_dbe_new", r.delta("ecc_dbe_vol"), "count", max=0),
                _m(p + "ecc_sbe_new", r.delta("ecc_sbe_vol"), "count", max=SBE_LIMIT),
                _m(p + "remap_pending", r.last.remap_pending, "count", max=0),
                _m(p + "remap_failed", r.last.remap_failed, "count", max=0)]
        thermal += [_m(p + "temp_max", r.temp_max, "C", max=limit_c),
                    _m(p + "hard_throttle_samples", r.hard_clock_samples, "count", max=0)]
        if r.margin_min is not None:
            thermal.append(_m(p + "temp_margin_min", r.margin_min, "C", min=0))
            no_margin = no_margin or r.margin_min <= 0
        if r.clock_bits:
            thermal.append(_m(p + "hard_throttle_bits", r.clock_bits, "bitmask", max=0))
        seconds = max(record.seconds, 1.0)
        link += [_m(p + "pcie_replay", r.delta("pcie_replay"), "count", max=PCIE_REPLAY_LIMIT),
                 _m(p + "nvlink_crc_per_s", round(r.delta("nvlink_crc") / seconds, 3), "1/s",
                    max=NVLINK_CRC_PER_S_LIMIT),
                 _m(p + "nvlink_recovery", r.delta("nvlink_recovery"), "count", max=0)]
        if r.pcie_gen_min is not None and g.pcie_gen_max:
            link.append(_m(p + "pcie_gen_under_load", r.pcie_gen_min, "gen",
                           expected=g.pcie_gen_max, min=g.pcie_gen_max))
        if r.pcie_width_min is not None and g.pcie_width_max:
            link.append(_m(p + "pcie_width_under_load", r.pcie_width_min, "lanes",
                           expected=g.pcie_width_max, min=g.pcie_width_max))
        if r.loaded:
            perf += [_m(p + "power_mean", round(r.power_sum / r.loaded, 1), "W",
                        max=platform.power_limit_w),
                     _m(p + "sm_clock_mean", round(r.clock_sum / r.loaded), "MHz")]
    tests += [_test("ecc", ecc), _test("thermal", thermal, not _within(thermal) or no_margin),
              _test("interconnect", link), _gemm_test(stress),
              # informational: the GEMM is fp32, not DCGM's own kernel, so no SKU floor applies
              TestResult(name="stress_summary", result="Passed",
                         measurements=perf + _gflops(stress))]
    return tests


def _gemm_test(stress: StressReport) -> TestResult:
    if not stress.available:
        return TestResult(name="gemm_bit_exact", result="Skipped")
    ms: list[Measurement] = []
    for g in stress.gpus:
        p = f"gpu{g.gpu_index}."
        ms += [_m(p + "gemm_iterations", g.iterations, "count", min=2),
               _m(p + "gemm_mismatches", g.mismatches, "count", max=0),
               _m(p + "gemm_nan", g.nan_results, "count", max=0)]
    errored = any(g.error for g in stress.gpus)
    if not _within(ms) or not stress.gpus:
        return TestResult(name="gemm_bit_exact", result="Failed", measurements=ms)
    return TestResult(name="gemm_bit_exact", result="Error" if errored else "Passed",
                      measurements=ms)


def _gflops(stress: StressReport) -> list[Measurement]:
    return [_m(f"gpu{g.gpu_index}.gemm_gflops", g.gflops, "GFLOPS")
            for g in stress.gpus if g.gflops is not None]


def overall(tests: Sequence[TestResult]) -> Literal["Passed", "Failed", "Error"]:
    results = {t.result for t in tests}
    return "Failed" if "Failed" in results else "Error" if "Error" in results else "Passed"
