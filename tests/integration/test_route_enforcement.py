"""Route enforcement (issue 11): the worker's route stage holds units that break their route,
routes failed units to repair, holds them for a disposition after max_loops, waits on the line
clock for a consumed sub-assembly's partition, records stuck units.

Two layers: the worker's batch processor driven directly (the default stages, as the writer
thread runs them) on SQLite and PostgreSQL; and the real `linetrace worker` on the embedded
broker, fed by StationClients, for the acceptance paths (commands published on line.commands).
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from linetrace.ledger.db import Ledger
from linetrace.ledger.holds import hold_id_for
from linetrace.ledger.models import EventRow
from linetrace.schemas import bodies as b
from linetrace.schemas.routes import progress as pg

from ..conftest import Proc, linetrace_cmd, wait_for
from .route_line import (
    STATIONS, Batches, Flow, commands, events_partition, hold_units, holds, mainboard,
    serial_on, stuck, violations, waits,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def line(ledger: Ledger, tmp_path: Path) -> Iterator[Batches]:
    yield Batches(ledger, tmp_path / "keys")


def _build_to(line: Batches, serial: str, *steps: int) -> None:
    for s in steps:
        line.flow.visit(serial, s)


# --- skip-step: held on arrival, moves only after a release -------------------------------


def test_a_server_that_skipped_a_step_is_held_when_it_arrives_and_moves_after_a_release(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-SKIP")
    _build_to(line, srv, 50, 60, 70)  # no firmware flash (step 80)
    assert line.write() == [] and violations(ledger) == []
    line.flow.arrive(srv, 90)
    decided = line.write()
    hold_id = holds(ledger, srv)[0].hold_id
    assert [c.event.type for c in decided] == ["hold.placed", "command.hold"]
    arrival = next(c for c in decided if c.event.type == "hold.placed").event
    assert arrival.body.cause is not None  # type: ignore[attr-defined]
    [(serial, step, code, vhold, message)] = violations(ledger)
    assert (serial, step, code, vhold) == (srv, 90, pg.SKIPPED_STEP, hold_id)
    assert message == "step 80 (firmware-flash) is required before step 90 and was not completed"
    [h] = holds(ledger, srv)
    assert (h.scope, h.target, h.code, h.category, h.placed_by, h.step, h.station, h.state) == (
        "unit", srv, pg.SKIPPED_STEP, "quality", "linetrace", 90, "burnin-01", "active")
    assert hold_id == hold_id_for(arrival.body.cause, pg.SKIPPED_STEP)  # type: ignore[attr-defined]
    assert hold_units(ledger, srv) == [hold_id]
    assert commands(ledger) == [("burnin-01", {"type": "command.hold", "unit": srv,
                                               "reason": message, "hold_id": hold_id})]

    # Starting anyway: no second hold, and no second command to a station told already;
    # the reasons are recorded against the hold.
    line.flow.start(srv, 90)
    assert line.write() == []
    assert len(holds(ledger, srv)) == 1
    assert [v[2:4] for v in violations(ledger)] == [
        (pg.SKIPPED_STEP, hold_id), (pg.HELD, hold_id), (pg.SKIPPED_STEP, hold_id)]
    # Moved on to another station while held: that station is told.
    line.flow.emit("final-qa-01", "unit.arrived", srv, b.UnitArrived(step=100),
                   line.flow.tick())
    assert [c.event.type for c in line.write()] == ["command.hold"]
    assert commands(ledger)[-1][0] == "final-qa-01"
    assert commands(ledger)[-1][1]["hold_id"] == hold_id

    # Released (as `linetrace hold release` records it): the unit moves on, nothing new.
    line.record("hold.released", hold_id, b.HoldReleased(
        hold_id=hold_id, reason="flashed off-line, checked", released_by=["qa1", "qa2"],
        statements=[]), cause="11111111-1111-4111-8111-111111111111")
    assert holds(ledger, srv)[0].state == "released"
    line.flow.visit(srv, 90)
    line.flow.visit(srv, 100)
    assert line.write() == []
    assert len(violations(ledger)) == 5 and len(holds(ledger, srv)) == 1


# --- rework loops and dispositions -------------------------------------------------------


def test_a_failed_burn_in_is_routed_to_repair_and_held_for_disposition_after_max_loops(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-FAIL")
    _build_to(line, srv, 50, 60, 70, 80)
    line.flow.visit(srv, 90, "Failed", test="Failed")
    decided = line.write()
    assert [c.event.type for c in decided] == ["command.route"]
    [(station, route)] = commands(ledger)
    assert station == "burnin-01"
    assert (route["unit"], route["step"], route["station_type"],
            route.get("decision", "rework")) == (srv, 900, "repair", "rework")
    assert "rework loop 1 of 2" in route["reason"]
    line.flow.repair(srv, 80)
    line.flow.visit(srv, 80)
    line.flow.visit(srv, 90, "Failed", test="Failed")  # loop 2, in one batch with the repair
    assert [c.event.type for c in line.write()] == ["command.route"]
    assert "rework loop 2 of 2" in commands(ledger)[-1][1]["reason"]
    line.flow.repair(srv, 80)
    line.flow.visit(srv, 80)
    line.write()
    line.flow.visit(srv, 90, "Failed", test="Failed")  # after max_loops: a disposition
    assert [c.event.type for c in line.write()] == ["hold.placed", "command.hold"]
    [h] = holds(ledger, srv)
    assert (h.code, h.step, h.station, h.category) == (pg.MAX_LOOPS, 90, "burnin-01", "quality")
    assert "failed again after 2 repair loop(s)" in h.reason
    assert commands(ledger)[-1] == ("burnin-01", {"type": "command.hold", "unit": srv,
                                                  "reason": h.reason, "hold_id": h.hold_id})
    assert violations(ledger) == []  # a failure is not a route violation

    # A disposition "repair" grants one loop more (as `linetrace disposition` records it).
    line.record("hold.disposition", h.hold_id, b.HoldDisposition(
        hold_id=h.hold_id, unit=srv, decision="repair", reason="GPU 3 again, try the baseboard",
        decided_by="qa1", statement=b.SignedStatement(user="qa1", keyid="0" * 16, statement="",
                                                      signature="")),
        cause="22222222-2222-4222-8222-222222222222")
    line.flow.repair(srv, 80)
    line.flow.visit(srv, 80)
    line.flow.visit(srv, 90)  # passes
    line.flow.visit(srv, 100, test="Passed")
    assert line.write() == []


def test_a_repair_that_cannot_repair_holds_the_unit_for_disposition(line: Batches,
                                                                    ledger: Ledger) -> None:
    srv = serial_on("SRV-UNABLE")
    _build_to(line, srv, 50, 60, 70, 80)
    line.flow.visit(srv, 90, "Failed", test="Failed")
    line.flow.repair(srv, 80, result="UnableToRepair")
    assert [c.event.type for c in line.write()] == ["command.route", "hold.placed",
                                                    "command.hold"]
    [h] = holds(ledger, srv)
    assert (h.code, h.step, h.station) == (pg.UNABLE_TO_REPAIR, 900, "repair-01")


def test_a_result_the_step_does_not_list_is_a_violation(line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-RESULT")
    line.flow.visit(srv, 50, "Failed", test=None)  # kitting lists Completed, Aborted
    assert [c.event.type for c in line.write()] == ["hold.placed", "command.hold"]
    assert [v[2] for v in violations(ledger, srv)] == [pg.RESULT_NOT_ALLOWED]


def test_unknown_unit_and_wrong_station(line: Batches, ledger: Ledger) -> None:
    stray = serial_on("SRV-STRAY")
    line.flow.arrive(stray, 90)  # its first event, where no route starts
    line.write()
    assert [v[2] for v in violations(ledger, stray)] == [pg.UNKNOWN_UNIT]
    srv = serial_on("SRV-WRONG")
    line.flow.visit(srv, 50)
    line.flow.emit("burnin-01", "unit.arrived", srv, b.UnitArrived(step=60),
                   line.flow.tick())  # step 60 at a burn-in station
    line.write()
    assert [v[2] for v in violations(ledger, srv)] == [pg.WRONG_STATION]


# --- held lots ---------------------------------------------------------------------------


def test_an_install_from_a_held_lot_joins_the_unit_to_the_hold(line: Batches,
                                                               ledger: Ledger) -> None:
    line.record("hold.placed", "HOLD-LOT-GPU", b.HoldPlaced(
        hold_id="HOLD-LOT-GPU", scope="lot", target="LOT-GPU-BAD", reason="supplier recall",
        category="quality", code="hold.manual", placed_by="qa1"),
        cause="33333333-3333-4333-8333-333333333333")
    srv = serial_on("SRV-LOT")
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60, installs=[b.InstalledItem(
        lot="LOT-GPU-BAD", mpn="699-2G520", category="gpu", serial="GPU-X1", slot=0)])
    assert [c.event.type for c in line.write()] == ["command.hold"]
    assert hold_units(ledger, srv) == ["HOLD-LOT-GPU"]
    assert [v[2:4] for v in violations(ledger, srv)] == [(pg.MATERIAL_HELD, "HOLD-LOT-GPU")]
    assert commands(ledger)[-1][0] == "gpu-install-01"
    line.flow.arrive(srv, 70)  # stopped at its next station
    line.write()
    assert commands(ledger)[-1] == ("integration-01", {
        "type": "command.hold", "unit": srv, "hold_id": "HOLD-LOT-GPU",
        "reason": commands(ledger)[-1][1]["reason"]})
    assert "lot LOT-GPU-BAD" in commands(ledger)[-1][1]["reason"]
    assert holds(ledger, srv) == []  # no unit hold of its own: it is in the lot's


# --- a consumed sub-assembly on another partition ------------------------------------------


def _pcba(line: Batches, pcba: str, *, ict: bool = True) -> None:
    line.flow.visit(pcba, 20, test=None, product="A-PCBA", kind="assembly")
    line.flow.visit(pcba, 30, product="A-PCBA", kind="assembly")
    if ict:
        line.flow.visit(pcba, 40, product="A-PCBA", kind="assembly")


def _server_to_integration(line: Batches, srv: str, pcba: str) -> None:
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60)
    line.flow.visit(srv, 70, installs=[mainboard(pcba)])


def _filler(line: Batches, partition: int, at: datetime) -> None:
    """An event on `partition` later than `at`: that partition's line clock passes it."""
    other = serial_on("SRV-FILL", partition)  # a station the boards do not use
    line.flow.emit("kitting-01", "unit.arrived", other, b.UnitArrived(step=50),
                   at + timedelta(minutes=5))


def test_a_server_whose_pcba_has_no_passed_ict_is_held_at_integration(line: Batches,
                                                                      ledger: Ledger) -> None:
    srv = serial_on("SRV-MB")
    pcba = serial_on("PCBA-MB", avoid=[events_partition(srv)])
    _pcba(line, pcba, ict=False)
    _filler(line, events_partition(pcba), line.flow.t + timedelta(hours=1))
    line.write()  # the board's partition is ahead of the install: decided at once
    _server_to_integration(line, srv, pcba)
    assert [c.event.type for c in line.write()] == ["hold.placed", "command.hold"]
    [(serial, step, code, hold_id, message)] = violations(ledger, srv)
    assert (serial, step, code) == (srv, 70, pg.ASSEMBLY_INCOMPLETE)
    assert message == (f"sub-assembly {pcba} (route A-PCBA) has not passed step 40 "
                       f"(in-circuit-test) before its install in {srv} at step 70")
    [h] = holds(ledger, srv)
    assert (h.hold_id, h.step, h.station) == (hold_id, 70, "integration-01")
    assert waits(ledger) == []


def test_the_pcba_check_waits_for_the_boards_partition_when_it_is_read_later(
        line: Batches, ledger: Ledger) -> None:
    srv, late_ok = serial_on("SRV-WAIT"), serial_on("SRV-LATE")
    bad = serial_on("PCBA-BAD", avoid=[events_partition(srv), events_partition(late_ok)])
    good = serial_on("PCBA-GOOD", avoid=[events_partition(srv), events_partition(late_ok),
                                         events_partition(bad)])
    start = line.flow.t
    _server_to_integration(line, srv, bad)
    _server_to_integration(line, late_ok, good)
    installed_at = line.flow.t
    line.write()  # the boards' partitions have nothing yet: both checks wait
    assert holds(ledger) == [] and [(w[0], w[1], w[2]) for w in waits(ledger)] == [
        (srv, bad, None), (late_ok, good, None)]
    # The boards' events arrive later (their stations' times are earlier than the installs).
    line.flow = Flow(line.flow.emit, start - timedelta(hours=2))
    _pcba(line, bad, ict=False)
    _pcba(line, good)
    line.write()
    # The boards' clocks are still behind the installs: the good board's completed route
    # settles its check at once (nothing to come can undo a completed route); the bad one
    # waits, its ICT may still arrive.
    assert holds(ledger) == []
    assert [(w[0], w[2] is None) for w in waits(ledger)] == [(srv, True), (late_ok, False)]
    _filler(line, events_partition(bad), installed_at)
    _filler(line, events_partition(good), installed_at)
    line.write()
    assert all(w[2] is not None for w in waits(ledger))
    [h] = holds(ledger)
    assert (h.target, h.code, h.step, h.station) == (srv, pg.ASSEMBLY_INCOMPLETE, 70,
                                                     "integration-01")
    assert [v[2] for v in violations(ledger)] == [pg.ASSEMBLY_INCOMPLETE]
    assert line.tick() == []  # resolved once


def test_an_install_naming_the_boards_last_event_waits_for_exactly_that_event(
        line: Batches, ledger: Ledger) -> None:
    """Stations name the board's last event in the install (`last_event`, as for the seal):
    the check waits for that event, whatever the board's partition clock says (here other
    units have moved it past the install while the board's own events are still to come),
    and judges the board's events up to it."""
    srv, srv_ok = serial_on("SRV-NAMED"), serial_on("SRV-NAMED-OK")
    bad = serial_on("PCBA-NAMED", avoid=[events_partition(srv), events_partition(srv_ok)])
    good = serial_on("PCBA-NAMED-OK", avoid=[events_partition(srv), events_partition(srv_ok),
                                            events_partition(bad)])
    _pcba(line, bad, ict=False)
    _pcba(line, good)
    held_back, line.pending = line.pending, []  # the boards' events: read later
    last_bad, last_good = line.last_id[bad], line.last_id[good]
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60)
    line.flow.visit(srv, 70, installs=[mainboard(bad, last_bad)])
    line.flow.visit(srv_ok, 50)
    line.flow.visit(srv_ok, 60)
    line.flow.visit(srv_ok, 70, installs=[mainboard(good, last_good)])
    _filler(line, events_partition(bad), line.flow.t)  # the boards' clocks pass the installs
    _filler(line, events_partition(good), line.flow.t)
    line.write()
    assert holds(ledger) == [] and [w[2] for w in waits(ledger)] == [None, None]
    assert line.tick() == []  # the clock says due, the named events are not here: waiting
    line.pending = held_back
    line.write()
    [h] = holds(ledger)
    assert (h.target, h.code, h.step) == (srv, pg.ASSEMBLY_INCOMPLETE, 70)
    assert all(w[2] is not None for w in waits(ledger))


def test_a_board_whose_events_show_its_route_completed_needs_no_wait(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-DONE")
    pcba = serial_on("PCBA-DONE", avoid=[events_partition(srv)])
    _pcba(line, pcba)  # its partition's clock stays before the install: nothing else there
    line.write()
    _server_to_integration(line, srv, pcba)
    assert line.write() == [] and waits(ledger) == [] and holds(ledger) == []


def test_an_install_naming_a_later_board_event_is_judged_at_that_event_not_earlier(
        line: Batches, ledger: Ledger) -> None:
    """A board that passed its route and was then scrapped, installed naming its scrap (its
    last event): the server is held whether the scrap was read before the install or after
    it (a completed route seen early is not final: a scrap or a repair's return undoes it)."""
    srv = serial_on("SRV-SCRAPPED-MB")
    pcba = serial_on("PCBA-SCRAPPED", avoid=[events_partition(srv)])
    _pcba(line, pcba)
    line.write()  # the board's route completed, read first
    line.flow.at(40, "unit.scrapped", pcba, b.UnitScrapped(reason="cracked after ICT"))
    scrap, line.pending = line.pending, []  # ...its scrap is read after the install
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60)
    line.flow.visit(srv, 70, installs=[mainboard(pcba, line.last_id[pcba])])
    line.write()
    assert holds(ledger) == [] and [w[2] for w in waits(ledger)] == [None]
    line.pending = scrap
    line.write()
    [h] = holds(ledger)
    assert (h.target, h.code, h.step) == (srv, pg.ASSEMBLY_INCOMPLETE, 70)
    assert f"sub-assembly {pcba} was scrapped" in h.reason
    assert all(w[2] is not None for w in waits(ledger))


def test_a_silent_partition_lets_a_wait_resolve_on_wall_time(ledger: Ledger,
                                                             tmp_path: Path) -> None:
    line = Batches(ledger, tmp_path / "keys", speed=60.0)
    srv = serial_on("SRV-SILENT")
    pcba = serial_on("PCBA-SILENT", avoid=[events_partition(srv)])
    _pcba(line, pcba, ict=False)
    line.write()
    # The board's partition then goes silent; the server installs it "later" than the board's
    # clock: the check waits, until that clock advances on wall time.
    line.flow.t += timedelta(hours=1)
    _server_to_integration(line, srv, pcba)
    line.write()
    assert [w[2] for w in waits(ledger)] == [None]
    assert line.tick(datetime.now(UTC)) == []  # within the grace period: not yet
    later = datetime.now(UTC) + timedelta(seconds=10 + 2 * 3600 / 60)
    assert [c.event.type for c in line.tick(later)] == ["hold.placed", "command.hold"]
    assert holds(ledger, srv)[0].code == pg.ASSEMBLY_INCOMPLETE


# --- stuck units ---------------------------------------------------------------------------


def test_a_unit_over_its_steps_max_cycle_time_is_recorded_stuck_and_cleared(
        line: Batches, ledger: Ledger) -> None:
    srv = serial_on("SRV-STUCK")
    other = serial_on("SRV-BUSY", events_partition(srv), avoid=[])
    if other == srv:
        other = serial_on("SRV-BUSY2", events_partition(srv))
    line.flow.visit(srv, 50)
    line.flow.arrive(srv, 60)
    line.flow.start(srv, 60)  # then silent at gpu-install (max_cycle_s 3600)
    line.flow.visit(other, 50)
    line.write()
    assert line.tick() == [] and stuck(ledger) == []
    line.flow.t += timedelta(hours=2)  # the partition's clock moves on with another unit
    line.flow.arrive(other, 60)
    line.write()
    stage = line.processor.pipeline.stages[1]
    stage._last_stuck = None  # type: ignore[attr-defined]
    line.tick()  # its last event was stored just now: it may only be late, not stuck
    assert stuck(ledger) == []
    stage._last_stuck = None  # type: ignore[attr-defined]
    line.tick(datetime.now(UTC) + timedelta(seconds=11))
    assert [(s[0], s[1], s[2], s[3]) for s in stuck(ledger)] == [
        (srv, 60, "gpu-install-01", None)]
    line.flow.at(60, "work.completed", srv, b.WorkCompleted(
        transaction_id="00000000-0000-4000-8000-000000000009", step=60, result="Completed"))
    completed_at = line.flow.t
    line.write()
    line.tick()  # every tick clears
    [row] = stuck(ledger)
    assert row[3] is not None and row[3].replace(tzinfo=UTC) == completed_at


# --- the real worker on the embedded broker ------------------------------------------------


def _worker(line_dir: Path, speed: str = "0") -> Proc:
    return Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                env={"LINETRACE_BATCH_WINDOW": "0.02", "LINETRACE_LINE_SPEED": speed})


async def _read(bootstrap: str, topic: str, timeout: float = 2.0) -> list[Any]:
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    out: list[Any] = []
    try:
        while True:
            batch = await c.getmany(timeout_ms=int(timeout * 1000))
            if not batch:
                return out
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await c.stop()


def _published(bootstrap: str) -> list[tuple[str, dict[str, Any]]]:
    out = []
    for m in asyncio.run(_read(bootstrap, "line.commands")):
        doc = json.loads(m.value)
        out.append((m.key.decode(), {"type": doc["type"], **doc["data"]}))
    return out


class Stations:
    """One SyncStationClient per station, sending signed events to the broker."""

    def __init__(self, bootstrap: str, state: Path) -> None:
        from linetrace.stations.sync_client import SyncStationClient

        from .route_line import KEYS

        self.clients = {sid: SyncStationClient(sid, KEYS[sid], bootstrap, state / sid)
                        for sid, _ in STATIONS.values()}
        for c in self.clients.values():
            c.start()

        self.last: str | None = None

    def emit(self, station: str, etype: str, serial: str, body: b.Body, t: datetime) -> None:
        """Each station sends on its own; a unit's events reach its partition in the order
        emitted only if the previous station delivered first (as a unit moving between
        stations makes it on a line)."""
        if self.last is not None and self.last != station:
            self.clients[self.last].flush(30)
        self.last = station
        self.clients[station].emit(etype, serial, body, time=t)

    def flush(self) -> None:
        for c in self.clients.values():
            c.flush(30)

    def stop(self) -> None:
        for c in self.clients.values():
            c.stop(5)


def _stored(ledger: Ledger, serial: str) -> int:
    with ledger.reader() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.subject == serial)) or 0)


@pytest.mark.timeout(300)
def test_the_worker_conducts_skip_step_rework_and_a_late_pcba(broker: str,
                                                              line_dir: Path) -> None:
    """The acceptance paths through `linetrace worker` (line speed 0: the line clock is event
    time): the skip-step server held at burn-in, a failed burn-in routed to repair and held
    for a disposition after max_loops, a server whose PCBA has no passed ICT held at
    integration although the board's partition is read after the server's, and one whose
    board passed ICT but arrives late not held. Every command is published on line.commands."""
    from .route_line import enroll_all

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    enroll_all(ledger, line_dir / "keys")
    worker = _worker(line_dir)
    stations = Stations(broker, line_dir / "stations")
    flow = Flow(stations.emit)
    try:
        skip, fail = serial_on("SRV-W-SKIP"), serial_on("SRV-W-FAIL")
        srv, srv_ok = serial_on("SRV-W-MB"), serial_on("SRV-W-OK")
        servers = {events_partition(s) for s in (skip, fail, srv, srv_ok)}
        bad = serial_on("PCBA-W-BAD", avoid=servers)
        good = serial_on("PCBA-W-GOOD", avoid=servers | {events_partition(bad)})
        for step in (50, 60, 70):
            flow.visit(skip, step)
        flow.arrive(skip, 90)
        for step in (50, 60, 70, 80):
            flow.visit(fail, step)
        for _ in range(2):
            flow.visit(fail, 90, "Failed", test="Failed")
            flow.repair(fail, 80)
            flow.visit(fail, 80)
        flow.visit(fail, 90, "Failed", test="Failed")
        start = flow.t
        for s, board in ((srv, bad), (srv_ok, good)):
            flow.visit(s, 50)
            flow.visit(s, 60)
            flow.visit(s, 70, installs=[mainboard(board)])
        installed_at = flow.t
        stations.flush()
        wait_for(lambda: len(waits(ledger)) == 2, 90, what="the two PCBA checks waiting")
        assert not any(h.code == pg.ASSEMBLY_INCOMPLETE for h in holds(ledger))

        late = Flow(stations.emit, start - timedelta(hours=3))  # the boards, read after
        _pcba_flow(late, bad, ict=False)
        _pcba_flow(late, good, ict=True)
        for board in (bad, good):
            stations.emit("smt-01", "unit.arrived", serial_on("PCBA-W-FILL", events_partition(board)),
                          b.UnitArrived(step=20), installed_at + timedelta(minutes=5))
        stations.flush()
        wait_for(lambda: all(w[2] is not None for w in waits(ledger)), 90,
                 what="the PCBA checks decided")

        by_code = {h.target: h.code for h in holds(ledger)}
        assert by_code == {skip: pg.SKIPPED_STEP, fail: pg.MAX_LOOPS,
                           srv: pg.ASSEMBLY_INCOMPLETE}
        assert [v[2] for v in violations(ledger, skip)] == [pg.SKIPPED_STEP]
        wanted = {
            ("burnin-01", "command.hold", skip), ("burnin-01", "command.route", fail),
            ("burnin-01", "command.hold", fail), ("integration-01", "command.hold", srv)}

        def published() -> list[tuple[str, dict[str, Any]]] | None:
            p = _published(broker)
            return p if wanted <= {(k, d["type"], d["unit"]) for k, d in p} else None

        got = wait_for(published, 60, what="the commands published on line.commands")
        routes = [d for k, d in got if d["type"] == "command.route"]
        assert [(d["unit"], d["step"], d["station_type"], d.get("decision", "rework"))
            for d in routes] == [
            (fail, 900, "repair", "rework")] * 2
        assert not any(d["unit"] == srv_ok for _, d in got)
        assert _stored(ledger, good) > 0
    finally:
        stations.stop()
        worker.stop()
        ledger.close()
        if os.environ.get("H3_KEEP"):
            print(worker.tail())


def _pcba_flow(flow: Flow, pcba: str, *, ict: bool) -> None:
    flow.visit(pcba, 20, test=None, product="A-PCBA", kind="assembly")
    flow.visit(pcba, 30, product="A-PCBA", kind="assembly")
    if ict:
        flow.visit(pcba, 40, product="A-PCBA", kind="assembly")
