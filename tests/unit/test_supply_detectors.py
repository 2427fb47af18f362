"""Supply-chain detectors (streams/detect/supply.py) on plain data, and the plant data files
they check against (they must agree with what the simulated plant builds)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from linetrace.ledger.alerts.conditions import CATALOGUE
from linetrace.ledger.plant_data import (
    ApprovedParts, GoldenFirmware, LotPolicy, PlantDataMalformed, approved_parts,
    golden_firmware,
)
from linetrace.schemas import bodies as b
from linetrace.stations.simulator import parts
from linetrace.stations.simulator.products import PRODUCTS, golden_firmware as sim_golden
from linetrace.streams.detect import supply

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


# --- plant data agrees with the simulated plant ---------------------------------------------


def test_golden_firmware_file_is_the_simulators_golden_baseline() -> None:
    assert dict(golden_firmware().golden) == sim_golden()


def test_approved_parts_file_lists_exactly_what_the_simulator_builds_each_product_from() -> None:
    expected: dict[str, set[str]] = {}
    for p in PRODUCTS.values():
        route_mpns = {p.part(part.category).mpn for s in p.route.steps for part in s.parts}
        if p.assembly_route is not None:
            route_mpns.add(parts.MAINBOARD_MPN)  # the PCBA built on the line, consumed at 70
            board = {c.part.mpn for c in parts.BOARD_COMPONENTS}
            expected[p.assembly_route.product] = board
        expected[p.name] = route_mpns
    assert {k: set(v) for k, v in approved_parts().approved.items()} == expected


def test_every_supply_condition_is_high_and_findings_about_the_past_latch() -> None:
    for name in (supply.AVL_VIOLATION, supply.UNKNOWN_LOT, supply.UNAPPROVED_MPN,
                 supply.CLONED_SERIAL, supply.FIRMWARE_MISMATCH):
        assert CATALOGUE[name].priority == "high"
    assert not CATALOGUE[supply.UNKNOWN_LOT].latched  # clears when the receipt arrives
    assert all(CATALOGUE[n].latched for n in (supply.AVL_VIOLATION, supply.UNAPPROVED_MPN,
                                              supply.CLONED_SERIAL, supply.FIRMWARE_MISMATCH))


@pytest.mark.parametrize("text", ["not json", '{"golden": 3}', '{"other": []}',
                                  '{"golden": [{"image": "x", "version": "1"}]}'])
def test_a_malformed_golden_firmware_file_is_refused_naming_the_file(text: str) -> None:
    with pytest.raises(PlantDataMalformed, match="plant.json"):
        GoldenFirmware.from_json(text, origin="plant.json")


def test_malformed_approved_parts_and_lot_policy_are_refused() -> None:
    with pytest.raises(PlantDataMalformed):
        ApprovedParts.from_json('{"approved": {"A": "MPN"}}')
    with pytest.raises(PlantDataMalformed):
        LotPolicy.from_json('{"policy": {"baseline_failure_rate": 2, "window": 20, '
                            '"min_failures": 3, "alpha": 0.001}}')


def test_a_plant_points_at_its_own_golden_firmware(tmp_path: Path) -> None:
    own = tmp_path / "golden.json"
    own.write_text('{"golden": [{"image": "bmc-x", "version": "1.0", "sha256": "AB"}]}')
    assert dict(golden_firmware(own).golden) == {("bmc-x", "1.0"): "ab"}
    with pytest.raises(PlantDataMalformed, match="LINETRACE_GOLDEN_FIRMWARE"):
        golden_firmware(tmp_path / "missing.json")


# --- AVL --------------------------------------------------------------------------------------


def checked(result: str, reason: str | None = None) -> b.MaterialChecked:
    return b.MaterialChecked(lot="LOT-PSU-1", mpn="PWS-3K27G-2R", supplier="SUP-GREY",
                             receipt="2f1c1c4e-7d1a-4c3e-9a53-3b0b8c1f0a11",
                             result=result,  # type: ignore[arg-type]
                             reason=reason, avl_sha256="a" * 64)


def test_a_failed_avl_check_is_a_violation_of_the_lot_and_a_passed_one_is_nothing() -> None:
    found = supply.avl_violation(checked("Failed", "supplier SUP-GREY is not approved"), "e1",
                                 at(0))
    assert found is not None and found.subject == "LOT-PSU-1" and found.active
    assert found.lot == "LOT-PSU-1" and "SUP-GREY" in found.message
    assert found.details["supplier"] == "SUP-GREY"
    assert supply.avl_violation(checked("Passed"), "e2", at(0)) is None


# --- firmware ---------------------------------------------------------------------------------


def flashed(image: str, version: str, sha: str, target: str | None = "PCBA-1"
            ) -> b.FirmwareFlashed:
    return b.FirmwareFlashed(component="BMC", image=image, version=version, sha256=sha,
                             target=target)


def test_the_golden_hash_passes_and_any_other_hash_or_image_is_a_mismatch() -> None:
    golden = golden_firmware()
    (image, version), sha = next(iter(sorted(golden.golden.items())))
    assert supply.firmware_mismatch("SRV-1", flashed(image, version, sha), golden, "e",
                                    at(0)) is None
    assert supply.firmware_mismatch("SRV-1", flashed(image, version, sha.upper()), golden, "e",
                                    at(0)) is None
    bad = supply.firmware_mismatch("SRV-1", flashed(image, version, "0" * 64), golden, "e1",
                                   at(0), station="firmware-01")
    assert bad is not None and bad.subject == "SRV-1/BMC/PCBA-1" and bad.unit == "SRV-1"
    assert bad.details["golden"] == sha and bad.station == "firmware-01"
    unknown = supply.firmware_mismatch("SRV-1", flashed("rogue-img", "9", "1" * 64), golden,
                                       "e2", at(0))
    assert unknown is not None and unknown.details["golden"] is None
    other_version = supply.firmware_mismatch("SRV-1", flashed(image, "0.0.0", sha), golden,
                                             "e3", at(0))
    assert other_version is not None  # a hash is golden only for its own (image, version)


# --- approved parts ---------------------------------------------------------------------------


def installed(mpn: str, lot: str = "LOT-1", serial: str | None = None) -> b.InstalledItem:
    return b.InstalledItem(lot=lot, mpn=mpn, serial=serial, category="psu")


def test_an_mpn_off_the_products_list_is_found_once_and_listed_ones_pass() -> None:
    approved = ApprovedParts({"A": frozenset({"PWS-3K27G-2R"})})
    items = [installed("PWS-3K27G-2R"), installed("PWS-KNOCKOFF", "LOT-2"),
             installed("PWS-KNOCKOFF", "LOT-2")]
    found = supply.unapproved_mpns("SRV-1", "A", items, approved, "e1", at(0))
    assert [(c.subject, c.lot) for c in found] == [("SRV-1/PWS-KNOCKOFF", "LOT-2")]
    assert supply.unapproved_mpns("SRV-1", "Z", items, approved, "e1", at(0)) == []
    assert supply.unapproved_mpns("SRV-1", None, items, approved, "e1", at(0)) == []


def test_what_the_simulator_installs_is_approved_for_its_product() -> None:
    approved = approved_parts()
    for p in PRODUCTS.values():
        for s in p.route.steps:
            for part in s.parts:
                assert approved.allows(p.name, p.part(part.category).mpn)
    assert approved.allows("A", parts.MAINBOARD_MPN)
    assert not approved.allows("B", parts.GPU.mpn)  # an A GPU in a B server is not approved


# --- cloned serials ---------------------------------------------------------------------------


def span(unit: str, t: float, removed: float | None = None, event: str | None = None
         ) -> supply.Span:
    return supply.Span(unit, at(t), at(removed) if removed is not None else None,
                       event or f"ev-{unit}-{t}", "LOT-GPU-1", parts.GPU.mpn)


def test_one_serial_in_two_units_at_once_is_a_clone_naming_both_units() -> None:
    found = supply.cloned_serial("GPU-7", [span("SRV-1", 0), span("SRV-2", 90)])
    assert found is not None and found.subject == "GPU-7" and found.active
    assert found.details["units"] == ["SRV-1", "SRV-2"]
    assert found.cause == "ev-SRV-2-90" and found.time == at(90) and found.unit == "SRV-2"


def test_whichever_install_is_read_first_the_finding_is_the_same() -> None:
    a, c = span("SRV-1", 0), span("SRV-2", 90)
    assert supply.cloned_serial("GPU-7", [a, c]) == supply.cloned_serial("GPU-7", [c, a])


def test_a_repair_that_refits_the_same_part_in_the_same_unit_is_no_clone() -> None:
    assert supply.cloned_serial("GPU-7", [span("SRV-1", 0, removed=50),
                                          span("SRV-1", 60)]) is None


def test_a_board_moved_to_another_unit_after_its_removal_is_no_clone() -> None:
    assert supply.cloned_serial("PCBA-3", [span("SRV-1", 0, removed=50),
                                           span("SRV-2", 50)]) is None
    assert supply.cloned_serial("PCBA-3", [span("SRV-1", 0, removed=50),
                                           span("SRV-2", 49)]) is not None


# --- lots never received ----------------------------------------------------------------------


def test_an_unreceived_lot_is_due_only_past_the_grace_on_the_installing_partition() -> None:
    lot = supply.UnreceivedLot("LOT-CBL-9003", "CBL-KIT-HGX-A", "SRV-3", "e-install", at(0),
                               ("SRV-3",))
    grace = timedelta(minutes=10)
    assert not supply.unknown_lot_due(lot, None, grace)
    assert not supply.unknown_lot_due(lot, at(9.9), grace)
    assert supply.unknown_lot_due(lot, at(10), grace)
    found = supply.unknown_lot(lot, grace)
    assert found.subject == "LOT-CBL-9003" and found.active and found.cause == "e-install"
    assert found.details["units"] == ["SRV-3"] and found.details["part"] == "CBL-KIT-HGX-A"
    assert found.time == at(10)
    cleared = supply.lot_received("LOT-CBL-9003", "CBL-KIT-HGX-A", "e-receipt", at(30))
    assert not cleared.active and cleared.subject == found.subject
