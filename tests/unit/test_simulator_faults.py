"""Simulator faults (`--faults`, DOMAIN.md §9): each leaves exactly its evidence in the events
a run sends, and a clean run leaves none. The evidence is judged by `tests/fault_evidence.py`,
the same finders the integration tests run on the ledger."""

from __future__ import annotations

from functools import cache

import pytest

from linetrace.schemas.bodies import (
    BurninXid, FirmwareFlashed, MaterialsInstalled, StationState, UnitArrived,
)
from linetrace.stations.errors import StationError
from linetrace.stations.simulator import (
    FAULTS, LineConfig, LinePlan, generate_line, golden_firmware, parse_faults,
)

from ..fault_evidence import from_plan, signatures


@cache
def run(faults: str, seed: int = 11, units: int = 6, product: str = "A") -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed, product=product,
                                    faults=parse_faults(faults)))


@pytest.mark.parametrize("product", ["A", "B", "mix"])
@pytest.mark.parametrize("seed", [1, 2, 3, 7, 42])
def test_a_clean_run_shows_no_fault_signature(product: str, seed: int) -> None:
    assert signatures(from_plan(run("none", seed, 10, product))) == {}


@pytest.mark.parametrize("fault", FAULTS)
@pytest.mark.parametrize("seed", [11, 12])
def test_each_fault_leaves_exactly_its_own_evidence(fault: str, seed: int) -> None:
    found = signatures(from_plan(run(fault, seed)))
    assert set(found) == {fault}, found


@pytest.mark.parametrize("product", ["B", "mix"])
def test_burnin_and_supply_faults_work_on_product_b_too(product: str) -> None:
    faults = "hot-gpu,ecc-dbe,fatal-xid,gpu-off-bus,unknown-lot,avl-violation,firmware-mismatch"
    found = signatures(from_plan(run(faults, 5, 4, product)))
    assert set(found) == set(faults.split(",")), found


def test_many_faults_at_once_each_leave_their_evidence() -> None:
    for faults, units in (
        ("hot-gpu,ecc-dbe,fatal-xid,gpu-off-bus,firmware-mismatch,station-down,unknown-lot", 4),
        ("bad-lot,ict-drift,skip-step,cloned-serial,avl-violation,stuck-unit", 6),
    ):
        for seed in (101, 102, 103):
            found = signatures(from_plan(run(faults, seed, units)))
            assert set(found) == set(faults.split(",")), (seed, found)


def test_a_fault_strikes_the_server_its_target_names() -> None:
    found = signatures(from_plan(run("hot-gpu:3,fatal-xid:1,skip-step:4,stuck-unit:2")))
    assert [f.split()[0] for f in found["hot-gpu"]] == ["SRV-S11-000003"]
    assert [f.split()[0] for f in found["fatal-xid"]] == ["SRV-S11-000001"]
    assert {f.split()[0] for f in found["skip-step"]} == {"SRV-S11-000004"}
    assert [f.split()[0] for f in found["stuck-unit"]] == ["SRV-S11-000002"]


def test_same_seed_and_faults_give_identical_events() -> None:
    spec = ",".join(FAULTS)
    again = generate_line(LineConfig(units=6, seed=11, faults=parse_faults(spec)))
    assert again.stream() == run(spec).stream()


def test_fatal_xid_is_79_on_one_gpu_and_the_unit_is_repaired() -> None:
    p = run("fatal-xid")
    xids = [(e.subject, e.body) for e in p.stream() if isinstance(e.body, BurninXid)]
    assert len(xids) == 1 and xids[0][0] == "SRV-S11-000003" and xids[0][1].xid == 79
    server = next(u for u in p.servers if u.serial == "SRV-S11-000003")
    assert "unit.repaired" in [e.event_type for e in server.events]


def test_skip_step_unit_goes_from_integration_straight_to_burnin() -> None:
    p = run("skip-step")
    server = next(u for u in p.servers if u.number == 2)
    steps = [e.body.step for e in server.events if isinstance(e.body, UnitArrived)]
    assert steps[:4] == [50, 60, 70, 90]
    assert not any(isinstance(e.body, FirmwareFlashed) for e in server.events[:40])


def test_unknown_lot_cloned_serial_and_firmware_mismatch_touch_one_record_each() -> None:
    p = run("unknown-lot,cloned-serial,firmware-mismatch")
    received = {e.subject for e in p.receipts}
    unknown = [(e.subject, i.lot) for e in p.stream() if isinstance(e.body, MaterialsInstalled)
               for i in e.body.items if i.lot not in received and not i.lot.startswith("WO-")]
    assert unknown == [("SRV-S11-000003", "LOT-S11-CBL-9003")]
    golden = golden_firmware()
    bad = [e for e in p.stream() if isinstance(e.body, FirmwareFlashed)
           and golden[e.body.image, e.body.version] != e.body.sha256]
    assert [(e.subject, getattr(e.body, "component")) for e in bad] == [("SRV-S11-000001", "BMC")]


def test_station_down_reports_sdt_then_nothing_then_prd() -> None:
    p = run("station-down")
    states = [e for e in p.stream() if isinstance(e.body, StationState)
              and e.station_id == "final-qa-01"]
    assert [getattr(e.body, "state") for e in states] == [1000, 4000, 1000]
    down, up = states[1].time, states[2].time
    assert (up - down).total_seconds() == 7200
    assert not [e for e in p.stream() if e.station_id == "final-qa-01" and down < e.time < up]


@pytest.mark.parametrize(("spec", "code"), [
    ("hot-gpu,nope", "simulator.unknown_fault"),
    ("hot-gpu:0", "simulator.invalid_fault"),
    ("hot-gpu:x", "simulator.invalid_fault"),
    ("hot-gpu:7", "simulator.invalid_fault"),
    ("hot-gpu,hot-gpu", "simulator.invalid_fault"),
    ("none,hot-gpu", "simulator.invalid_fault"),
    ("cloned-serial:1", "simulator.invalid_fault"),
])
def test_bad_fault_specs_are_refused_with_stable_codes(spec: str, code: str) -> None:
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=6, seed=1, faults=parse_faults(spec)))
    assert e.value.code == code


def test_faults_that_cannot_strike_say_so() -> None:
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=1, seed=1, faults=parse_faults("cloned-serial")))
    assert e.value.code == "simulator.invalid_fault"
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=2, seed=1, product="B", faults=parse_faults("ict-drift")))
    assert e.value.code == "simulator.invalid_fault"
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=1, seed=1, faults=parse_faults("bad-lot:9")))
    assert e.value.code == "simulator.fault_not_applied"


def test_none_and_empty_mean_a_clean_run() -> None:
    assert parse_faults("none") == parse_faults("") == parse_faults(None) == ()
