"""The line view's stations and WIP from events written through the worker's batch processor
(no broker: fast): SEMI E10 states as andon words, open faults, the unit at a station, WIP per
route step named by the route, and a station hold's lock."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from linetrace.ledger.genealogy import work_in_progress
from linetrace.ledger.hold_actions import place_hold
from linetrace.schemas import bodies as b
from linetrace.schemas.statements import new_statement, sign_statement

from ..integration.route_line import Batches
from .conftest import Console, make_console


@pytest.fixture(params=["sqlite", "postgresql"])
def console(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Console]:
    """The console on each engine (the line status's time windows and joins on both)."""
    url = (f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite"
           else str(request.getfixturevalue("pg_url")))
    c = make_console(url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


def test_station_states_faults_current_unit_and_wip(console: Console) -> None:
    line = Batches(console.ledger, console.data_dir / "keys")
    flow = line.flow

    def state(station: str, code: int, reason: str) -> None:
        line._emit(station, "station.state", station, b.StationState(state=code, reason=reason),
                   flow.tick())

    for station in ("kitting-01", "gpu-install-01", "ict-01", "aoi-01", "smt-01"):
        state(station, 1000, "producing")
    state("ict-01", 5000, "fixture FX-ICT-A-01 broken")
    line._emit("ict-01", "fault.occurred", "ict-01", b.FaultOccurred(
        fault_id="F-1", cause="pin bent", severity="Alarm", code="FX-PIN"), flow.tick())
    line._emit("aoi-01", "fault.occurred", "aoi-01", b.FaultOccurred(
        fault_id="F-2", cause="lamp", severity="Warning", code="LAMP"), flow.tick())
    line._emit("aoi-01", "fault.cleared", "aoi-01", b.FaultCleared(fault_id="F-2"), flow.tick())
    state("aoi-01", 4000, "lamp change")
    state("smt-01", 2000, "standby: waiting for work")
    flow.visit("SRV-LV-0001", 50, test=None)
    flow.arrive("SRV-LV-0001", 60)
    flow.start("SRV-LV-0001", 60)  # at the GPU install station now
    line.write()

    doc = console.as_("vic").get("/api/v1/line").json()
    st = {s["id"]: s for s in doc["stations"]}
    assert (st["ict-01"]["state"], st["ict-01"]["code"]) == ("down", 5000)
    assert st["ict-01"]["reason"] == "fixture FX-ICT-A-01 broken"
    assert [f["fault_id"] for f in st["ict-01"]["faults_open"]] == ["F-1"]
    assert st["ict-01"]["faults_open"][0]["severity"] == "Alarm"
    assert (st["aoi-01"]["state"], st["aoi-01"]["faults_open"]) == ("maintenance", [])
    assert st["smt-01"]["state"] == "idle" and st["kitting-01"]["state"] == "running"
    assert st["repair-01"]["state"] == "unknown" and st["repair-01"]["since"] is None
    assert (st["gpu-install-01"]["unit"], st["gpu-install-01"]["step"]) == ("SRV-LV-0001", 60)
    assert st["kitting-01"]["unit"] is None  # its work completed

    with console.ledger.reader() as s:
        wip = work_in_progress(s)
    assert doc["wip_total"] == sum(w.units for w in wip) == 1
    [row] = doc["wip"]
    assert (row["product"], row["kind"], row["step"], row["units"]) == ("A", "server", 60, 1)
    assert row["operation"] == "baseboard-gpu-install"  # the route's name of step 60
    assert row["state"] == wip[0].state

    # the line clock is the newest event time; the 1 h window counts the operation completed
    assert doc["clock"].startswith(flow.t.strftime("%Y-%m-%dT%H:%M:%S"))
    assert doc["throughput"]["windows"]["1h"]["operations"] == 1
    assert doc["throughput"]["windows"]["1h"]["completed"] == 0

    # a station hold locks ict-01; the unit scope counts stay apart
    placed = place_hold(console.ledger, console.plant, sign_statement(new_statement(
        "hold.place", "ict-01", {"scope": "station", "reason": "fixture broken"}, user="sam"),
        console.keys["sam"]), scope="station", target="ict-01", reason="fixture broken")
    doc = console.as_("vic").get("/api/v1/line").json()
    st = {s["id"]: s for s in doc["stations"]}
    assert st["ict-01"]["locked"] and st["ict-01"]["hold"] == placed.hold["id"]
    assert not st["aoi-01"]["locked"]
    assert doc["holds"]["count"] == 1 and doc["holds"]["by_scope"] == {"station": 1}
    assert doc["holds"]["list"][0]["id"] == placed.hold["id"]
