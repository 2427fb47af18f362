"""The line simulator follows the route files: products A (with its PCBA), B and mix, and
burn-in on the simulated baseboard. Without a broker."""

from __future__ import annotations

from collections import Counter
from functools import cache

import pytest

from linetrace.ledger.avl import default_avl
from linetrace.schemas.bodies import (
    BurninRun, BurninTelemetry, FirmwareFlashed, MaterialReceived, MaterialsInstalled,
    UnitRepaired, UnitTested, WorkCompleted, WorkStarted,
)
from linetrace.schemas.envelope import decode_event
from linetrace.stations.errors import StationError
from linetrace.schemas.routes import route_for_unit
from linetrace.stations.simulator import (
    DEFAULT_START, PRODUCTS, REPAIR_STEP, LineConfig, LinePlan, SimEvent, Unit, generate_line,
    station_roster,
)

from .test_simulator import encoded_stream, installs, plan

@cache
def product_plan(product: str, seed: int = 7, units: int = 6) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed, product=product))


def visits(u: Unit) -> list[list[SimEvent]]:
    out: list[list[SimEvent]] = []
    for e in u.events:
        if e.event_type == "unit.arrived":
            out.append([])
        out[-1].append(e)
    return out


@pytest.mark.parametrize("product", ["A", "B", "mix"])
def test_every_unit_follows_its_route_file_step_by_step(product: str) -> None:
    checked, repairs, failures, finished = 0, 0, 0, 0
    for seed in (1, 2, 3):
        for u in product_plan(product, seed).units:
            route = route_for_unit(u.product, u.kind)
            expected_next = route.first_step.step
            for v in visits(u):
                checked += 1
                started = v[1].body
                assert isinstance(started, WorkStarted)
                step = route.step(started.step)
                assert v[0].station_id == f"{step.station_type}-01"
                assert started.operation == step.operation
                assert (started.recipe, started.recipe_revision) == (step.recipe, step.recipe_revision)
                completed = v[-2].body
                assert isinstance(completed, WorkCompleted) and step.allows(completed.result)
                if step.is_repair:
                    repairs += 1
                    repaired = next(e.body for e in v if isinstance(e.body, UnitRepaired))
                    if repaired.result == "Scrap":
                        break
                    expected_next = repaired.return_step or 0
                    continue
                assert started.step == expected_next, (u.serial, started.step, expected_next)
                assert not route.missing_before(step.step, {s.step for s in route.steps
                                                            if s.step < step.step})
                if completed.result == "Failed":
                    failures += 1
                    repair = route.repair_for(step.step)
                    assert repair is not None
                    expected_next = repair.step
                else:
                    nxt = route.next_step(step.step)
                    expected_next = nxt.step if nxt else -1
            if u.outcome in ("shipped", "passed", "installed"):
                finished += 1
                assert expected_next == -1, u.serial
    # Every branch above ran: the seeds have failures sent to repair and units that finished.
    assert checked >= 100 and repairs > 0 and failures >= repairs and finished >= 18


@pytest.mark.parametrize("product", ["A", "B"])
def test_each_install_step_installs_what_its_route_expects(product: str) -> None:
    steps, slotted, bulk, parented = 0, 0, 0, 0
    for u in product_plan(product).servers:
        route = route_for_unit(product, "server")
        for v in visits(u):
            started = v[1].body
            assert isinstance(started, WorkStarted)
            if started.step == REPAIR_STEP:
                continue
            items = [i for e in v if isinstance(e.body, MaterialsInstalled) for i in e.body.items]
            expected = route.parts_expected(started.step)
            consumed = route.sub_assemblies(started.step)
            steps += bool(expected or consumed)
            assert Counter(i.category for i in items) == Counter(
                {**{p.category: (p.count if p.serialized else 1) for p in expected},
                 **{a.category: a.count for a in consumed}})
            by_category = {i.category: i for i in items if i.serial and i.slot is None}
            for p in expected:
                mine = [i for i in items if i.category == p.category]
                assert mine, p.category
                if p.slots:
                    slotted += 1
                    assert sorted(i.slot for i in mine if i.slot is not None) == sorted(p.slots)
                if not p.serialized:
                    bulk += 1
                    assert mine[0].qty == p.count and mine[0].serial is None
                for i in mine:
                    parent = by_category[p.parent].serial if p.parent else None
                    parented += parent is not None
                    assert i.parent == parent, (p.category, i.parent, parent)
    assert steps >= 6 and slotted >= 6 and bulk >= 6 and parented >= 24


def test_product_b_has_eight_pcie_cards_in_slots_0_to_7_no_baseboard_and_a_bought_mainboard() -> None:
    p = product_plan("B")
    assert not p.assemblies
    for server in p.servers:
        items = [i for _, i in installs(server.events)]
        assert not any(i.category == "baseboard" for i in items)
        gpus = [i for i in items if i.category == "gpu"]
        assert {i.slot for i in gpus} == set(range(8))
        assert all(i.parent is None and i.mpn == "900-2G153-0000-000" for i in gpus)
        (mb,) = [i for i in items if i.category == "mainboard"]
        assert mb.mpn == "MBD-X14DBG-B" and mb.lot.startswith("LOT-S7-")
        on_board = [i for i in items if i.category in {"cpu", "dimm", "nic"}]
        assert on_board and all(i.parent == mb.serial for i in on_board)
        runs = [e.body for e in server.events if e.event_type == "burnin.run"]
        assert runs and all(getattr(r, "sku") in (None, "RTX-PRO-6000-BSE") for r in runs)
    golden = {(f.component, f.image, f.version): f.sha256 for f in PRODUCTS["B"].firmware}
    flashed = [e.body for e in p.stream() if isinstance(e.body, FirmwareFlashed)]
    assert len(flashed) >= len(p.servers) * len(golden) > 0
    for f in flashed:
        assert golden[f.component, f.image, f.version] == f.sha256


def test_mix_alternates_a_and_b_servers_and_builds_pcbas_only_for_a() -> None:
    p = product_plan("mix")
    assert [u.product for u in p.servers] == ["A", "B"] * 3
    mainboards = {i.serial for s in p.servers if s.product == "A" for _, i in installs(s.events)
                  if i.category == "mainboard"}
    assert {u.serial for u in p.assemblies if u.outcome == "installed"} == mainboards
    assert len(mainboards) == 3


def test_station_roster_of_b_has_no_pcba_stations_and_mix_has_all() -> None:
    b = dict(station_roster("B"))
    assert "smt-01" not in b and "ict-01" not in b and b["gpu-install-01"] == "gpu-install"
    assert dict(station_roster("mix")) == dict(station_roster("A"))
    assert {e.station_id for e in product_plan("B").stream()} == set(b)


@pytest.mark.parametrize("product", ["B", "mix"])
def test_b_and_mix_runs_are_deterministic_and_every_event_is_valid(product: str) -> None:
    again = generate_line(LineConfig(units=6, seed=7, product=product))
    assert again.stream() == product_plan(product).stream()
    for value, e in zip(encoded_stream(again), again.stream(), strict=True):
        assert decode_event(value).body == e.body


def test_every_station_reports_producing_when_the_run_starts() -> None:
    p = plan(7)
    states = [e for e in p.stream() if e.event_type == "station.state"]
    assert {e.subject for e in states} == {s for s, _ in station_roster()}
    assert all(e.subject == e.station_id and getattr(e.body, "state") == 1000 for e in states)
    assert all(e.time < p.stream()[len(states) + 1].time or e.time == DEFAULT_START for e in states)


def test_receipts_name_supplier_date_code_coc_and_pass_the_plants_avl() -> None:
    avl = default_avl()
    for product in ("A", "B"):
        receipts = product_plan(product).receipts
        assert len(receipts) >= 10
        for e in receipts:
            body = e.body
            assert isinstance(body, MaterialReceived)
            assert avl.check(body.mpn, body.supplier).result == "Passed", (body.mpn, body.supplier)
            assert body.date_code and body.documents[0].kind == "coc"


# --- burn-in ------------------------------------------------------------------------------


def burnin_runs(u: Unit) -> list[list[SimEvent]]:
    runs: list[list[SimEvent]] = []
    for e in u.events:
        if isinstance(e.body, BurninRun) and e.body.phase == "start":
            runs.append([])
        if runs and e.station_id == "burnin-01" and e.event_type not in (
                "unit.departed", "work.completed"):
            runs[-1].append(e)
    return runs


@pytest.mark.parametrize("seconds", [30, 90])
def test_burnin_emits_run_one_telemetry_per_second_with_every_gpu_and_burnin_results(
        seconds: int) -> None:
    p = generate_line(LineConfig(units=3, seed=21, burnin_seconds=seconds))
    assert len(p.servers) == 3
    for server in p.servers:
        assert burnin_runs(server), server.serial  # every server is burnt in at least once
        for run in burnin_runs(server):
            types = [e.event_type for e in run]
            assert types[0] == "burnin.run" and types[-1] == "burnin.run"
            telemetry = [e for e in run if isinstance(e.body, BurninTelemetry)]
            assert len(telemetry) == seconds
            gaps = {(b.time - a.time).total_seconds() for a, b in zip(telemetry, telemetry[1:])}
            assert gaps == {1.0}
            fitted = {slot for slot in range(8)}
            for t in telemetry:
                assert isinstance(t.body, BurninTelemetry)
                assert {s.gpu_index for s in t.body.samples} == fitted
            tested = [e.body for e in run if isinstance(e.body, UnitTested)]
            assert len(tested) == 2 and all(t.method == "Burnin" for t in tested)
            start = run[0].body
            assert isinstance(start, BurninRun) and start.sku == "B200" and len(start.inventory) == 8
            assert "burnin.xid" not in types


def test_burnin_inventory_is_the_gpus_installed_at_step_60() -> None:
    runs = 0
    for server in plan(7).servers:
        fitted: dict[int, str] = {}
        for e in server.events:
            if isinstance(e.body, MaterialsInstalled):
                fitted |= {i.slot: i.serial or "" for i in e.body.items
                           if i.category == "gpu" and i.slot is not None}
            if isinstance(e.body, BurninRun) and e.body.phase == "start":
                runs += 1
                assert len(fitted) == 8
                assert {g.gpu_index: g.serial for g in e.body.inventory} == fitted
    assert runs >= len(plan(7).servers) > 0


def test_burnin_visit_lasts_set_up_plus_telemetry_plus_tear_down_within_max_cycle() -> None:
    route = route_for_unit("A", "server")
    burnt = 0
    for server in plan(7).servers:
        for v in visits(server):
            if v[0].station_id == "burnin-01":
                burnt += 1
                span = (v[-1].time - v[0].time).total_seconds()
                assert 60 + 300 <= span <= route.step(90).max_cycle_s
    assert burnt >= len(plan(7).servers) > 0


def test_bad_simulator_settings_are_refused_with_stable_codes() -> None:
    for bad in (LineConfig(units=1, seed=1, rate=-1), LineConfig(units=1, seed=1, burnin_seconds=1)):
        with pytest.raises(StationError) as e:
            generate_line(bad)
        assert e.value.code == "simulator.invalid_config"
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=1, seed=1, product="C"))
    assert e.value.code == "simulator.unknown_product"
