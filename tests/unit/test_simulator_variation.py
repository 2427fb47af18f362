"""Fault variation and near misses (docs/simulator.md "Varied faults and near misses"): drawn
from the seed (same seed, same run), the defaults unchanged, every varied fault still leaving
its evidence, and every near miss staying inside what it promises (no fault signature)."""

from __future__ import annotations

from collections import defaultdict
from functools import cache
from statistics import median

import msgspec
import pytest

from linetrace.schemas.bodies import BurninTelemetry, FirmwareFlashed, StationState, UnitTested
from linetrace.stations.errors import StationError
from linetrace.stations.simulator import (
    FAULTS, LineConfig, LinePlan, generate_line, golden_firmware, parse_faults,
)
from linetrace.stations.simulator.faults import NEAR_MISSES, PARAMS

from ..fault_evidence import from_plan, signatures

STEADY_S = 100  # a warm GPU has settled this long after the load starts (tau 20 s)


@cache
def run(faults: str, seed: int = 21, units: int = 8, vary: bool = True) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed, faults=parse_faults(faults),
                                    fault_variation=vary))


def _truth(plan: LinePlan) -> list[tuple[object, ...]]:
    return [(s.fault, s.unit, s.gpu, s.lot, s.station, sorted(s.details.items()))
            for s in plan.truth]


@pytest.mark.parametrize("fault", [*FAULTS, *NEAR_MISSES])
def test_variation_is_drawn_from_the_seed(fault: str) -> None:
    units = 12
    a = generate_line(LineConfig(units=units, seed=31, faults=parse_faults(fault),
                                 fault_variation=True))
    b = generate_line(LineConfig(units=units, seed=31, faults=parse_faults(fault),
                                 fault_variation=True))
    assert a.stream() == b.stream() and _truth(a) == _truth(b) and a.truth


def test_parameters_differ_between_seeds_and_stay_in_their_ranges() -> None:
    drawn = [run("hot-gpu", seed).truth[0].details for seed in (21, 22, 23, 24)]
    assert len({round(float(str(d["delta"])), 6) for d in drawn}) == 4
    for d in drawn:
        for key, (_, _, lo, hi) in PARAMS["hot-gpu"].items():
            assert lo <= float(str(d[key])) <= hi, (key, d)


def test_defaults_are_unchanged_and_explicit_defaults_change_nothing() -> None:
    plain = run("hot-gpu,ict-drift,stuck-unit,station-down", 11, 6, vary=False)
    explicit = run("hot-gpu@onset=60,ict-drift@slope=0.08@noise=0.005@check=0,"
                   "stuck-unit@stall=2,station-down@duration=7200", 11, 6, vary=False)
    assert plain.stream() == explicit.stream()
    assert plain.config.faults[0].params == () and not plain.context.faults.params  # type: ignore[union-attr]


def test_a_given_parameter_wins_over_the_draw() -> None:
    plan = run("ecc-dbe:3@gpu=6@count=2@vary")
    strike = plan.truth[0]
    assert (strike.unit, strike.gpu, strike.details["count"]) == ("SRV-S21-000003", 6, 2.0)
    counters = [s.ecc_dbe_vol for e in plan.events_of("SRV-S21-000003")
                if isinstance(e.body, BurninTelemetry) for s in e.body.samples if s.gpu_index == 6]
    assert max(counters) - min(counters) == 2


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize("fault", FAULTS)
def test_each_varied_fault_still_leaves_exactly_its_evidence(fault: str, seed: int) -> None:
    units = 30 if fault == "ict-drift" else 8
    plan = run(f"{fault}@vary", seed, units, vary=False)
    assert set(signatures(from_plan(plan))) == {fault}
    assert [s.fault for s in plan.truth if s.fault == fault]


#: The fault each near miss imitates (whose evidence it must not leave).
IMITATES = {"warm-gpu": "hot-gpu", "telemetry-hiccup": "gpu-off-bus", "ict-wobble": "ict-drift",
            "lot-one-failure": "bad-lot", "golden-reflash": "firmware-mismatch",
            "slow-unit": "stuck-unit", "station-standby": "station-down"}


@pytest.mark.parametrize("seed", [21, 22, 23])
@pytest.mark.parametrize("near", NEAR_MISSES)
def test_a_near_miss_leaves_no_evidence_of_the_fault_it_imitates(near: str, seed: int) -> None:
    """(A near miss that lengthens a visit moves the natural draws to other units, so a
    natural coincidence elsewhere, e.g. three failures on one lot, is not its doing.)"""
    units = 30 if near == "ict-wobble" else 16
    plan = run(near, seed, units)
    assert IMITATES[near] not in signatures(from_plan(plan))
    assert [s.near_miss for s in plan.truth] == [True]


@pytest.mark.parametrize("seed", [21, 22, 23, 24, 25])
def test_a_warm_gpu_runs_5_to_7_c_above_its_siblings_and_never_8(seed: int) -> None:
    plan = run("warm-gpu", seed)
    strike = plan.truth[0]
    delta = float(str(strike.details["delta"]))
    assert 5.0 <= delta <= 7.0
    samples = [e.body for e in plan.events_of(str(strike.unit))
               if isinstance(e.body, BurninTelemetry)]
    steady = samples[STEADY_S:]
    assert steady
    above = []
    for t in steady:  # whole degrees (as NVML reports), so one sample of a 7 C GPU may read 8
        temps = {s.gpu_index: s.temp_c for s in t.samples}
        above.append(temps[strike.gpu] - median(v for i, v in temps.items() if i != strike.gpu))
        assert all(s.clocks_event_reasons & 0xE8 == 0 for s in t.samples)  # no throttling
    windows = [sum(above[i:i + 10]) / 10 for i in range(len(above) - 9)]
    assert max(windows) < 7.8 and abs(sum(above) / len(above) - delta) < 1.0


@pytest.mark.parametrize("seed", [21, 22, 23])
def test_a_telemetry_hiccup_is_a_gap_under_5_s_with_every_gpu(seed: int) -> None:
    plan = run("telemetry-hiccup", seed)
    unit = str(plan.truth[0].unit)
    times = [e.time for e in plan.events_of(unit) if isinstance(e.body, BurninTelemetry)]
    gaps = [(b - a).total_seconds() for a, b in zip(times, times[1:])]
    assert 3.0 <= max(gaps) < 5.0
    assert all(len(e.body.samples) == 8 for e in plan.events_of(unit)
               if isinstance(e.body, BurninTelemetry))


def test_an_ict_wobble_stays_inside_natural_variation() -> None:
    plan = run("ict-wobble:10", 21, 30)
    strike = plan.truth[0]
    slope = float(str(strike.details["slope"]))
    assert 0.001 <= slope <= 0.003
    values = [m.value for e in plan.stream() if isinstance(e.body, UnitTested)
              and e.body.method == "ICT" for t in e.body.tests for m in t.measurements
              if m.name == strike.details["ref"]]
    assert len(values) >= 20  # the trend over the whole run is far below one sigma (tol / 4)
    assert slope * len(values) < 0.25


def test_lot_one_failure_fails_exactly_one_gpu_of_its_lot() -> None:
    plan = run("lot-one-failure:3", 21, 16)
    strike = plan.truth[0]
    lot = str(strike.lot)
    assert lot.endswith("GPU-0003")
    assert "bad-lot" not in signatures(from_plan(plan))


def test_golden_reflash_flashes_the_golden_image_at_repair() -> None:
    plan = run("golden-reflash", 21, 16)
    strike = plan.truth[0]
    flashes = [e for e in plan.events_of(str(strike.unit)) if e.station_id == "repair-01"
               and isinstance(e.body, FirmwareFlashed)]
    assert len(flashes) == 1
    body = flashes[0].body
    assert isinstance(body, FirmwareFlashed)
    assert golden_firmware()[(body.image, body.version)] == body.sha256


def test_slow_unit_and_standby_stay_inside_their_limits() -> None:
    plan = run("slow-unit,station-standby", 21, 8)
    states = [msgspec.to_builtins(e.body)["state"] for e in plan.stream()
              if isinstance(e.body, StationState) and e.station_id == "final-qa-01"]
    assert 2000 in states and 4000 not in states
    unit = next(str(s.unit) for s in plan.truth if s.fault == "slow-unit")
    at60 = [e.time for e in plan.events_of(unit) if e.station_id == "gpu-install-01"]
    assert (at60[-1] - at60[0]).total_seconds() < 3600


def test_truth_names_what_each_fault_struck() -> None:
    plan = run("hot-gpu:2,bad-lot:2,avl-violation,station-down:3,unknown-lot:4", 21, 8,
               vary=False)
    by = defaultdict(list)
    for s in plan.truth:
        by[s.fault].append(s)
    assert by["hot-gpu"][0].unit == "SRV-S21-000002" and by["hot-gpu"][0].gpu is not None
    assert by["bad-lot"][0].lot == "LOT-S21-GPU-0002"
    assert by["avl-violation"][0].lot == "LOT-S21-PSU-0001"
    assert by["station-down"][0].station == "final-qa-01"
    assert by["unknown-lot"][0].lot == "LOT-S21-CBL-9004"


@pytest.mark.parametrize("spec", ["hot-gpu@delta", "hot-gpu@delta=x", "hot-gpu@nope=1",
                                  "skip-step@gpu=1", "warm-gpu:0"])
def test_bad_parameters_are_refused_with_what_is_accepted(spec: str) -> None:
    with pytest.raises(StationError) as e:
        parse_faults(spec)
    assert e.value.code == "simulator.invalid_fault"
