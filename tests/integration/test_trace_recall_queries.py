"""trace and recall over read-model rows on real SQLite and PostgreSQL: sub-assemblies, parts
removed in repair, tests with their measurements, recall through a sub-assembly, time windows,
and a lot spread over more units than one SQLite IN list holds."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import insert

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import trace
from linetrace.ledger import models
from linetrace.ledger.models import EventRow, Install, Measurement, Unit
from linetrace.ledger.recall import UnknownMaterial, recall
from linetrace.ledger.views import to_data

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def unit(serial: str, kind: str = "server", **kw: Any) -> dict[str, Any]:
    return {"serial": serial, "product": "HGX-B300" if kind == "server" else "PCBA-7",
            "kind": kind, "state": "in_progress", "step": 60, "work_order": "WO-1",
            "created": T0, "updated": at(90), "installed_in": None, "order": None,
            "carton": None, "route_product": None, "route_revision": None,
            "route_sha256": None, **kw}


def part(in_unit: str, lot: str, serial: str | None, minutes: int, **kw: Any) -> dict[str, Any]:
    return {"unit": in_unit, "parent": in_unit, "serial": serial, "mpn": f"MPN-{lot}",
            "lot": lot, "category": "gpu", "pn": None, "qty": None if serial else 4,
            "slot": None, "ref": None, "station": "st-1", "installed_at": at(minutes),
            "installed_event": f"ev-{in_unit}-{serial}-{minutes}", "removed_at": None,
            "removed_event": None, "removed_reason": None, **kw}


def removed(row: dict[str, Any], minutes: int, reason: str) -> dict[str, Any]:
    return {**row, "removed_at": at(minutes), "removed_event": f"rm-{minutes}",
            "removed_reason": reason}


@pytest.fixture
def plant(ledger: Ledger) -> Ledger:
    """SRV-1 holds PCBA-1 (with two reels, one of them replaced), GPU-1 and GPU-2; GPU-0 was
    in SRV-1's slot 0 before GPU-2 and GPU-9 before GPU-1. SRV-2 also holds a GPU-LOT part."""
    with ledger.transaction() as s:
        s.execute(insert(Unit), [unit("SRV-1", order="SO-7", carton="CTN-3"),
                                 unit("PCBA-1", "assembly", installed_in="SRV-1", state="installed"),
                                 unit("SRV-2"), unit("SRV-3", step=None)])
        s.execute(insert(Install), [
            part("PCBA-1", "REEL-A", None, 1, category="smt", ref="C1-C8"),
            removed(part("PCBA-1", "REEL-B", None, 2, category="smt", ref="R1"), 3, "rework"),
            part("PCBA-1", "REEL-B2", None, 4, category="smt", ref="R1"),
            removed(part("SRV-1", "GPU-LOT", "GPU-0", 10, slot=0), 40, "repair"),
            part("SRV-1", "PCBA-LOT", "PCBA-1", 11, category="pcba"),
            removed(part("SRV-1", "GPU-LOT", "GPU-9", 12, slot=1), 30, "repair"),
            part("SRV-1", "GPU-LOT", "GPU-1", 31, slot=1),
            part("SRV-1", "GPU-LOT", "GPU-2", 41, slot=0),
            part("SRV-2", "GPU-LOT", "GPU-5", 50, slot=0),
        ])
        ids = [s.execute(insert(models.TestRun).returning(models.TestRun.id), [{
            "serial": "SRV-1", "event_id": f"t-{n}", "station": "fct-1", "time": at(m),
            "kind": kind, "method": method, "result": "pass", "detail": detail}]).scalar_one()
               for n, (m, kind, method, detail) in enumerate([
                   (70, "test", "burnin", {"fixture": "BI-2", "tests": []}),
                   (60, "test", "fct", {"fixture": "FX-1",
                                        "tests": [{"name": "pcie", "result": "pass"}]}),
                   (80, "inspection", "final", {"defects": []})])]
        s.execute(insert(Measurement), [
            {"test_id": ids[1], "test": "fct", "name": n, "value": v, "unit": "W",
             "expected": None, "min": 0.0, "max": 10.0}
            for n, v in [("p2", 2.0), ("p1", 1.0)]] + [
            {"test_id": ids[0], "test": "burnin", "name": "temp", "value": 71.5, "unit": "C",
             "expected": None, "min": None, "max": 90.0}])
    return ledger


def test_trace_lists_own_parts_then_the_sub_assembly_s_and_removed_parts_by_removal_time(
        plant: Ledger) -> None:
    with plant.reader() as s:
        t = to_data(trace(s, "SRV-1"))
    assert [(p["serial"] or p["lot"], p["installed"]) for p in t["parts"]] == [
        ("PCBA-1", "2026-03-01T08:11:00.000Z"), ("GPU-1", "2026-03-01T08:31:00.000Z"),
        ("GPU-2", "2026-03-01T08:41:00.000Z"),
        ("REEL-A", "2026-03-01T08:01:00.000Z"), ("REEL-B2", "2026-03-01T08:04:00.000Z")]
    assert [(p["serial"], p["removed"], p["reason"], p["removed_event"])
            for p in t["removed"]] == [
        ("GPU-9", "2026-03-01T08:30:00.000Z", "repair", "rm-30"),
        ("GPU-0", "2026-03-01T08:40:00.000Z", "repair", "rm-40")]
    assert (t["order"], t["carton"], t["updated"]) == ("SO-7", "CTN-3",
                                                      "2026-03-01T09:30:00.000Z")


def test_trace_gives_each_test_in_time_order_its_own_measurements_in_order(
        plant: Ledger) -> None:
    with plant.reader() as s:
        tests = to_data(trace(s, "SRV-1"))["tests"]
    assert [(x["method"], x["time"]) for x in tests] == [
        ("fct", "2026-03-01T09:00:00.000Z"), ("burnin", "2026-03-01T09:10:00.000Z"),
        ("final", "2026-03-01T09:20:00.000Z")]
    assert [[m["name"] for m in x["measurements"]] for x in tests] == [["p2", "p1"], ["temp"], []]
    assert tests[0]["fixture"] == "FX-1" and tests[0]["tests"] == [
        {"name": "pcie", "result": "pass"}]
    assert tests[2]["defects"] == []


def test_trace_of_the_sub_assembly_shows_its_reels_and_its_removed_reel(plant: Ledger) -> None:
    with plant.reader() as s:
        t = to_data(trace(s, "PCBA-1"))
    assert [p["lot"] for p in t["parts"]] == ["REEL-A", "REEL-B2"]
    assert [(p["lot"], p["qty"], p["reason"]) for p in t["removed"]] == [
        ("REEL-B", 4, "rework")]
    assert t["installed_in"] == "SRV-1" and t["tests"] == []


def test_trace_of_a_unit_with_no_parts_yet_is_the_unit_alone(plant: Ledger) -> None:
    with plant.reader() as s:
        t = to_data(trace(s, "SRV-3"))
    assert (t["serial"], t["step"], t["parts"], t["removed"], t["tests"]) == (
        "SRV-3", None, [], [], [])


def test_trace_history_leaves_out_log_positions_however_the_json_spells_them(
        plant: Ledger) -> None:
    sealed = {"hbom_sha256": "ab" * 32, "chain_head": "cd" * 32,
              "assemblies": [{"serial": "PCBA-1", "chain_head": "ef" * 32}]}
    values = [
        b'{"data": {"step": 60, "operator": "op-1", "items": [{"slot": 0}]}}',
        json.dumps({"data": sealed}).encode(),
        b'{"data": {"hbom_sha256": "ab", "\\u0063hain_head": "cd", "note": "caf\\u00e9"}}',
    ]
    with plant.transaction() as s:
        s.execute(insert(EventRow), [
            {"source": "st-1", "event_id": f"e-{i}", "type": "unit.sealed" if i else "work.started",
             "subject": "SRV-1", "time": at(100 + i), "stationseq": i, "topic": "line.events",
             "partition": 0, "offset": i, "cause": None, "keyid": "k", "signature": b"s",
             "value": v, "recorded": at(100 + i)} for i, v in enumerate(values)])
    with plant.reader() as s:
        history = to_data(trace(s, "SRV-1"))["history"]
    assert [(h["type"], h["step"], h["operator"], h["data"]) for h in history] == [
        ("work.started", 60, "op-1", {"step": 60, "operator": "op-1", "items": [{"slot": 0}]}),
        ("unit.sealed", None, None, {"hbom_sha256": "ab" * 32,
                                     "assemblies": [{"serial": "PCBA-1"}]}),
        ("unit.sealed", None, None, {"hbom_sha256": "ab", "note": "caf\u00e9"})]


def test_recall_of_a_reel_lot_names_the_sub_assembly_and_the_server_it_went_into(
        plant: Ledger) -> None:
    with plant.reader() as s:
        hits = to_data(recall(s, lot="REEL-A"))
    assert hits == [
        {"serial": "PCBA-1", "product": "PCBA-7", "state": "installed", "status": "installed",
         "part": "MPN-REEL-A", "lot": "REEL-A", "order": None, "carton": None, "via": None},
        {"serial": "SRV-1", "product": "HGX-B300", "state": "in_progress",
         "status": "installed", "part": "MPN-REEL-A", "lot": "REEL-A", "order": "SO-7",
         "carton": "CTN-3", "via": "PCBA-1"}]


def test_recall_of_a_gpu_lot_lists_installed_and_removed_parts_in_a_time_window(
        plant: Ledger) -> None:
    with plant.reader() as s:
        every = [(h.serial, h.part, h.status) for h in recall(s, lot="GPU-LOT")]
        window = [(h.serial, h.part) for h in recall(s, lot="GPU-LOT", since=at(12),
                                                     until=at(41))]
        by_part = [(h.serial, h.status) for h in recall(s, part="GPU-9")]
        by_mpn = {h.part for h in recall(s, mpn="MPN-GPU-LOT")}
        empty = recall(s, lot="GPU-LOT", since=at(100))
        with pytest.raises(UnknownMaterial):
            recall(s, lot="NO-SUCH-LOT")
    assert every == [("SRV-1", "GPU-0", "removed"), ("SRV-1", "GPU-9", "removed"),
                     ("SRV-1", "GPU-1", "installed"), ("SRV-1", "GPU-2", "installed"),
                     ("SRV-2", "GPU-5", "installed")]
    assert window == [("SRV-1", "GPU-9"), ("SRV-1", "GPU-1"), ("SRV-1", "GPU-2")]
    assert by_part == [("SRV-1", "removed")]
    assert by_mpn == {"GPU-0", "GPU-9", "GPU-1", "GPU-2", "GPU-5"}
    assert empty == []


def test_recall_of_a_lot_in_more_units_than_one_in_list_finds_every_unit(ledger: Ledger) -> None:
    n = 1234  # SQLite looks units up in chunks of 500, PostgreSQL in one array
    with ledger.transaction() as s:
        s.execute(insert(Unit), [unit(f"SRV-{i:05d}", state="packed" if i % 2 else "shipped",
                                      order=f"SO-{i}") for i in range(n)])
        s.execute(insert(Install), [part(f"SRV-{i:05d}", "BIG", f"G-{i}-{k}", i, slot=k)
                                    for i in range(n) for k in range(2)])
    with ledger.reader() as s:
        hits = recall(s, lot="BIG")
    assert len(hits) == 2 * n
    assert [(h.serial, h.part) for h in hits[:3]] == [
        ("SRV-00000", "G-0-0"), ("SRV-00000", "G-0-1"), ("SRV-00001", "G-1-0")]
    assert {(h.serial, h.state, h.order) for h in hits} == {
        (f"SRV-{i:05d}", "packed" if i % 2 else "shipped", f"SO-{i}") for i in range(n)}
