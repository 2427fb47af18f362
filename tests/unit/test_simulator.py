"""The line simulator, without a broker: what a seeded run must look like (routes, products,
determinism, burn-in). Faults: test_simulator_faults.py; holds: test_simulator_holds.py."""

from __future__ import annotations

import os
import subprocess
import sys
from collections import Counter
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from linetrace.schemas.bodies import (
    InstalledItem, MaterialReceived, MaterialsInstalled, MaterialsUninstalled, UnitRepaired,
    WorkCompleted, WorkStarted,
)
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import TOPIC_OF_TYPE
from linetrace.stations.errors import StationError
from linetrace.schemas.routes import route_for_unit
from linetrace.stations.simulator import (
    DEFAULT_START, PRODUCTS, REPAIR_STEP, LineConfig, LinePlan, SimEvent, dependencies,
    generate_line, station_roster,
)


@cache
def plan(seed: int, units: int = 10) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed))


def encoded_stream(p: LinePlan) -> list[bytes]:
    """The exact values a fresh set of stations would send (stationseq per station and topic)."""
    seq: Counter[tuple[str, str]] = Counter()
    out = []
    for e in p.stream():
        seq[e.station_id, TOPIC_OF_TYPE[e.event_type]] += 1
        out.append(encode_event(
            event_type=e.event_type, source=e.station_id, subject=e.subject, body=e.body,
            time=e.time, event_id=e.event_id, stationseq=seq[e.station_id, TOPIC_OF_TYPE[e.event_type]],
        ))
    return out


def installs(events: list[SimEvent]) -> list[tuple[SimEvent, InstalledItem]]:
    return [(e, item) for e in events if isinstance(e.body, MaterialsInstalled) for item in e.body.items]


def identifiers(p: LinePlan) -> set[str]:
    ids = {u.serial for u in p.units} | {u.work_order for u in p.units}
    for e in p.stream():
        ids.add(e.event_id)
        if isinstance(e.body, MaterialReceived):
            ids |= {e.body.lot, *e.body.serials}
        if isinstance(e.body, MaterialsInstalled):
            ids |= {i.lot for i in e.body.items} | {i.serial for i in e.body.items if i.serial}
    return ids


def test_same_seed_gives_byte_identical_events() -> None:
    a = generate_line(LineConfig(units=10, seed=7))
    b = generate_line(LineConfig(units=10, seed=7))
    assert a.stream() == b.stream()
    assert encoded_stream(a) == encoded_stream(b)


def test_same_seed_gives_the_same_events_in_another_process_whatever_its_hash_seed() -> None:
    script = (
        "import hashlib; from linetrace.stations.simulator import LineConfig, generate_line; "
        "print(hashlib.sha256(repr(generate_line(LineConfig(units=3, seed=7)).stream()).encode()).hexdigest())"
    )
    digests = {
        subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                       env={**os.environ, "PYTHONHASHSEED": hash_seed}).stdout
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1 and len(digests.pop()) == 65


def test_speed_paces_wall_time_only_and_never_changes_events() -> None:
    assert generate_line(LineConfig(units=3, seed=5, speed=120.0)).stream() == plan(5, 3).stream()


def test_different_seeds_share_no_serial_lot_order_or_event_id() -> None:
    assert identifiers(plan(7)).isdisjoint(identifiers(plan(8)))
    assert identifiers(plan(7)).isdisjoint(identifiers(plan(70)))


def test_serials_embed_the_seed() -> None:
    p = plan(7)
    assert {u.serial for u in p.servers} == {f"SRV-S7-{i:06d}" for i in range(1, 11)}
    assert all(u.serial.startswith("PCBA-S7-") for u in p.assemblies)
    gpus = [i.serial for _, i in installs(p.stream()) if i.category == "gpu"]
    assert gpus and all(s is not None and s.startswith("GPU-S7-") for s in gpus)
    assert all(e.subject.startswith("LOT-S7-") for e in p.receipts)


def test_event_times_come_from_the_simulated_clock_from_the_given_start() -> None:
    start = datetime(2027, 3, 1, 22, 30, tzinfo=UTC)
    p = generate_line(LineConfig(units=2, seed=3, start=start))
    assert p.stream()[0].time == start
    assert plan(3, 2).stream()[0].time == DEFAULT_START
    shift = start - DEFAULT_START
    assert [e.time for e in p.stream()] == [e.time + shift for e in plan(3, 2).stream()]


def test_every_event_body_is_a_valid_event() -> None:
    for value, e in zip(encoded_stream(plan(11)), plan(11).stream(), strict=True):
        decoded = decode_event(value)
        assert decoded.body == e.body
        assert decoded.subject == e.subject and decoded.source == e.station_id


def test_each_units_events_are_in_strictly_increasing_time_and_the_stream_in_time_order() -> None:
    p = plan(12)
    assert p.units and all(len(u.events) >= 10 for u in p.units)  # something to compare
    for u in p.units:
        times = [e.time for e in u.events]
        assert times == sorted(times) and len(set(times)) == len(times), u.serial
    stream_times = [e.time for e in p.stream()]
    assert stream_times == sorted(stream_times)


def test_every_station_visit_is_arrived_started_own_events_completed_departed() -> None:
    checked = 0
    for u in plan(13).units:
        visits: list[list[SimEvent]] = []
        for e in u.events:
            if e.event_type == "unit.arrived":
                visits.append([])
            visits[-1].append(e)
        for v in visits:
            types = [e.event_type for e in v]
            assert types[:2] == ["unit.arrived", "work.started"] and types[-2:] == [
                "work.completed", "unit.departed"], (u.serial, types)
            assert len({e.station_id for e in v}) == 1
            started, completed = v[1].body, v[-2].body
            assert isinstance(started, WorkStarted) and isinstance(completed, WorkCompleted)
            assert started.transaction_id == completed.transaction_id
            assert started.kind == u.kind and started.product == "A"
            assert getattr(v[0].body, "step") == started.step == completed.step == getattr(v[-1].body, "step")
            checked += 1
    assert checked >= 4 * len(plan(13).units)  # every unit visits several stations


def test_pcba_runs_smt_aoi_ict_and_server_runs_kitting_to_ship() -> None:
    for u in plan(14).units:
        if u.outcome == "scrapped":
            continue
        steps = [e.body.step for e in u.events
                 if isinstance(e.body, WorkStarted) and e.body.step != REPAIR_STEP]
        first_passes = list(dict.fromkeys(steps))
        expected = [20, 30, 40] if u.kind == "assembly" else [50, 60, 70, 80, 90, 100, 110, 120]
        assert first_passes == expected, u.serial


@pytest.mark.parametrize("seed", [1, 2, 3, 7, 42])
def test_at_least_eight_of_ten_servers_end_packed_or_shipped(seed: int) -> None:
    outcomes = plan(seed).summary().outcomes
    assert sum(outcomes.values()) == 10
    assert outcomes.get("shipped", 0) + outcomes.get("packed", 0) >= 8, outcomes


def test_every_server_has_eight_distinct_gpus_in_slots_0_to_7_on_its_baseboard() -> None:
    p = plan(7)
    all_gpus: list[str] = []
    for server in p.servers:
        baseboards = [i.serial for _, i in installs(server.events) if i.category == "baseboard"]
        assert len(baseboards) == 1
        fitted: dict[int, str] = {}
        for e in server.events:
            if isinstance(e.body, MaterialsUninstalled):
                for r in e.body.items:
                    if r.slot is not None:
                        assert fitted.pop(r.slot) == r.serial
            if isinstance(e.body, MaterialsInstalled):
                for i in e.body.items:
                    if i.category == "gpu":
                        assert i.parent == baseboards[0] and i.slot is not None and i.slot not in fitted
                        fitted[i.slot] = i.serial or ""
                        all_gpus.append(i.serial or "")
        if server.outcome != "scrapped":
            assert sorted(fitted) == list(range(8)) and len(set(fitted.values())) == 8
    assert len(all_gpus) == len(set(all_gpus)), "a GPU serial was installed twice"


def test_every_server_gets_about_sixty_serialized_parts_each_with_lot_mpn_category_and_position() -> None:
    for server in plan(7).servers:
        items = [i for e, i in installs(server.events) if e.station_id != "repair-01"]
        serialized = [i for i in items if i.serial]
        assert 55 <= len(serialized) <= 80
        for i in items:
            assert i.lot and i.mpn and i.category
            assert i.serial or i.qty
        for i in serialized:  # a part the route installs more than one of has a slot
            assert (i.slot is not None) == (i.category not in {"baseboard", "chassis", "mainboard",
                                                               "dpu"}), i


def test_the_mainboard_is_the_pcba_unit_installed_after_it_passed_ict() -> None:
    p = plan(7)
    assemblies = {u.serial: u for u in p.assemblies}
    for server in p.servers:
        (event, mb), = [(e, i) for e, i in installs(server.events) if i.category == "mainboard"]
        pcba = assemblies[mb.serial or ""]
        last_ict = [e.body for e in pcba.events if isinstance(e.body, WorkCompleted) and e.body.step == 40][-1]
        assert last_ict.result == "Completed"
        assert pcba.events[-1].time < event.time
        assert pcba.outcome == "installed"
        on_board = [i for _, i in installs(server.events) if i.category in {"cpu", "dimm"}]
        assert len(on_board) >= 18 and all(i.parent == pcba.serial for i in on_board)


def test_every_installed_lot_was_received_before_its_install() -> None:
    p = plan(9)
    receipts = {e.subject: e for e in p.receipts}
    assemblies = {u.serial for u in p.assemblies}
    checked = 0
    for e, item in installs(p.stream()):
        if item.serial in assemblies:
            continue  # a sub-assembly built on this line: its genealogy is its own events
        received = receipts[item.lot]
        assert isinstance(received.body, MaterialReceived)
        assert received.time < e.time and received.body.mpn == item.mpn
        if item.serial is not None:
            assert item.serial in received.body.serials
        checked += 1
    assert checked > 500
    for e in p.receipts:
        assert isinstance(e.body, MaterialReceived) and e.station_id == "receiving-01"
        assert e.body.supplier and e.body.date_code and len(e.body.documents[0].sha256) == 64


def test_firmware_flashes_report_the_golden_hashes() -> None:
    golden = {(f.component, f.image, f.version): f.sha256 for f in PRODUCTS["A"].firmware}
    flashed = [e.body for e in plan(7).stream() if e.event_type == "firmware.flashed"]
    assert {getattr(b, "component") for b in flashed} == {"BMC", "BIOS", "VBIOS", "NIC"}
    for b in flashed:
        assert golden[getattr(b, "component"), getattr(b, "image"), getattr(b, "version")] == getattr(b, "sha256")


def test_failed_units_are_repaired_and_return_to_the_rework_target_of_their_route() -> None:
    repaired = 0
    gpu_swaps = 0
    back_to_flash = 0
    for seed in range(1, 9):
        for u in plan(seed).units:
            route = route_for_unit("A", u.kind)
            failed_at = None
            for k, e in enumerate(u.events):
                if isinstance(e.body, WorkCompleted) and e.body.result == "Failed":
                    failed_at = e.body.step
                if isinstance(e.body, UnitRepaired) and e.body.result == "RepairSuccessful":
                    repaired += 1
                    assert failed_at is not None
                    target = route.rework_target(failed_at)
                    assert target is not None and e.body.return_step == target.step
                    nxt = next(x.body for x in u.events[k:] if isinstance(x.body, WorkStarted)
                               and x.body.step != REPAIR_STEP)
                    assert nxt.step == e.body.return_step
                    back_to_flash += failed_at == 90 and nxt.step == 80
                if isinstance(e.body, MaterialsUninstalled) and e.body.items[0].slot is not None:
                    gpu_swaps += 1
                    put_back = u.events[k + 1].body
                    assert isinstance(put_back, MaterialsInstalled)
                    assert [i.slot for i in put_back.items] == [i.slot for i in e.body.items]
                    assert {i.serial for i in put_back.items}.isdisjoint(i.serial for i in e.body.items)
                    assert e.body.reason == "DefectiveMaterial" and e.station_id == "repair-01"
    assert repaired >= 5 and gpu_swaps >= 1 and back_to_flash >= 1


def test_a_scrapped_unit_says_why_and_records_nothing_after_its_last_repair_visit() -> None:
    scrapped = [u for seed in range(1, 41) for u in plan(seed).units if u.outcome == "scrapped"]
    assert scrapped, "natural yields should scrap a unit now and then"
    for u in scrapped:
        types = [e.event_type for e in u.events]
        assert types[-4:] == ["unit.repaired", "unit.scrapped", "work.completed", "unit.departed"]
        assert u.events[-1].station_id == "repair-01"


def test_a_scrapped_pcba_is_replaced_by_a_new_board_for_the_same_server() -> None:
    plans = [p for p in map(plan, range(1, 41))
             if any(u.outcome == "scrapped" for u in p.assemblies)]
    assert plans, "natural yields should scrap a PCBA in seeds 1-40"
    for p in plans:
        assert len(p.assemblies) > len(p.servers)
        assert sum(u.outcome == "installed" for u in p.assemblies) == len(p.servers)


def test_station_roster_names_every_station_that_emits() -> None:
    roster = dict(station_roster())
    assert {e.station_id for e in plan(7).stream()} == set(roster)
    assert roster["smt-01"] == "smt" and roster["repair-01"] == "repair"
    assert roster["receiving-01"] == "receiving" and len(roster) == 13


def test_dependencies_only_point_back_to_the_units_previous_event_and_its_lots() -> None:
    stream = plan(4, 3).stream()
    deps = dependencies(stream)
    previous: dict[str, int] = {}
    chained = 0
    for i, (e, d) in enumerate(zip(stream, deps, strict=True)):
        assert all(j < i for j in d)
        if e.subject in previous:
            assert previous[e.subject] in d
            chained += 1
        if e.event_type != "material.received":
            previous[e.subject] = i
    assert chained > 100  # most events follow their unit's previous one
    receipt_index = {e.subject: i for i, e in enumerate(stream) if e.event_type == "material.received"}
    installs_checked = 0
    for i, e in enumerate(stream):
        if isinstance(e.body, MaterialsInstalled):
            lots = {receipt_index[x.lot] for x in e.body.items if x.lot in receipt_index}
            assert lots <= set(deps[i])
            installs_checked += bool(lots)
    assert installs_checked > 5


def test_units_move_through_the_line_interleaved() -> None:
    p = plan(7)
    spans = [(u.events[0].time, u.events[-1].time) for u in p.units]
    busiest = max(sum(a <= t <= b for a, b in spans) for t, _ in spans)
    assert busiest >= 4, "several units should be on the line at once"
    stations_busy_at_once = max(
        len({e.station_id for e in p.stream() if e.time.replace(minute=0, second=0, microsecond=0) == hour
             and e.event_type not in ("material.received", "station.state")})
        for hour in {e.time.replace(minute=0, second=0, microsecond=0) for e in p.stream()})
    assert stations_busy_at_once >= 4
    assert p.stream()[-1].time - p.stream()[0].time < timedelta(days=2)


def test_unknown_product_and_bad_settings_are_refused_with_stable_codes() -> None:
    with pytest.raises(StationError) as e:
        generate_line(LineConfig(units=1, seed=1, product="Z"))
    assert e.value.code == "simulator.unknown_product"
    for bad in (LineConfig(units=-1, seed=1), LineConfig(units=1, seed=-3),
                LineConfig(units=1, seed=1, speed=-1), LineConfig(units=1, seed=1, start=datetime(2026, 1, 1))):
        with pytest.raises(StationError) as e:
            generate_line(bad)
        assert e.value.code == "simulator.invalid_config"

