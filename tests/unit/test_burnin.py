"""The burn-in runner on the simulated baseboard (and NVML through a stand-in library), no broker.

The emitter here is an in-memory recorder with StationClient.emit's signature; it encodes every
event with the one canonical encoder, which refuses anything ingest would dead-letter.
"""

from __future__ import annotations

import asyncio
import sys
from datetime import UTC, datetime, timedelta
from functools import cache
from statistics import median
from types import SimpleNamespace
from typing import Any

import pytest

from linetrace.schemas.bodies import Body, BurninRun, BurninTelemetry, BurninXid, GpuSample
from linetrace.schemas.bodies import TestResult as Result  # not a pytest class
from linetrace.schemas.bodies import UnitTested
from linetrace.schemas.envelope import Event, decode_event, encode_event, parse_time
from linetrace.stations.burnin import (
    HARD_FAIL_CLOCK_BITS, SW_THERMAL, BurninSummary, NvmlBackend, SimClock, SimulatedBaseboard,
    WallClock, run_burnin,
)
from linetrace.stations.burnin.simulated import LOAD_POWER_FRACTION
from linetrace.stations.errors import StationError

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
UNIT = "SRV-S7-000001"
SERIALS = tuple(f"GPU-S7-{i:06d}" for i in range(1, 9))
RUN_ID = "6c1b7e0a-3f2d-4e5a-9b8c-7d6e5f4a3b2c"


class Recorder:
    """An in-memory emitter: what a StationClient would send, decoded back."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        value = encode_event(event_type=event_type, source="burnin-02", subject=subject,
                             body=body, time=time, event_id=event_id,
                             stationseq=len(self.events) + 1)
        self.events.append(decode_event(value))
        return value

    def of(self, event_type: str) -> list[Event]:
        return [e for e in self.events if e.type == event_type]

    def telemetry(self) -> list[list[GpuSample]]:
        out = []
        for e in self.of("burnin.telemetry"):
            assert isinstance(e.body, BurninTelemetry)
            out.append(e.body.samples)
        return out


def burn(seed: int = 7, faults: tuple[str, ...] = (), *, duration: float = 600,
         expected: tuple[str, ...] | None = SERIALS, sku: str = "B200",
         fault_gpus: dict[str, int] | None = None) -> tuple[BurninSummary, Recorder]:
    clock = SimClock(T0)
    board = SimulatedBaseboard(clock, serials=SERIALS, sku=sku, seed=seed, faults=faults,
                               fault_gpus=fault_gpus)
    rec = Recorder()
    summary = asyncio.run(run_burnin(UNIT, board, rec, duration_s=duration, clock=clock,
                                     expected_gpus=expected, run_id=RUN_ID))
    return summary, rec


@cache
def cached(seed: int = 7, faults: tuple[str, ...] = ()) -> tuple[BurninSummary, Recorder]:
    return burn(seed, faults, fault_gpus={f: 3 for f in faults})


def result_of(summary: BurninSummary, name: str) -> Result:
    return next(t for t in summary.tests if t.name == name)


def measurement(t: Result, name: str) -> float:
    return next(m.value for m in t.measurements if m.name == name)


def series(rec: Recorder, gpu: int, field: str) -> list[float]:
    return [next(float(getattr(s, field)) for s in batch if s.gpu_index == gpu)
            for batch in rec.telemetry() if any(s.gpu_index == gpu for s in batch)]


# --- the run's events --------------------------------------------------------------------

def test_clean_run_is_start_then_one_telemetry_event_per_second_then_tested_and_end() -> None:
    summary, rec = cached()
    types = [e.type for e in rec.events]
    assert types == ["burnin.run"] + ["burnin.telemetry"] * 600 + ["unit.tested", "burnin.run"]
    times = [parse_time(e.envelope.time) for e in rec.of("burnin.telemetry")]
    assert times[0] == T0 + timedelta(seconds=1)
    assert all(b - a == timedelta(seconds=1) for a, b in zip(times, times[1:], strict=False))
    assert all([s.gpu_index for s in batch] == list(range(8)) for batch in rec.telemetry())
    assert {e.subject for e in rec.events} == {UNIT}
    assert summary.result == "Passed", [t for t in summary.tests if t.result != "Passed"]
    assert summary.intervals == 600 and summary.samples == 4800 and not summary.absent_gpus


def test_run_start_carries_inventory_versions_thresholds_and_power_limit() -> None:
    _, rec = cached()
    start, end = (e.body for e in rec.of("burnin.run"))
    assert isinstance(start, BurninRun) and isinstance(end, BurninRun)
    assert (start.phase, end.phase) == ("start", "end")
    assert [g.serial for g in start.inventory] == list(SERIALS)
    assert all(g.uuid.startswith("GPU-") and g.board_pn for g in start.inventory)
    assert start.sku == "B200" and start.power_limit_w == 1000
    assert start.driver and start.vbios and start.thresholds is not None
    assert start.thresholds.slowdown_c < start.thresholds.shutdown_c
    tested = rec.of("unit.tested")[0].body
    assert isinstance(tested, UnitTested) and tested.method == "Burnin"
    assert {t.name for t in tested.tests} >= {"inventory", "gemm_bit_exact", "stress_summary"}


def test_every_event_is_valid_and_ids_are_unique() -> None:
    _, rec = cached(7, ("hot-gpu", "ecc-dbe", "fatal-xid", "gpu-off-bus"))
    for e in rec.events:
        assert decode_event(e.value).body == e.body
    assert len({e.id for e in rec.events}) == len(rec.events)


# --- physics ---------------------------------------------------------------------------

def test_idle_board_draws_idle_power_with_links_trained_down() -> None:
    board = SimulatedBaseboard(SimClock(T0), serials=SERIALS)
    for s in board.sample():
        assert s.util_pct == 0 and s.power_w < 150 and s.pcie_gen == 1
        assert s.clocks_event_reasons & 0x1  # GPU_IDLE


def test_power_follows_load_within_seconds_and_temperature_lags_it() -> None:
    _, rec = cached()
    load_w = LOAD_POWER_FRACTION * 1000
    power, temp = series(rec, 0, "power_w"), series(rec, 0, "temp_c")
    assert power[0] > 0.55 * load_w and power[4] > 0.97 * load_w  # 1 s time constant
    steady = median(temp[300:])
    idle = temp[0]
    rise_at_tau = (temp[19] - idle) / (steady - idle)  # 20 s thermal time constant
    assert 0.45 < rise_at_tau < 0.8
    assert temp[4] < temp[19] < temp[59] <= steady + 1
    assert all(b >= a - 2 for a, b in zip(temp, temp[1:], strict=False))  # sensor noise only


def test_steady_load_is_stable_and_siblings_agree() -> None:
    _, rec = cached()
    for batch in rec.telemetry()[300:]:
        temps = [s.temp_c for s in batch]
        assert max(temps) - min(temps) < 8
        assert all(s.util_pct == 100 and s.pcie_gen == 5 and s.pcie_width == 16 for s in batch)
        assert all(s.clocks_event_reasons & HARD_FAIL_CLOCK_BITS == 0 for s in batch)
        assert all(s.temp_c < 75 and s.temp_margin_c and s.temp_margin_c > 10 for s in batch)


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_clean_runs_leave_no_fault_signature(seed: int) -> None:
    summary, rec = burn(seed, duration=300)
    assert not rec.of("burnin.xid") and not summary.absent_gpus
    for batch in rec.telemetry():
        assert len(batch) == 8
        assert all(s.ecc_dbe_vol == 0 and not s.clocks_event_reasons & HARD_FAIL_CLOCK_BITS
                   for s in batch)
    for batch in rec.telemetry()[120:]:
        for s in batch:
            assert s.temp_c - median(o.temp_c for o in batch if o is not s) < 8
    assert summary.result == "Passed"


def test_same_seed_gives_the_same_events_and_another_seed_does_not() -> None:
    a, b, c = (burn(seed, duration=120)[1] for seed in (11, 11, 12))
    assert [e.value for e in a.events] == [e.value for e in b.events]
    assert a.telemetry() != c.telemetry()


# --- faults (DOMAIN.md §9) ---------------------------------------------------------------

def test_hot_gpu_runs_8c_above_its_siblings_at_steady_load_then_throttles() -> None:
    summary, rec = cached(7, ("hot-gpu",))
    runs, longest, throttled_at = 0, 0, None
    for k, batch in enumerate(rec.telemetry()):
        hot = batch[3]
        siblings = median(s.temp_c for s in batch if s.gpu_index != 3)
        if throttled_at is None and hot.clocks_event_reasons & HARD_FAIL_CLOCK_BITS:
            throttled_at = k
        if throttled_at is None and hot.temp_c - siblings >= 8:
            runs += 1
            longest = max(longest, runs)
        else:
            runs = 0
        assert all(not s.clocks_event_reasons & HARD_FAIL_CLOCK_BITS
                   for s in batch if s.gpu_index != 3)
    assert longest >= 60, "hot GPU >= 8 C above its siblings for 60 s before throttling"
    assert throttled_at is not None and rec.telemetry()[-1][3].clocks_event_reasons & SW_THERMAL
    assert series(rec, 3, "sm_clock_mhz")[-1] < series(rec, 0, "sm_clock_mhz")[-1]
    assert result_of(summary, "thermal").result == "Failed"
    assert summary.result == "Failed"


def test_ecc_dbe_raises_one_gpus_double_bit_counter() -> None:
    summary, rec = cached(7, ("ecc-dbe",))
    dbe = series(rec, 3, "ecc_dbe_vol")
    assert dbe[0] == 0 and dbe[-1] == 1
    # counters are read every 10 s: the rise (fault at 60 s) shows at the 60 s reading
    assert dbe.index(1) == 59
    assert all(series(rec, g, "ecc_dbe_vol")[-1] == 0 for g in range(8) if g != 3)
    ecc = result_of(summary, "ecc")
    assert ecc.result == "Failed" and measurement(ecc, "gpu3.ecc_dbe_new") == 1
    assert not rec.of("burnin.xid")


def test_fatal_xid_emits_xid_79_for_one_gpu() -> None:
    summary, rec = cached(7, ("fatal-xid",))
    xids = [e.body for e in rec.of("burnin.xid")]
    assert len(xids) == 1 and isinstance(xids[0], BurninXid)
    assert (xids[0].xid, xids[0].gpu_index, xids[0].gpu_serial) == (79, 3, SERIALS[3])
    assert xids[0].run_id == RUN_ID and "79" in xids[0].raw
    assert result_of(summary, "xid").result == "Failed"
    assert len(rec.telemetry()[-1]) == 8


def test_gpu_off_bus_disappears_from_telemetry_while_its_siblings_continue() -> None:
    summary, rec = cached(7, ("gpu-off-bus",))
    batches = rec.telemetry()
    assert len(batches) == 600  # the heartbeat goes on
    present = [any(s.gpu_index == 3 for s in b) for b in batches]
    gone = present.index(False)
    assert 0 < gone and not any(present[gone:])
    assert all(sorted(s.gpu_index for s in b) == [0, 1, 2, 4, 5, 6, 7] for b in batches[gone:])
    assert summary.absent_gpus == [3]
    assert result_of(summary, "gpu_presence").result == "Failed"
    assert not rec.of("burnin.xid")


def test_fault_gpu_is_drawn_from_the_seed() -> None:
    pick = [SimulatedBaseboard(SimClock(T0), seed=s, faults=["fatal-xid"]).fault_gpus
            for s in (1, 1, 2, 3, 4, 5)]
    assert pick[0] == pick[1]
    assert len({p["fatal-xid"] for p in pick}) > 1


def test_unknown_fault_is_refused_with_the_known_ones() -> None:
    with pytest.raises(StationError) as e:
        SimulatedBaseboard(SimClock(T0), faults=["melted-gpu"])
    assert e.value.code == "burnin.unknown_fault" and "hot-gpu" in str(e.value)


# --- inventory ---------------------------------------------------------------------------

def test_inventory_that_differs_from_the_installed_serials_fails_the_inventory_test() -> None:
    swapped = (*SERIALS[:7], "GPU-S7-999999")
    summary, _ = burn(expected=swapped, duration=10)
    inv = result_of(summary, "inventory")
    assert inv.result == "Failed" and summary.result == "Failed"
    assert measurement(inv, "installed_serials_absent") == 1
    assert measurement(inv, "unexpected_serials") == 1
    short, _ = burn(expected=SERIALS[:7], duration=10)
    assert result_of(short, "inventory").result == "Failed"


def test_inventory_matching_in_another_slot_order_passes() -> None:
    summary, _ = burn(expected=tuple(reversed(SERIALS)), duration=10)
    assert result_of(summary, "inventory").result == "Passed"


def test_without_installed_serials_the_inventory_test_is_skipped() -> None:
    summary, _ = burn(expected=None, duration=10)
    assert result_of(summary, "inventory").result == "Skipped"


class WokenClock(WallClock):
    """The real wall clock, noting each (due, woke at) of `sleep_until`."""

    def __init__(self) -> None:
        super().__init__()
        self.woke: list[tuple[datetime, datetime]] = []

    async def sleep_until(self, when: datetime) -> None:
        await super().sleep_until(when)
        self.woke.append((when, self.now()))


def test_wall_clock_run_keeps_its_cadence() -> None:
    """On the real clock, each sample has a slot of its own on the interval grid, never before
    it is due; a slot missed under load is counted, never made up twice. (A slow machine may
    miss slots; it can never break these.)"""
    clock = WokenClock()
    board = SimulatedBaseboard(clock, serials=SERIALS)
    rec = Recorder()
    summary = asyncio.run(run_burnin(UNIT, board, rec, duration_s=0.3, interval_s=0.05,
                                     clock=clock, expected_gpus=SERIALS))
    telemetry = rec.of("burnin.telemetry")
    assert summary.intervals == len(telemetry) == len(clock.woke) >= 1
    slots = [(due - summary.started) / timedelta(seconds=0.05) for due, _ in clock.woke]
    assert all(abs(k - round(k)) < 1e-6 for k in slots)  # on the grid from the start
    assert [round(k) for k in slots] == sorted(set(round(k) for k in slots)) and slots[0] >= 1
    ms = timedelta(milliseconds=1)  # the event loop's and the envelope's resolution
    assert all(woke >= due - ms for due, woke in clock.woke)  # never early
    assert len(telemetry) + summary.skipped_intervals >= 6  # every slot sampled or counted
    for (due, _), e in zip(clock.woke, telemetry, strict=True):
        assert parse_time(e.envelope.time) >= due - ms  # stamped when taken, not when due


# --- NVML through a stand-in library -----------------------------------------------------

class FakeNvmlError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class FakeNvml:
    """What NvmlBackend sees of pynvml on a two-GPU PCIe box with an old binding: no
    GetTemperatureV, no ClocksEventReasons, no ECC/remap/replay/NVLink support."""

    NVMLError = FakeNvmlError
    NVML_ERROR_NOT_SUPPORTED, NVML_ERROR_TIMEOUT, NVML_ERROR_GPU_IS_LOST = 3, 10, 15
    NVML_TEMPERATURE_GPU, NVML_CLOCK_SM, NVML_CLOCK_MEM = 0, 1, 2
    NVML_TEMPERATURE_THRESHOLD_SHUTDOWN, NVML_TEMPERATURE_THRESHOLD_SLOWDOWN = 0, 1
    NVML_TEMPERATURE_THRESHOLD_GPU_MAX = 3
    NVML_FI_DEV_MEMORY_TEMP = 82
    NVML_NVLINK_MAX_LINKS = 4
    nvmlEventTypeXidCriticalError = 8

    def __init__(self, *, events_ok: bool = True) -> None:
        self.events_ok = events_ok
        self.lost: set[int] = set()
        self.xids: list[tuple[int, int]] = []

    def _live(self, h: int) -> None:
        if h in self.lost:
            raise FakeNvmlError(15)

    def _unsupported(self, *_: Any) -> Any:
        raise FakeNvmlError(3)

    nvmlDeviceGetTotalEccErrors = nvmlDeviceGetRemappedRows = _unsupported
    nvmlDeviceGetPcieReplayCounter = nvmlDeviceGetNvLinkState = _unsupported
    nvmlDeviceGetMarginTemperature = _unsupported

    def nvmlInit(self) -> None: ...
    def nvmlShutdown(self) -> None: ...
    def nvmlDeviceGetCount(self) -> int: return 2
    def nvmlDeviceGetHandleByIndex(self, i: int) -> int: return i
    def nvmlDeviceGetIndex(self, h: int) -> int: return h
    def nvmlDeviceGetName(self, h: int) -> str: return "NVIDIA H100 80GB HBM3"
    def nvmlDeviceGetSerial(self, h: int) -> str: return f"16549220058{h:02d}"
    def nvmlDeviceGetUUID(self, h: int) -> str: return f"GPU-{h:08d}-aaaa-bbbb-cccc-dddddddddddd"
    def nvmlDeviceGetBoardPartNumber(self, h: int) -> bytes: return b"692-2G520-0200-000"
    def nvmlSystemGetDriverVersion(self) -> bytes: return b"570.86.15"
    def nvmlDeviceGetVbiosVersion(self, h: int) -> str: return "96.00.99.00.01"
    def nvmlDeviceGetTemperatureThreshold(self, h: int, t: int) -> int:
        return {0: 92, 1: 89, 3: 87}[t]
    def nvmlDeviceGetEnforcedPowerLimit(self, h: int) -> int: return 700_000
    def nvmlDeviceGetMaxPcieLinkGeneration(self, h: int) -> int: return 5
    def nvmlDeviceGetMaxPcieLinkWidth(self, h: int) -> int: return 16
    def nvmlDeviceGetCurrPcieLinkGeneration(self, h: int) -> int: return 5
    def nvmlDeviceGetCurrPcieLinkWidth(self, h: int) -> int: return 16
    def nvmlDeviceGetClockInfo(self, h: int, c: int) -> int: return 1980 if c == 1 else 2619
    def nvmlDeviceGetUtilizationRates(self, h: int) -> Any: return SimpleNamespace(gpu=97)
    def nvmlDeviceGetCurrentClocksThrottleReasons(self, h: int) -> int: return 0x4

    def nvmlDeviceGetTemperature(self, h: int, sensor: int) -> int:
        self._live(h)
        return 41 + h

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        self._live(h)
        return 123_456

    def nvmlDeviceGetFieldValues(self, h: int, ids: list[int]) -> Any:
        return [SimpleNamespace(nvmlReturn=0, valueType=1, value=SimpleNamespace(uiVal=47))]

    def nvmlEventSetCreate(self) -> str: return "event-set"
    def nvmlEventSetFree(self, es: str) -> None: ...

    def nvmlDeviceRegisterEvents(self, h: int, types: int, es: str) -> None:
        if not self.events_ok:
            raise FakeNvmlError(3)

    def nvmlEventSetWait(self, es: str, timeout_ms: int) -> Any:
        assert timeout_ms == 0, "XID polling must never block"
        if not self.xids:
            raise FakeNvmlError(10)
        h, xid = self.xids.pop(0)
        return SimpleNamespace(device=h, eventType=8, eventData=xid)


def test_nvml_backend_reads_what_is_supported_and_zeroes_what_is_not() -> None:
    b = NvmlBackend(nvml=FakeNvml(), stress=False)
    s0, s1 = b.sample()
    assert (s0.temp_c, s1.temp_c, s0.mem_temp_c, s0.temp_margin_c) == (41, 42, 47, 48)
    assert (s0.power_w, s0.sm_clock_mhz, s0.mem_clock_mhz, s0.util_pct) == (123.456, 1980, 2619, 97)
    assert s0.clocks_event_reasons == 0x4 and (s0.pcie_gen, s0.pcie_width) == (5, 16)
    assert (s0.ecc_dbe_vol, s0.remap_pending, s0.pcie_replay, s0.nvlink_links_up) == (0, 0, 0, None)
    p = b.platform()
    assert (p.sku, p.driver, p.vbios, p.power_limit_w) == ("H100-SXM", "570.86.15",
                                                          "96.00.99.00.01", 700)
    assert p.thresholds is not None and (p.thresholds.slowdown_c, p.thresholds.shutdown_c,
                                         p.thresholds.max_operating_c) == (89, 92, 87)
    assert [(g.serial, g.board_pn) for g in b.inventory()] == [
        ("1654922005800", "692-2G520-0200-000"), ("1654922005801", "692-2G520-0200-000")]
    assert not b.stress_available and not b.stop_load().available


def test_nvml_gpu_that_stops_answering_is_left_out_of_the_sample() -> None:
    nvml = FakeNvml()
    b = NvmlBackend(nvml=nvml, stress=False)
    nvml.lost.add(1)
    assert [s.gpu_index for s in b.sample()] == [0]


def test_nvml_xids_are_polled_without_blocking() -> None:
    nvml = FakeNvml()
    b = NvmlBackend(nvml=nvml, stress=False)
    assert b.xid_supported and b.xid_events() == []
    nvml.xids.append((1, 79))
    (x,) = b.xid_events()
    assert (x.gpu_index, x.xid, x.fatal) == (1, 79, True) and b.xid_events() == []


def test_nvml_run_where_xids_cannot_be_registered_says_so_and_skips_the_xid_test() -> None:
    b = NvmlBackend(nvml=FakeNvml(events_ok=False), stress=False)
    assert not b.xid_supported
    clock, rec = SimClock(T0), Recorder()
    summary = asyncio.run(run_burnin(UNIT, b, rec, duration_s=5, clock=clock,
                                     expected_gpus=["1654922005800", "1654922005801"]))
    assert not summary.xid_supported and len(rec.of("burnin.telemetry")) == 5
    assert result_of(summary, "xid").result == "Skipped"
    assert result_of(summary, "gemm_bit_exact").result == "Skipped"
    assert result_of(summary, "inventory").result == "Passed"


def test_nvml_backend_without_nvidia_ml_py_names_the_gpu_extra(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", None)
    with pytest.raises(StationError) as e:
        NvmlBackend()
    assert e.value.code == "burnin.no_nvml" and "linetrace[gpu]" in str(e.value)
