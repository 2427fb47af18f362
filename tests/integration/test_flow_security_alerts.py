"""Flow and security alerts end to end (issue 12).

Two layers, as the route-enforcement tests: the worker's batch processor driven directly (the
default stages and the ledger writer, as the worker's writer thread runs them) on SQLite and
PostgreSQL; and the real `linetrace worker` on the embedded broker, fed forged records, a
simulated line with the skip-step, station-down and stuck-unit faults and a clean one a week
later (its times far from the line clock, yet plausible: no absurd-time alarm), read back as
`linetrace alerts --json` shows them.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.alerts.conditions import alert_id
from linetrace.ledger.alerts.engine import apply_action
from linetrace.ledger.alerts.views import AlertView, list_alerts
from linetrace.ledger.db import Ledger
from linetrace.ledger.records import Candidate, Rejection, SourceRecord
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import partition_of
from linetrace.streams.ingest import screen

from ..conftest import Proc, linetrace_cmd, run_cli, wait_for
from .route_line import KEYS, Batches, events_partition, mainboard, serial_on, stuck

pytestmark = pytest.mark.integration


@pytest.fixture
def line(ledger: Ledger, tmp_path: Path) -> Iterator[Batches]:
    yield Batches(ledger, tmp_path / "keys")


MINE = ("flow.", "security.")


def alerts(ledger: Ledger) -> dict[tuple[str, str], AlertView]:
    """The flow and security alerts (other detectors judge the same events: not here)."""
    with ledger.reader() as s:
        return {(a.condition, a.subject): a for a in list_alerts(s, "all")
                if a.condition.startswith(MINE)}


def station_report(line: Batches, station: str, etype: str, body: b.Body, t: datetime) -> None:
    """A signed station report (line.stations, keyed by the station id) in the next batch."""
    line.seq[station] = line.seq.get(station, 0) + 1
    value = encode_event(event_type=etype, source=station, subject=station, body=body, time=t,
                         stationseq=line.seq[station], event_id=str(uuid.uuid4()))
    kid, sig = signing.read_signature(signing.sign_value(value, KEYS[station]))
    part = partition_of(station.encode(), 4)
    offset = line.offsets.get(("line.stations", part), 0)
    line.offsets[("line.stations", part)] = offset + 1
    line.pending.append(Candidate(SourceRecord("line.stations", part, offset, station.encode(),
                                               value), decode_event(value), kid, sig))


def stages(line: Batches) -> dict[str, Any]:
    return {s.name: s for s in line.processor.pipeline.stages}


def build(line: Batches, srv: str, *steps: int) -> None:
    """A server through `steps` by its route (its mainboard PCBA built first, ICT passed)."""
    pcba = serial_on(f"PCBA-{srv}")
    for step in (20, 30, 40):
        line.flow.visit(pcba, step, test=None if step == 20 else "Passed", product="A-PCBA",
                        kind="assembly")
    line.write()
    for step in steps:
        line.flow.visit(srv, step, installs=[mainboard(pcba, line.last_id[pcba])]
                        if step == 70 else None)


def scan(line: Batches, now: datetime) -> None:
    """The worker's tick at wall time `now`, with the stuck-unit and flow scans due."""
    st = stages(line)
    st["routes"]._last_stuck = None
    st["flow"]._last_scan = None
    line.tick(now)


# --- flow ------------------------------------------------------------------------------------


def test_a_unit_that_skipped_a_step_raises_one_route_violation_alert_until_released(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-SKIPALERT")
    for step in (50, 60, 70):  # no firmware flash (step 80)
        line.flow.visit(srv, step)
    line.write()
    assert alerts(ledger) == {}
    line.flow.arrive(srv, 90)
    line.flow.start(srv, 90)  # a second violation while held: the same activation
    line.write()
    got = alerts(ledger)
    assert set(got) == {("flow.route_violation", srv)}
    a = got["flow.route_violation", srv]
    assert a.priority == "medium" and a.state == "unacknowledged" and a.occurrences == 1
    assert a.unit == srv and "route.skipped_step" in a.details["codes"]
    assert a.id == alert_id("flow.route_violation", srv)
    hold_id = a.details["holds"][0]
    line.record("hold.released", hold_id, b.HoldReleased(  # as `linetrace hold release` does
        hold_id=hold_id, reason="flashed by hand", released_by=[], statements=[]), "rel-1")
    scan(line, datetime.now(UTC))  # a release recorded outside the worker: the tick sees it
    assert alerts(ledger)["flow.route_violation", srv].state == "rtn_unacknowledged"


def test_station_down_is_raised_and_cleared_and_units_stuck_there_are_suppressed(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-WAITQA")
    other = serial_on("SRV-BUSYQA", events_partition(srv))
    build(line, srv, 50, 60, 70, 80, 90)
    line.flow.arrive(srv, 100)  # at final QA ...
    line.flow.start(srv, 100)
    station_report(line, "final-qa-01", "station.state",
                   b.StationState(state=4000, reason="fixture controller fault"), line.flow.tick())
    line.flow.visit(other, 50)
    line.write()
    down = alerts(ledger)["flow.station_down", "final-qa-01"]
    assert down.state == "unacknowledged" and down.priority == "medium"
    line.flow.t += timedelta(hours=3)  # ... and the partition's clock moves on with another unit
    line.flow.arrive(other, 60)
    line.write()
    scan(line, datetime.now(UTC) + timedelta(seconds=11))
    assert [s[0] for s in stuck(ledger)] == [srv]
    got = alerts(ledger)
    waiting = got["flow.stuck_unit", srv]
    assert waiting.state == "suppressed" and waiting.parent == down.id
    annunciated = [a for a in got.values() if a.state == "unacknowledged"]
    assert [a.condition for a in annunciated] == ["flow.station_down"]
    station_report(line, "final-qa-01", "station.state", b.StationState(state=1000),
                   line.flow.tick())
    line.write()
    assert alerts(ledger)["flow.station_down", "final-qa-01"].state == "rtn_unacknowledged"


def test_a_stuck_unit_raises_an_alert_that_clears_when_it_moves(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-STUCKALERT")
    other = serial_on("SRV-BUSYALERT", events_partition(srv))
    line.flow.visit(srv, 50)
    line.flow.arrive(srv, 60)
    tx = line.flow.start(srv, 60)
    line.flow.visit(other, 50)
    line.write()
    line.flow.t += timedelta(hours=2)
    line.flow.arrive(other, 60)
    line.write()
    scan(line, datetime.now(UTC) + timedelta(seconds=11))
    a = alerts(ledger)["flow.stuck_unit", srv]
    assert a.state == "unacknowledged" and a.parent is None and a.details["step"] == 60
    line.flow.at(60, "work.completed", srv, b.WorkCompleted(transaction_id=tx, step=60,
                                                             result="Completed"))
    line.write()
    scan(line, datetime.now(UTC) + timedelta(seconds=22))
    assert alerts(ledger)["flow.stuck_unit", srv].state == "rtn_unacknowledged"


def test_a_fault_storm_is_raised_at_the_fifth_fault_in_ten_minutes(
        line: Batches, ledger: Ledger) -> None:
    t = line.flow.t
    for i in range(4):
        station_report(line, "ict-01", "fault.occurred", b.FaultOccurred(
            fault_id=f"F-{i}", cause="probe contact", severity="Error", code="E42"),
            t + timedelta(minutes=3 * i))  # 0, 3, 6, 9: four in ten minutes
    line.write()
    assert alerts(ledger) == {}
    station_report(line, "ict-01", "fault.occurred", b.FaultOccurred(
        fault_id="F-4", cause="probe contact", severity="Error", code="E42"),
        t + timedelta(minutes=9.5))
    line.write()
    storm = alerts(ledger)["flow.fault_storm", "ict-01"]
    assert storm.state == "unacknowledged" and storm.details["faults"] == 5
    station_report(line, "ict-01", "fault.cleared", b.FaultCleared(fault_id="F-4"),
                   t + timedelta(minutes=30))
    line.write()
    assert alerts(ledger)["flow.fault_storm", "ict-01"].state == "rtn_unacknowledged"


def test_a_clean_line_raises_nothing(line: Batches, ledger: Ledger) -> None:
    for sid in ("gpu-install-01", "final-qa-01"):
        station_report(line, sid, "station.state", b.StationState(state=1000, reason="producing"),
                       line.flow.tick())
    srv = serial_on("SRV-CLEAN")
    build(line, srv, 50, 60, 70, 80, 90, 100, 110, 120)
    line.write()
    scan(line, datetime.now(UTC) + timedelta(seconds=11))
    assert alerts(ledger) == {}


# --- security --------------------------------------------------------------------------------


def forged(line: Batches, station: str, key: Ed25519PrivateKey | None = None,
           t: datetime | None = None, offset: int = 0) -> Rejection:
    """A unit event claiming `station`, screened by ingest: signed with `key` (an unenrolled
    one: unknown station or key), or with the station's key over other bytes (forged)."""
    serial = serial_on("SRV-FORGED")
    value = encode_event(event_type="unit.arrived", source=station, subject=serial,
                         body=b.UnitArrived(step=90), time=t or line.flow.t, stationseq=1,
                         event_id=str(uuid.uuid4()))
    headers = signing.sign_value(value, key or KEYS.get(station) or signing.generate_key())
    if key is None:
        value = value.replace(b'"data":{"step":90}', b'"data":{"step":91}')  # bytes unsigned
    record = SourceRecord("line.events", events_partition(serial), 1000 + offset,
                          serial.encode(), value, headers)
    out = screen(record, line.processor.keys)
    assert isinstance(out, Rejection), out
    return out


def test_quarantined_records_raise_one_high_alert_per_station_with_the_counts(
        line: Batches, ledger: Ledger) -> None:
    bad = [forged(line, "burnin-01", offset=0), forged(line, "burnin-01", offset=1),
           forged(line, "ghost-07", key=signing.generate_key(), offset=2)]
    assert [r.code for r in bad] == ["signature.invalid", "signature.invalid", "station.unknown"]
    line.processor.write_isolating([], bad, {})
    got = alerts(ledger)
    assert set(got) == {("security.quarantine", "burnin-01"),
                        ("security.quarantine", "ghost-07")}
    burnin = got["security.quarantine", "burnin-01"]
    assert burnin.priority == "high" and burnin.state == "unacknowledged"
    assert burnin.details["counts"] == {"signature.invalid": 2} and burnin.latched
    assert got["security.quarantine", "ghost-07"].details["counts"] == {"station.unknown": 1}
    line.processor.write_isolating([], bad, {})  # a replay of the same records
    again = alerts(ledger)["security.quarantine", "burnin-01"]
    assert again.occurrences == 1 and again.state == "unacknowledged"
    with ledger.transaction() as s:
        apply_action(s, burnin.id, "acknowledge", user="alice", time=datetime.now(UTC),
                     cause="ack-1")
    assert alerts(ledger)["security.quarantine", "burnin-01"].state == "normal"
    line.processor.write_isolating([], bad, {})  # still a replay: nothing new
    assert alerts(ledger)["security.quarantine", "burnin-01"].state == "normal"
    line.processor.write_isolating([], [forged(line, "burnin-01", offset=3)], {})
    after = alerts(ledger)["security.quarantine", "burnin-01"]
    assert after.occurrences == 2 and after.state == "unacknowledged"
    assert after.details["counts"] == {"signature.invalid": 3}


def test_an_event_with_an_absurd_time_raises_a_security_alert_for_its_station(
        line: Batches, ledger: Ledger) -> None:
    station_report(line, "burnin-01", "station.state", b.StationState(state=1000),
                   line.flow.tick())
    line.write()
    station_report(line, "burnin-01", "station.state", b.StationState(state=1000),
                   datetime(1900, 1, 1, tzinfo=UTC))
    line.write()
    a = alerts(ledger)["security.absurd_time", "burnin-01"]
    assert a.priority == "high" and a.state == "unacknowledged"
    assert a.details["last"]["event_time"].startswith("1900-01-01")


# --- the real worker on the embedded broker --------------------------------------------------


async def _send(bootstrap: str, records: list[tuple[str, bytes, bytes, list[Any]]]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for topic, key, value, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


def _alerts_json(data: Path) -> dict[tuple[str, str], dict[str, Any]]:
    """Every alert, from `linetrace alerts --state all --json` (the contract shape)."""
    r = run_cli("alerts", "--state", "all", "--json", data_dir=data)
    assert r.returncode == 0, r.stderr
    return {(a["condition"], a["subject"]): a for a in json.loads(r.stdout)}


@pytest.mark.slow
def test_worker_raises_security_and_flow_alerts(broker: str, line_dir: Path) -> None:
    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                  env={"LINETRACE_BATCH_WINDOW": "0.02", "LINETRACE_LINE_SPEED": "0"})
    try:
        for seed, product, faults, start in (
                (712, "A", "skip-step:2,station-down:1,stuck-unit:3", "2026-04-06T06:00:00Z"),
                (713, "mix", "none", "2026-04-13T06:00:00Z")):  # a clean run: nothing
            r = run_cli("simulate", "--seed", str(seed), "--units", "3", "--product", product,
                        "--faults", faults, "--start", start, "--burnin-seconds", "30",
                        data_dir=line_dir, timeout=180)
            assert r.returncode == 0, r.stdout + r.stderr
        t = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)
        records = []
        for station, key in (("final-qa-01", signing.generate_key()),  # enrolled, wrong key
                             ("ghost-07", signing.generate_key())):  # never enrolled
            serial = f"SRV-FORGED-{station}"
            value = encode_event(event_type="unit.arrived", source=station, subject=serial,
                                 body=b.UnitArrived(step=100), time=t, stationseq=1,
                                 event_id=str(uuid.uuid4()))
            records.append(("line.events", serial.encode(), value, signing.sign_value(value, key)))
        asyncio.run(_send(broker, records))
        want = {("security.quarantine", "final-qa-01"), ("security.quarantine", "ghost-07"),
                ("flow.route_violation", "SRV-S712-000002"),
                ("flow.station_down", "final-qa-01"), ("flow.stuck_unit", "SRV-S712-000003")}
        wait_for(lambda: want <= set(_alerts_json(line_dir)), 120, interval=0.5,
                 what=f"the alerts {sorted(want)}\n{worker.tail()}")
        got = _alerts_json(line_dir)
        quarantine = got["security.quarantine", "final-qa-01"]
        assert quarantine["priority"] == "high" and quarantine["state"] == "unacknowledged"
        assert got["security.quarantine", "ghost-07"]["priority"] == "high"
        assert got["flow.station_down", "final-qa-01"]["state"] == "rtn_unacknowledged"
        assert got["flow.route_violation", "SRV-S712-000002"]["state"] == "unacknowledged"
        assert got["flow.stuck_unit", "SRV-S712-000003"]["state"] == "rtn_unacknowledged"
        unexpected = {k for k, a in got.items() if k not in want and k[0].split(".")[0]
                      in ("flow", "security") and a["priority"] in ("medium", "high")}
        assert unexpected == set(), unexpected
    finally:
        worker.stop()
