"""The synchronous interlock: `linetrace validate SERIAL --step N --station X` answers yes or
no with every reason, from the ledger and the holds in force (SQLite and PostgreSQL)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger
from linetrace.ledger.interlock import InterlockError, Verdict, validate
from linetrace.schemas import bodies as b
from linetrace.schemas.routes import packaged_routes
from linetrace.schemas.routes import progress as pg

from ..conftest import run_cli
from .route_line import Batches, holds, mainboard, serial_on

pytestmark = pytest.mark.integration
ROUTES = packaged_routes()


@pytest.fixture
def line(ledger: Ledger, tmp_path: Path) -> Iterator[Batches]:
    yield Batches(ledger, tmp_path / "keys")


def ask(ledger: Ledger, serial: str, step: int, station: str, **kw: list[str]) -> Verdict:
    with ledger.reader() as s:
        return validate(s, serial, step, station, routes=ROUTES, **kw)


def codes(v: Verdict) -> list[str]:
    return [r.code for r in v.reasons]


def test_the_interlock_answers_with_every_reason(line: Batches, ledger: Ledger) -> None:
    new = serial_on("SRV-NEW")
    assert ask(ledger, new, 50, "kitting-01") == Verdict(True, [])
    assert codes(ask(ledger, new, 90, "burnin-01")) == [pg.UNKNOWN_UNIT]
    assert codes(ask(ledger, new, 50, "burnin-01")) == [pg.WRONG_STATION]

    srv = serial_on("SRV-V")
    for step in (50, 60, 70):
        line.flow.visit(srv, step)
    line.write()
    assert ask(ledger, srv, 80, "firmware-01").allowed
    skipped = ask(ledger, srv, 90, "burnin-01")
    assert not skipped.allowed and codes(skipped) == [pg.SKIPPED_STEP]
    assert skipped.to_json() == {"allowed": False, "reasons": [{
        "code": "route.skipped_step",
        "message": "step 80 (firmware-flash) is required before step 90 and was not completed"}]}
    assert codes(ask(ledger, srv, 80, "burnin-01")) == [pg.WRONG_STATION]
    assert codes(ask(ledger, srv, 45, "burnin-01")) == [pg.UNKNOWN_STEP]

    # Held: the worker held it on arrival at burn-in; every reason is given.
    line.flow.arrive(srv, 90)
    line.write()
    [h] = holds(ledger, srv)
    both = ask(ledger, srv, 90, "burnin-01")
    assert codes(both) == [pg.SKIPPED_STEP, pg.HELD]
    assert h.hold_id in both.reasons[1].message
    assert codes(ask(ledger, srv, 80, "firmware-01")) == [pg.HELD]

    # A locked station.
    line.record("hold.placed", "HOLD-ST-FW", b.HoldPlaced(
        hold_id="HOLD-ST-FW", scope="station", target="firmware-01", reason="fixture broken",
        category="operational", code="hold.manual", placed_by="sup1"),
        cause="44444444-4444-4444-8444-444444444444")
    other = serial_on("SRV-V2")
    for step in (50, 60, 70):
        line.flow.visit(other, step)
    line.write()
    locked = ask(ledger, other, 80, "firmware-01")
    assert codes(locked) == [pg.STATION_LOCKED]
    assert "station firmware-01 is locked by hold HOLD-ST-FW: fixture broken" == \
        locked.reasons[0].message


def test_quality_gates_lots_and_parts(line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-G")
    for step in (50, 60, 70, 80):
        line.flow.visit(srv, step)
    line.flow.visit(srv, 90, test=None)  # burn-in completed without a passing test
    line.receive("LOT-OK", "699-2G520")
    line.receive("LOT-HELD", "699-2G520")
    line.write()
    assert codes(ask(ledger, srv, 100, "final-qa-01")) == [pg.GATE_FAILED]

    line.record("hold.placed", "HOLD-LOT", b.HoldPlaced(
        hold_id="HOLD-LOT", scope="lot", target="LOT-HELD", reason="suspect counterfeit",
        category="quality", code="hold.manual", placed_by="qa1"),
        cause="55555555-5555-4555-8555-555555555555")
    other = serial_on("SRV-L")
    line.flow.visit(other, 50)
    line.flow.visit(other, 60, installs=[b.InstalledItem(
        lot="LOT-OK", mpn="699-2G520", category="gpu", serial="GPU-1", slot=0)])
    line.write()
    assert ask(ledger, serial_on("SRV-L2"), 50, "kitting-01", lots=["LOT-OK"]).allowed
    v = ask(ledger, serial_on("SRV-L2"), 50, "kitting-01", lots=["LOT-HELD", "LOT-NEVER"])
    assert codes(v) == [pg.LOT_NOT_RECEIVED, pg.MATERIAL_HELD]
    assert "lot LOT-NEVER was never received" in v.reasons[0].message
    assert "HOLD-LOT" in v.reasons[1].message

    # GPU-1 is in SRV-L: installing it elsewhere is a cloned serial.
    cloned = ask(ledger, serial_on("SRV-L3"), 50, "kitting-01", parts=["GPU-1"])
    assert codes(cloned) == [pg.PART_INSTALLED_ELSEWHERE]
    assert f"part GPU-1 is installed in {other}" in cloned.reasons[0].message


def test_a_pcba_without_a_passed_ict_is_refused_as_a_part_at_integration(
        line: Batches, ledger: Ledger) -> None:
    srv, pcba = serial_on("SRV-P"), serial_on("PCBA-P")
    line.flow.visit(pcba, 20, test=None, product="A-PCBA", kind="assembly")
    line.flow.visit(pcba, 30, product="A-PCBA", kind="assembly")
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60)
    line.write()
    v = ask(ledger, srv, 70, "integration-01", parts=[pcba])
    assert codes(v) == [pg.ASSEMBLY_INCOMPLETE]
    assert "has not passed step 40 (in-circuit-test)" in v.reasons[0].message
    line.flow.visit(pcba, 40, product="A-PCBA", kind="assembly")
    line.write()
    assert ask(ledger, srv, 70, "integration-01", parts=[pcba]).allowed
    line.flow.visit(srv, 70, installs=[mainboard(pcba)])
    line.write()
    assert codes(ask(ledger, serial_on("SRV-P2"), 50, "kitting-01", parts=[pcba])) == [
        pg.PART_INSTALLED_ELSEWHERE]


def test_an_unknown_station_is_an_error(line: Batches, ledger: Ledger) -> None:
    with pytest.raises(InterlockError) as e:
        ask(ledger, "SRV-1", 50, "nowhere-01")
    assert e.value.code == "validate.unknown_station"


def test_the_cli_contract(line: Batches, ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    """`linetrace validate ... --json`: exit 0 allowed, 1 refused, 2 cannot be asked."""
    srv = serial_on("SRV-C")
    for step in (50, 60, 70):
        line.flow.visit(srv, step)
    line.write()
    env = {"LINETRACE_DB": db_url}
    data = tmp_path / "cli"

    def cli(*args: str) -> tuple[int, str, str]:
        r = run_cli("validate", *args, data_dir=data, env=env)
        return r.returncode, r.stdout, r.stderr

    rc, out, _ = cli(srv, "--step", "80", "--station", "firmware-01", "--json")
    assert (rc, json.loads(out)) == (0, {"allowed": True, "reasons": []})
    rc, out, _ = cli(srv, "--step", "90", "--station", "burnin-01", "--json",
                     "--lot", "LOT-NEVER", "--part", "GPU-X")
    doc = json.loads(out)
    assert rc == 1 and doc["allowed"] is False
    assert [r["code"] for r in doc["reasons"]] == [pg.SKIPPED_STEP, pg.LOT_NOT_RECEIVED]
    assert all(set(r) == {"code", "message"} for r in doc["reasons"])
    rc, out, _ = cli(srv, "--step", "90", "--station", "burnin-01")
    assert rc == 1 and "route.skipped_step: step 80 (firmware-flash)" in out
    rc, _, err = cli(srv, "--step", "90", "--station", "nowhere-01")
    assert rc == 2 and "validate.unknown_station" in err
    rc, _, err = cli(srv, "--step", "ninety", "--station", "burnin-01")
    assert rc == 2
