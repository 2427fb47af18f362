"""The SPC stage in the worker's batch processor (default stages), on SQLite and PostgreSQL:
limits frozen from the first points, a drift raising `spc.out_of_control` for its chart only,
back in control, a replay adding nothing, and a holding chart holding the units."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.db import Ledger
from linetrace.ledger.models import Hold
from linetrace.ledger.spc import SpcChart
from linetrace.schemas import bodies as b
from linetrace.streams.detect.spc import baseline_limits, load_config
from linetrace.streams.detect.spc_stage import SpcStage

from .route_line import Batches, commands

pytestmark = pytest.mark.integration

NOMINAL, SIGMA = 12.0, 0.15


class Ict:
    """ICT results (TP1: the 12 V rail; TP2: the 3.3 V rail) as the ICT station sends them."""

    def __init__(self, ledger: Ledger, keys: Path) -> None:
        self.batches = Batches(ledger, keys)
        self.rng = random.Random(5)
        self.n = 0
        self.tp1: list[float] = []

    def board(self, tp1: float | None = None) -> str:
        self.n += 1
        serial = f"PCBA-SPC-{self.n:04d}"
        v1 = tp1 if tp1 is not None else NOMINAL + self.rng.gauss(0, SIGMA)
        v2 = 3.3 + self.rng.gauss(0, 0.04)
        self.tp1.append(v1)
        ok = 11.4 <= v1 <= 12.6
        self.batches.flow.at(40, "unit.tested", serial, b.UnitTested(
            transaction_id=str(uuid.uuid4()), method="ICT", result="Passed" if ok else "Failed",
            fixture="FX-ICT-A-01", tests=[
                b.TestResult(name="rail_p12v", result="Passed" if ok else "Failed",
                             measurements=[b.Measurement(name="TP1", value=round(v1, 5),
                                                         unit="V", expected=12.0, min=11.4,
                                                         max=12.6)]),
                b.TestResult(name="rail_p3v3", result="Passed", measurements=[
                    b.Measurement(name="TP2", value=round(v2, 5), unit="V", expected=3.3,
                                  min=3.135, max=3.465)])]))
        return serial

    def boards(self, n: int, per_batch: int = 7, values: list[float] | None = None
               ) -> list[str]:
        serials = []
        for i in range(n):
            serials.append(self.board(values[i] if values else None))
            if (i + 1) % per_batch == 0:
                self.batches.write()
        self.batches.write()
        return serials


def alerts(ledger: Ledger) -> dict[str, dict[str, Any]]:
    with ledger.reader() as s:
        return {a.subject: {"state": a.state, "active": a.active, "priority": a.priority,
                            "occurrences": a.occurrences, "unit": a.unit,
                            "details": a.details if isinstance(a.details, dict)
                            else json.loads(a.details)}
                for a in s.scalars(select(Alert).where(Alert.condition == "spc.out_of_control"))}


def charts(ledger: Ledger) -> dict[str, SpcChart]:
    with ledger.reader() as s:
        out = {f"{c.station_type}/{c.measurement}": c for c in s.scalars(select(SpcChart))}
        s.expunge_all()
        return out


@pytest.fixture
def ict(ledger: Ledger, tmp_path: Path) -> Iterator[Ict]:
    yield Ict(ledger, tmp_path / "keys")


def test_limits_freeze_at_the_baseline_and_a_drift_alarms_its_chart_only(
        ledger: Ledger, ict: Ict) -> None:
    ict.boards(24)
    assert charts(ledger) == {}  # 24 points: still collecting
    ict.boards(30)
    frozen = charts(ledger)
    assert set(frozen) == {"ict/TP1", "ict/TP2"}
    expect = baseline_limits([round(v, 5) for v in ict.tp1[:25]])
    assert frozen["ict/TP1"].centre == pytest.approx(expect.centre)
    assert frozen["ict/TP1"].sigma == pytest.approx(expect.sigma)
    assert frozen["ict/TP1"].baseline == 25 and frozen["ict/TP1"].unit == "V"
    assert alerts(ledger) == {}  # in control, natural noise
    drift = [NOMINAL + SIGMA * 0.4 * k for k in range(1, 16)]  # 0.4 sigma per board
    serials = ict.boards(15, per_batch=3, values=drift)
    assert charts(ledger)["ict/TP1"].centre == frozen["ict/TP1"].centre  # never moves
    found = alerts(ledger)
    assert set(found) == {"ict/TP1"}
    a = found["ict/TP1"]
    assert a["active"] and a["priority"] == "medium" and a["occurrences"] == 1
    assert a["unit"] in serials and a["details"]["rules"]
    assert set(a["details"]["units"]) >= set(serials[:5]) - {a["unit"]}  # the trend's points
    assert a["details"]["units"][-1] == a["unit"] and len(a["details"]["points"]) >= 5
    assert a["details"]["unit_of_measure"] == "V"
    # a replay of the same events adds nothing
    with ledger.reader() as s:
        before = s.scalar(select(Alert.occurrences).where(Alert.subject == "ict/TP1"))
    assert before == 1
    # back in control after ten calm points (the chart's limits unchanged)
    ict.boards(12, per_batch=4, values=[NOMINAL + 0.01 * (-1) ** i for i in range(12)])
    back = alerts(ledger)["ict/TP1"]
    assert not back["active"] and back["state"] in ("rtn_unacknowledged", "normal")


def test_a_holding_chart_holds_the_units_of_its_violation(
        ledger: Ledger, tmp_path: Path) -> None:
    config = tmp_path / "spc.json"
    config.write_text(json.dumps({"station_types": ["ict"], "hold": ["ict/TP1"]}))
    ict = Ict(ledger, tmp_path / "keys")
    # the plant's file (LINETRACE_SPC, handed to the worker as SystemContext.spc_file)
    stage = next(s for s in ict.batches.processor.pipeline.stages if isinstance(s, SpcStage))
    stage.config = load_config(config)
    ict.boards(40)
    drift = [NOMINAL + 4 * SIGMA + 0.05 * k for k in range(6)]  # beyond 3 sigma, to stay
    serials = ict.boards(6, per_batch=6, values=drift)
    with ledger.reader() as s:
        held = [(h.target, h.code, h.placed_by, h.station) for h in s.scalars(
            select(Hold).where(Hold.code == "spc.out_of_control").order_by(Hold.target))]
    assert [h[0] for h in held] == serials[:5]
    assert all(h[1:] == ("spc.out_of_control", "linetrace", "ict-01") for h in held)
    told = [body["unit"] for station, body in commands(ledger)
            if body["type"] == "command.hold" and station == "ict-01"]
    assert told == [serials[4]]


@pytest.mark.slow
def test_ict_drift_through_the_broker_and_worker_alarms_the_drifting_chart(
        broker: str, worker: Any, line_dir: Path) -> None:
    """`linetrace simulate` with ict-drift from the 26th board, read by a real worker: the
    12 V rail's chart (ict/TP1) is out of control, no other chart, and `linetrace alerts` and
    `linetrace spc` say so."""
    from linetrace.cli.supervisor import drained

    from ..conftest import run_cli, wait_for

    r = run_cli("simulate", "--seed", "931", "--units", "36", "--product", "A", "--faults",
                "ict-drift:26", "--start", "2026-05-04T06:00:00Z", "--burnin-seconds", "5",
                data_dir=line_dir, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    try:
        wait_for(lambda: drained(ledger, broker) and drained(ledger, broker), 180,
                 interval=0.5, what="the worker to drain")
    finally:
        ledger.close()
    listed = run_cli("alerts", "--state", "all", "--json", data_dir=line_dir)
    assert listed.returncode == 0, listed.stderr
    spc = [a for a in json.loads(listed.stdout) if a["condition"].startswith("spc.")]
    assert [(a["condition"], a["subject"], a["priority"]) for a in spc] == [
        ("spc.out_of_control", "ict/TP1", "medium")]
    shown = run_cli("spc", "--json", data_dir=line_dir)
    assert shown.returncode == 0, shown.stderr
    charts = {f"{c['station_type']}/{c['measurement']}": c for c in json.loads(shown.stdout)}
    assert set(charts) == {f"ict/TP{i}" for i in (1, 2, 3)} | {"ict/R17", "ict/C212", "ict/U41"}
    assert charts["ict/TP1"]["state"] == "out_of_control"
    assert charts["ict/TP1"]["baseline"] == 25 and charts["ict/TP1"]["unit"] == "V"
    assert charts["ict/TP1"]["last_violation"]["time"].endswith("Z")
    assert all(c["state"] == "in_control" for k, c in charts.items() if k != "ict/TP1")
    table = run_cli("spc", data_dir=line_dir)
    assert table.returncode == 0, table.stderr
    row = next(line for line in table.stdout.splitlines() if line.startswith("ict/TP1"))
    assert "out_of_control" in row and "rail_p12v" in row


def test_a_replay_in_other_batches_gives_the_same_limits_and_alerts(
        ledger: Ledger, tmp_path: Path) -> None:
    """The same events written again into a fresh ledger, in batches of another size: the
    charts' frozen limits and the SPC alerts (state, occurrences, cause) are the same."""
    ict = Ict(ledger, tmp_path / "keys")
    written: list[Any] = []
    write = ict.batches.write

    def recording() -> list[Any]:
        written.extend(ict.batches.pending)
        return write()

    ict.batches.write = recording  # type: ignore[method-assign]
    ict.boards(40)
    ict.boards(15, per_batch=4, values=[NOMINAL + SIGMA * 0.4 * k for k in range(1, 16)])
    ict.boards(12, per_batch=5, values=[NOMINAL + 0.01 * (-1) ** i for i in range(12)])
    again = Ledger(f"sqlite:///{tmp_path / 'replay.db'}")
    try:
        replay = Batches(again, tmp_path / "keys")  # the same plant key
        for i in range(0, len(written), 11):
            replay.pending = list(written[i:i + 11])
            replay.write()

        def state(lg: Ledger) -> tuple[Any, ...]:
            with lg.reader() as s:
                limits = sorted((c.station_type, c.measurement, c.centre, c.sigma,
                                 c.baseline_event) for c in s.scalars(select(SpcChart)))
                found = sorted((a.subject, a.active, a.occurrences, a.cause, a.unit)
                               for a in s.scalars(select(Alert)
                                                  .where(Alert.condition.like("spc.%"))))
            return limits, found

        assert state(again) == state(ledger)
        assert state(ledger)[1] and state(ledger)[1][0][0] == "ict/TP1"
    finally:
        again.close()


def test_a_station_failing_far_above_its_baseline_raises_the_low_rate_alerts(
        ledger: Ledger, ict: Ict) -> None:
    ict.boards(200, per_batch=25)
    ict.boards(30, per_batch=10, values=[13.0] * 30)  # out of spec: every board fails ICT
    with ledger.reader() as s:
        found = {(a.condition, a.subject): (a.priority, a.active) for a in s.scalars(
            select(Alert).where(Alert.condition.in_(("spc.first_pass_yield",
                                                     "spc.defect_rate"))))}
    assert found == {("spc.first_pass_yield", "ict-01"): ("low", True),
                     ("spc.defect_rate", "ict"): ("low", True)}
