"""Issue 8, item 10: a station that has gone quiet notices that the broker restarted empty.

Real processes: `linetrace broker` (killed with SIGKILL and started again, empty, on the same
port) and `linetrace worker`; the station is a SyncStationClient in this process.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from ..conftest import Proc, linetrace_cmd, wait_for
from .test_station_durability import (
    T0, LedgerView, _assert_in_order, _enroll, _free_port, _kill, _need_broker, _start_broker,
)

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _worker(line_dir: Path) -> Proc:
    return Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                env={"LINETRACE_BATCH_WINDOW": "0.02"})


def _waiting(line_dir: Path, bootstrap: str) -> list[str]:
    from linetrace.cli.supervisor import waiting_for
    from linetrace.ledger.db import Ledger

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    try:
        return waiting_for(ledger, bootstrap, line_dir / "stations")
    finally:
        ledger.close()


@pytest.mark.timeout(240)
def test_an_idle_station_replays_after_the_broker_restarts_empty(line_dir: Path) -> None:
    """Emitted, acknowledged, then quiet: the worker was stopped, so the broker's log held the
    only copy of the last events when it died. The station sends nothing new, yet resends what
    the new broker lacks; the worker ends with every event exactly once, and the line is not
    called idle before."""
    from linetrace.schemas.bodies import UnitArrived
    from linetrace.schemas.signing import load_private_key_pem
    from linetrace.stations.sync_client import SyncStationClient

    _need_broker()
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = _start_broker(line_dir, port)
    worker: Proc | None = _worker(line_dir)
    station_id = "ict-idle-01"
    ledger = LedgerView(line_dir)
    key = load_private_key_pem(_enroll(line_dir, station_id).read_bytes())
    emitted: list[str] = []
    client = SyncStationClient(station_id, key, bootstrap, line_dir / "stations" / station_id)

    def emit(n: int) -> None:
        for _ in range(n):
            eid = str(uuid.uuid4())
            client.emit("unit.arrived", f"SRV-IDLE-{len(emitted) % 12:06d}",
                        UnitArrived(step=10), time=T0, event_id=eid)
            emitted.append(eid)
        client.flush(30)

    try:
        client.start()
        emit(30)
        wait_for(lambda: ledger.count(station_id) == 30, 90, what="the first 30 events stored")
        worker.stop()  # the next events stay in the broker only
        worker = None
        emit(40)
        assert client.pending == 0  # acknowledged by the broker that is about to die
        replayed_before = client.stats.replayed
        _kill(broker)
        broker = _start_broker(line_dir, port)  # empty, with a new cluster id
        # Not idle: 40 acknowledged events are in no broker and no ledger (the station may
        # already have resent them: then they wait in the new broker, unconsumed).
        assert _waiting(line_dir, bootstrap), "idle while the station's events are missing"
        worker = _worker(line_dir)
        try:
            wait_for(lambda: ledger.count(station_id) >= 70, 90, what="all 70 events stored")
        except AssertionError:
            raise AssertionError(
                f"{ledger.count(station_id)} of 70 stored; the station replayed "
                f"{client.stats.replayed - replayed_before} event(s)\n{worker.tail()}") from None
        wait_for(lambda: not _waiting(line_dir, bootstrap), 60, what="the line to be idle")
        rows = ledger.rows(station_id)
        assert sorted(r[0] for r in rows) == sorted(emitted)  # every event, exactly once
        assert ledger.rejected(station_id) == []  # the resent ones were not taken as reordered
        _assert_in_order(rows)
        assert len(emitted) == 70  # nothing new was emitted after the restart
        assert client.stats.replayed - replayed_before >= 40
    finally:
        client.stop(0)
        for p in (worker, broker):
            if p is not None:
                p.stop()


@pytest.mark.timeout(400)
def test_up_until_idle_waits_while_a_spool_holds_unacknowledged_events(line_dir: Path) -> None:
    """A station's spool holds 5 events no broker has acknowledged (it could not reach one):
    `up --until-idle` says it waits for that station instead of calling the line idle, and
    calls it idle once the station has delivered them and the worker stored them."""
    import os
    import queue
    import subprocess
    import threading

    from linetrace.schemas.bodies import UnitArrived
    from linetrace.schemas.signing import load_private_key_pem
    from linetrace.stations.sync_client import SyncStationClient

    _need_broker()
    station_id = "ict-late-01"
    key = load_private_key_pem(_enroll(line_dir, station_id).read_bytes())
    state = line_dir / "stations" / station_id
    ids = [str(uuid.uuid4()) for _ in range(5)]
    offline = SyncStationClient(station_id, key, f"127.0.0.1:{_free_port()}", state,
                                stop_timeout_s=0)
    with offline:
        for i, eid in enumerate(ids):
            offline.emit("unit.arrived", f"SRV-LATE-{i:06d}", UnitArrived(step=10), time=T0,
                         event_id=eid)
        assert offline.pending == 5

    up = subprocess.Popen(linetrace_cmd("up", "--units", "1", "--seed", "4242", "--until-idle",
                                        "--data-dir", str(line_dir)),
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                          env=os.environ.copy())
    lines: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert up.stdout is not None
        for line in up.stdout:
            lines.put(line)
        lines.put(None)

    threading.Thread(target=read, daemon=True).start()
    out: list[str] = []
    try:
        while True:
            line = lines.get(timeout=300)
            assert line is not None, "up ended without waiting for the spool:\n" + "".join(out)
            out.append(line)
            assert not line.startswith("idle:"), \
                "called idle while a spool held 5 unacknowledged events:\n" + "".join(out)
            if line.startswith(f"  waiting: station {station_id}:"):
                break
        assert "5 event(s) not yet acknowledged" in line, line
        bootstrap = (line_dir / "broker.url").read_text().strip().removeprefix("kafka://")
        with SyncStationClient(station_id, key, bootstrap, state) as online:
            online.flush(60)
        assert up.wait(300) == 0, "".join(out)
        while (line := lines.get(timeout=10)) is not None:
            out.append(line)
        assert any(ln.startswith("idle:") for ln in out), "".join(out)
        stored = {r[0] for r in LedgerView(line_dir).rows(station_id)}
        assert stored == set(ids), "up called the line idle before the station's events arrived"
    finally:
        if up.poll() is None:
            up.terminate()
            up.wait(30)
