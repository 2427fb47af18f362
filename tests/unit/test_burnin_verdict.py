"""The burn-in verdict's hard-fail rules (streams/detect/verdict.py), without Kafka.

Runs come from the real burn-in runner on the simulated baseboard (its faults leave their
evidence in the telemetry), recorded with the canonical encoder; a few rules are shown on
hand-made samples. Limits come from the packaged data file, or a plant's own copy.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from linetrace.ledger.burnin_limits import BurninLimits, LimitsMalformed, default_limits
from linetrace.ledger.proof.telemetry import commitment_of_events
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_event, encode_event
from linetrace.stations.burnin import SimClock, SimulatedBaseboard, run_burnin
from linetrace.streams.detect.verdict import RunEvents, assemble, decide_verdict, installed_gpus

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
UNIT = "SRV-V-000001"
SERIALS = [f"GPU-V-{i:06d}" for i in range(1, 9)]
RUN_ID = "6c1b7e0a-3f2d-4e5a-9b8c-7d6e5f4a3b2c"


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[Event, bytes]] = []

    async def emit(self, event_type: str, subject: str, body: b.Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        value = encode_event(event_type=event_type, source="burnin-02", subject=subject,
                             body=body, time=time, event_id=event_id,
                             stationseq=len(self.events) + 1)
        self.events.append((decode_event(value), value))
        return value


def simulate(faults: list[str] | None = None, *, seed: int = 3, duration: float = 200.0,
             sku: str = "B200", fault_gpu: int = 5) -> Recorder:
    clock = SimClock(T0)
    board = SimulatedBaseboard(clock, serials=SERIALS, sku=sku, seed=seed, faults=faults or [],
                               fault_after_s=40.0,
                               fault_gpus={f: fault_gpu for f in faults or []})
    rec = Recorder()
    asyncio.run(run_burnin(UNIT, board, rec, duration_s=duration, clock=clock,
                           expected_gpus=SERIALS, run_id=RUN_ID))
    return rec


def run_of(rec: Recorder, installed: dict[int, str] | None = None,
           extra_results: list[Event] = ()) -> RunEvents:  # type: ignore[assignment]
    tel = [(e, v) for e, v in rec.events if e.type.startswith("burnin.")]
    end = next(e for e, _ in tel if isinstance(e.body, b.BurninRun) and e.body.phase == "end")
    results = [e for e, _ in rec.events if e.type == "unit.tested"] + list(extra_results)
    return assemble(end, tel, results, installed)


def installs(serials: list[str] = SERIALS) -> dict[int, str]:
    return dict(enumerate(serials))


def codes(v: b.BurninVerdict) -> set[tuple[str, int | None]]:
    return {(r.code, r.gpu_index) for r in v.reasons}


def test_a_clean_run_passes_with_per_gpu_figures_and_the_commitment() -> None:
    rec = simulate()
    v = decide_verdict(run_of(rec, installs()), default_limits())
    assert v.result == "Passed", v.reasons
    assert [g.gpu_index for g in v.gpus] == list(range(8))
    assert [g.gpu_serial for g in v.gpus] == SERIALS
    assert all(g.result == "Passed" and g.samples == 200 for g in v.gpus)
    assert all(g.power_mean_w and g.sm_clock_mean_mhz and g.temp_max_c for g in v.gpus)
    tel = [val for e, val in rec.events if e.type == "burnin.telemetry"]
    assert v.telemetry_events == len(tel) == 200
    assert v.telemetry_sha256 == commitment_of_events(tel).hex()
    assert v.limits_sha256 == default_limits().sha256 and v.limits_version == "1"
    assert v.station_result == "Passed" and len(v.results) == 1


@pytest.mark.parametrize(("fault", "code"), [
    ("hot-gpu", "clocks.throttle"), ("ecc-dbe", "ecc.dbe"), ("fatal-xid", "xid.fatal"),
    ("gpu-off-bus", "gpu.missing")])
@pytest.mark.parametrize("gpu", [2, 6])
def test_each_simulator_fault_fails_on_its_gpu_only(fault: str, code: str, gpu: int) -> None:
    v = decide_verdict(run_of(simulate([fault], fault_gpu=gpu), installs()), default_limits())
    assert v.result == "Failed"
    assert (code, gpu) in codes(v)
    assert {i for _, i in codes(v)} == {gpu}, v.reasons
    assert [g.gpu_index for g in v.gpus if g.result == "Failed"] == [gpu]
    failed = next(g for g in v.gpus if g.gpu_index == gpu)
    assert failed.gpu_serial == SERIALS[gpu]
    if fault == "ecc-dbe":
        assert failed.ecc_dbe_new >= 1
    if fault == "fatal-xid":
        assert failed.xids == [79]
    if fault == "gpu-off-bus":
        assert failed.samples < v.telemetry_events


def _sample(i: int, **kw: float) -> b.GpuSample:
    base = dict(gpu_index=i, gpu_serial=SERIALS[i], gpu_uuid=f"GPU-{i}", temp_c=60.0,
                temp_margin_c=30.0, power_w=900.0, sm_clock_mhz=1900.0, mem_clock_mhz=3996.0,
                util_pct=100.0, pcie_gen=5, pcie_width=16)
    base.update(kw)
    return b.GpuSample(**base)  # type: ignore[arg-type]


def hand_run(samples: list[list[b.GpuSample]], *, xids: list[int] = (),  # type: ignore[assignment]
             tests: list[b.TestResult] = (), sku: str = "B200",  # type: ignore[assignment]
             inventory: list[str] = SERIALS) -> RunEvents:
    rec = Recorder()

    async def go() -> None:
        t = T0
        await rec.emit("burnin.run", UNIT, b.BurninRun(
            run_id=RUN_ID, phase="start", sku=sku, inventory=[
                b.GpuInventory(gpu_index=i, serial=s, uuid=f"GPU-{i}")
                for i, s in enumerate(inventory)],
            thresholds=b.Thresholds(slowdown_c=90, shutdown_c=95, max_operating_c=87)), time=t)
        for k, batch in enumerate(samples):
            t = T0.replace(second=k + 1)
            await rec.emit("burnin.telemetry", UNIT, b.BurninTelemetry(run_id=RUN_ID,
                                                                       samples=batch), time=t)
        for x in xids:
            await rec.emit("burnin.xid", UNIT, b.BurninXid(run_id=RUN_ID, gpu_index=1, xid=x,
                                                           gpu_serial=SERIALS[1]), time=t)
        await rec.emit("unit.tested", UNIT, b.UnitTested(method="Burnin", result="Passed",
                                                         tests=list(tests)), time=t)
        await rec.emit("burnin.run", UNIT, b.BurninRun(run_id=RUN_ID, phase="end", sku=sku),
                       time=t)

    asyncio.run(go())
    return run_of(rec, installs())


def clean(n: int = 3, **per_gpu: dict[str, float]) -> list[list[b.GpuSample]]:
    return [[_sample(i, **per_gpu.get(f"g{i}", {})) for i in range(8)] for _ in range(n)]


def test_a_clean_hand_run_passes() -> None:
    assert decide_verdict(hand_run(clean()), default_limits()).result == "Passed"


@pytest.mark.parametrize(("samples", "code"), [
    ([[_sample(i, ecc_sbe_vol=0) for i in range(8)],
      [_sample(i, ecc_sbe_vol=11 if i == 3 else 0) for i in range(8)]], "ecc.sbe"),
    ([[_sample(i, remap_pending=1 if i == 3 else 0) for i in range(8)]], "ecc.remap"),
    ([[_sample(i, remap_failed=1 if i == 3 else 0) for i in range(8)]], "ecc.remap"),
    ([[_sample(i, clocks_event_reasons=0x80 if i == 3 else 0x4) for i in range(8)]],
     "clocks.throttle"),
    ([[_sample(i, temp_c=88.0 if i == 3 else 60.0) for i in range(8)]], "thermal.max"),
    ([[_sample(i, temp_margin_c=0.0 if i == 3 else 20.0) for i in range(8)]], "thermal.margin"),
    ([[_sample(i, pcie_gen=4 if i == 3 else 5) for i in range(8)]], "pcie.gen"),
    ([[_sample(i, pcie_width=8 if i == 3 else 16) for i in range(8)]], "pcie.width"),
    ([[_sample(i) for i in range(8)], [_sample(i, pcie_replay=81 if i == 3 else 0)
                                       for i in range(8)]], "pcie.replay"),
    ([[_sample(i) for i in range(8)], [_sample(i, nvlink_crc=500 if i == 3 else 0)
                                       for i in range(8)]], "nvlink.crc"),
    ([[_sample(i) for i in range(8)], [_sample(i, nvlink_recovery=1 if i == 3 else 0)
                                       for i in range(8)]], "nvlink.recovery"),
])
def test_each_telemetry_rule_fails_the_named_gpu(samples: list[list[b.GpuSample]],
                                                 code: str) -> None:
    v = decide_verdict(hand_run(samples), default_limits())
    assert v.result == "Failed"
    assert codes(v) == {(code, 3)}, v.reasons
    assert v.reasons[0].gpu_serial == SERIALS[3]


def test_throttle_bits_at_idle_and_the_software_power_cap_do_not_fail() -> None:
    idle = [[_sample(i, clocks_event_reasons=0x8, util_pct=0.0, pcie_gen=1) for i in range(8)]]
    assert decide_verdict(hand_run(idle + clean(1)), default_limits()).result == "Passed"


def test_a_new_sbe_or_two_is_no_failure_and_counters_count_increases_once() -> None:
    s = [[_sample(i, ecc_sbe_vol=5 if k else 0) for i in range(8)] for k in range(5)]
    v = decide_verdict(hand_run(s), default_limits())
    assert v.result == "Passed" and {g.ecc_sbe_new for g in v.gpus} == {5}


@pytest.mark.parametrize(("xid", "code"), [(79, "xid.fatal"), (94, "xid.fatal"),
                                           (13, "xid.review")])
def test_xids(xid: int, code: str) -> None:
    v = decide_verdict(hand_run(clean(), xids=[xid]), default_limits())
    assert codes(v) == {(code, 1)}


def _m(name: str, value: float) -> b.Measurement:
    return b.Measurement(name=name, value=value, unit="x")


@pytest.mark.parametrize(("test", "code", "gpu"), [
    (b.TestResult(name="gemm_stress", result="Passed",
                  measurements=[_m("gpu4.gflops", 0.94 * 36_949)]), "perf.compute", 4),
    (b.TestResult(name="memory_bandwidth", result="Passed",
                  measurements=[_m("gpu4.mem_bw", 4_000_000)]), "perf.mem_bw", 4),
    (b.TestResult(name="nccl", result="Passed", measurements=[_m("busbw", 400.0)]),
     "perf.nccl", None),
    (b.TestResult(name="gemm_bit_exact", result="Passed",
                  measurements=[_m("gpu4.gemm_mismatches", 1)]), "stress.mismatch", 4),
    (b.TestResult(name="gemm_bit_exact", result="Passed",
                  measurements=[_m("gpu4.gemm_nan", 2)]), "stress.mismatch", 4),
])
def test_performance_against_the_sku_limits_even_when_the_station_passed(
        test: b.TestResult, code: str, gpu: int | None) -> None:
    v = decide_verdict(hand_run(clean(), tests=[test]), default_limits())
    assert v.station_result == "Passed" and v.result == "Failed"
    assert codes(v) == {(code, gpu)}


def test_performance_at_the_floors_passes() -> None:
    tests = [b.TestResult(name="perf", result="Passed", measurements=[
        _m("gpu0.gflops", 0.95 * 36_949), _m("gpu0.mem_bw", 4_072_500), _m("busbw", 451.25)])]
    assert decide_verdict(hand_run(clean(), tests=tests), default_limits()).result == "Passed"


def test_inventory_count_and_serials_against_the_installs() -> None:
    swapped = [*SERIALS[:7], "GPU-X-999999"]
    v = decide_verdict(hand_run(clean(), inventory=swapped), default_limits())
    assert {"inventory.serial", "inventory.absent"} <= {c for c, _ in codes(v)}
    assert ("inventory.serial", 7) in codes(v)
    v = decide_verdict(hand_run([[_sample(i) for i in range(7)]], inventory=SERIALS[:7]),
                       default_limits())
    assert {c for c, _ in codes(v)} == {"inventory.count", "inventory.absent"}


def test_without_installs_the_count_comes_from_the_sku() -> None:
    run = hand_run(clean())
    bare = RunEvents(**{**run.__dict__, "installed": None})
    assert decide_verdict(bare, default_limits()).result == "Passed"
    seven = RunEvents(**{**bare.__dict__, "start": b.BurninRun(
        run_id=RUN_ID, phase="start", sku="B200", inventory=bare.start.inventory[:7])})  # type: ignore[union-attr]
    assert ("inventory.count", None) in codes(decide_verdict(seven, default_limits()))


def test_installed_gpus_replays_installs_up_to_the_run() -> None:
    def ev(t: str, body: b.Body, kind: str) -> Event:
        return decode_event(encode_event(event_type=kind, source="gpu-install-01", subject=UNIT,
                                         body=body, time=t, stationseq=1))
    items = [b.InstalledItem(lot="L1", mpn="M", category="gpu", serial=s, slot=i)
             for i, s in enumerate(SERIALS)]
    events = [ev("2026-01-05T05:00:00Z", b.MaterialsInstalled(items=items), "materials.installed"),
              ev("2026-01-05T07:00:00Z", b.MaterialsUninstalled(
                  items=[b.RemovedItem(serial=SERIALS[0])], reason="DefectiveMaterial"),
                 "materials.uninstalled")]
    assert installed_gpus(events, "2026-01-05T06:00:00Z") == installs()
    assert installed_gpus(events, "2026-01-05T04:00:00Z") is None


def test_limits_are_data_a_plant_file_changes_the_floor(tmp_path: Path) -> None:
    doc = json.loads((Path(__file__).parents[2] / "ledger/data/burnin_limits.json").read_text())
    doc["version"] = "plant-7"
    doc["skus"]["B200"]["mem_bw_floor_mbs"] = 3_000_000
    path = tmp_path / "limits.json"
    path.write_text(json.dumps(doc))
    limits = BurninLimits.load(path)
    test = b.TestResult(name="bw", result="Passed", measurements=[_m("gpu4.mem_bw", 3_500_000)])
    assert decide_verdict(hand_run(clean(), tests=[test]), default_limits()).result == "Failed"
    v = decide_verdict(hand_run(clean(), tests=[test]), limits)
    assert v.result == "Passed" and v.limits_version == "plant-7"
    assert v.limits_sha256 == limits.sha256 != default_limits().sha256
    path.write_text('{"version": "x", "rules": {}}')
    with pytest.raises(LimitsMalformed, match="docs/burnin.md"):
        BurninLimits.load(path)


def test_an_unknown_sku_fails_naming_the_limits() -> None:
    v = decide_verdict(hand_run(clean(), sku="A100"), default_limits())
    assert ("limits.unknown_sku", None) in codes(v)


def test_the_verdict_depends_only_on_the_run_not_on_the_order_it_was_read() -> None:
    rec = simulate(["ecc-dbe"])
    a = decide_verdict(run_of(rec, installs()), default_limits())
    rec.events.reverse()
    bv = decide_verdict(run_of(rec, installs()), default_limits())
    assert a == bv
