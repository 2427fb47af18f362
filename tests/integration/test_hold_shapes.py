"""The holds and route violations through the CLI, over a ledger that has them: `trace`'s text
shows them and its `--json` keeps the pinned `holds` and `violations`; `holds --json` and
`validate --json` keep their pinned shapes (json_shapes.py: fields may be added, never renamed).

The ledger (SQLite, written by the worker's batch processor with its route stage): a server
that skipped the firmware flash (step 80) is held when it arrives at burn-in (a route
violation); q1 holds the GPU lot it carries and approves the release alone (still in force).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger
from linetrace.schemas import bodies as b
from linetrace.schemas.routes import progress as pg

from ..conftest import run_cli
from . import json_shapes as shape
from .route_line import Batches, holds, serial_on
from .test_holds import Line, enrol_people

pytestmark = pytest.mark.integration

LOT = "LOT-SHAPE-GPU"


@pytest.fixture(scope="module")
def held(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str, str, str]:
    data = tmp_path_factory.mktemp("held") / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        line = Batches(ledger, data / "keys")
        enrol_people(ledger, line.plant)
        srv = serial_on("SRV-SHAPE")
        line.flow.visit(srv, 50)
        line.flow.visit(srv, 60, installs=[b.InstalledItem(
            lot=LOT, mpn="699-2G520", category="gpu", serial="GPU-SHAPE-1", slot=0)])
        line.flow.visit(srv, 70)
        line.flow.arrive(srv, 90)  # no firmware flash: held on arrival
        line.write()
        route_hold = holds(ledger, srv)[0].hold_id
        people = Line(ledger, line.plant)
        lot_hold = people.place("q1", "lot", LOT, "GPU lot recalled by supplier")["id"]
        assert people.release("q1", lot_hold, "retest passed").in_force
    finally:
        ledger.close()
    return data, srv, route_hold, lot_hold


def cli(*args: str, data: Path, code: int = 0) -> str:
    done = run_cli(*args, data_dir=data)
    assert done.returncode == code, (args, done.stdout, done.stderr)
    return done.stdout


def test_trace_text_shows_the_units_holds_and_route_violations(
        held: tuple[Path, str, str, str]) -> None:
    data, srv, route_hold, lot_hold = held
    out = cli("trace", srv, data=data)
    lines = out.splitlines()
    assert f"{srv}  A (server)  state on_hold" in lines[0]
    at = lines.index("holds (2; `linetrace holds --all` has each in full):")
    assert lines[at + 1].split() == ["HOLD", "STATE", "CODE", "PLACED", "ENDED", "DECISION",
                                     "REASON"]
    rows = {ln.split()[0]: ln for ln in lines[at + 2:at + 4]}
    assert rows[route_hold].split()[1:3] == ["active", pg.SKIPPED_STEP]
    assert rows[lot_hold].split()[1:3] == ["active", "hold.manual"]
    assert rows[lot_hold].endswith("GPU lot recalled by supplier")
    at = lines.index("route violations (1):")
    assert lines[at + 1].split() == ["TIME", "STEP", "STATION", "CODE", "MESSAGE"]
    assert lines[at + 2].split()[1:4] == ["90", "burnin-01", pg.SKIPPED_STEP]
    assert lines[at + 2].endswith("step 80 (firmware-flash) is required before step 90 and "
                                  "was not completed")
    assert lines.index("parts (1):") > at  # before the genealogy, which they explain


def test_trace_json_pins_holds_and_violations(held: tuple[Path, str, str, str]) -> None:
    data, srv, route_hold, lot_hold = held
    doc = json.loads(cli("trace", srv, "--json", data=data))
    report = shape.check(doc, shape.TRACE)
    assert report.problems == []
    assert not report.never_exercised & {"$.holds", "$.violations"}
    assert [h["id"] for h in doc["holds"]] == [route_hold, lot_hold]
    assert [v["code"] for v in doc["violations"]] == [pg.SKIPPED_STEP]
    renamed = {("hold" if k == "holds" else k): v for k, v in doc.items()}
    assert "$: fields removed or renamed: ['holds']" in shape.check(renamed, shape.TRACE).problems
    doc["violations"][0]["reason"] = doc["violations"][0].pop("message")
    assert shape.check(doc, shape.TRACE).problems


def test_holds_json_keeps_its_pinned_shape(held: tuple[Path, str, str, str]) -> None:
    data, srv, route_hold, lot_hold = held
    rows = json.loads(cli("holds", "--all", "--json", data=data))
    report = shape.check(rows, [shape.HOLD])
    assert report.problems == []
    assert not report.never_exercised & {"$[].approvals", "$[].affected_units"}
    assert [(h["id"], h["state"]) for h in rows] == [(route_hold, "active"),
                                                     (lot_hold, "active")]
    assert [a["user"] for a in rows[1]["approvals"]] == ["q1"]
    assert list(rows[0])[:9] == ["id", "scope", "target", "reason", "placed_by", "placed",
                                 "state", "approvals", "affected_units"]


def test_validate_json_keeps_its_pinned_shape(held: tuple[Path, str, str, str]) -> None:
    data, srv, route_hold, lot_hold = held
    verdict = json.loads(cli("validate", srv, "--step", "90", "--station", "burnin-01",
                             "--json", data=data, code=1))
    report = shape.check(verdict, shape.VERDICT)
    assert report.problems == [] and not report.never_exercised
    assert verdict["allowed"] is False and any(route_hold in r["message"]
                                               for r in verdict["reasons"])
    assert shape.check({**verdict, "allowed": "no"}, shape.VERDICT).problems
