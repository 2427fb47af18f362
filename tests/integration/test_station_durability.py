"""The station spool keeps its promise across a broker restart and a station crash.

Real processes throughout: `linetrace broker`, `linetrace worker`, and a station program (this
module run as `python -m tests.integration.test_station_durability station ...`) that emits
through the SyncStationClient and records, fsync'd, the id of every event `emit` returned for.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import sqlite3
import sys
import time
import uuid
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from sqlalchemy import func, select

from ..conftest import Proc, linetrace_cmd, need, run_cli, wait_for

if TYPE_CHECKING:
    from linetrace.stations.client import StationClient

T0 = datetime(2026, 2, 2, 7, 0, tzinfo=UTC)
_NS = uuid.UUID("2f6c6d7e-6a43-4c3f-8f7e-7374617469f6")


# --- the station program -------------------------------------------------------------------

def event_id(station: str, i: int) -> str:
    return str(uuid.uuid5(_NS, f"{station}:{i}"))


def station_main(argv: list[str]) -> int:
    """Emit events 0..count-1, resuming after the last one recorded in --ids."""
    from linetrace.schemas.bodies import StationState, UnitArrived
    from linetrace.schemas.signing import load_private_key_pem
    from linetrace.stations.sync_client import SyncStationClient

    ap = argparse.ArgumentParser()
    for name in ("--bootstrap", "--station", "--key", "--state", "--ids"):
        ap.add_argument(name, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--units", type=int, default=40)
    ap.add_argument("--rate", type=float, default=0.0, help="events/s, 0 = as fast as it can")
    a = ap.parse_args(argv)
    ids = Path(a.ids)
    start = len(ids.read_text().splitlines()) if ids.exists() else 0
    key = load_private_key_pem(Path(a.key).read_bytes())
    fd = os.open(ids, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    began = time.monotonic()
    with SyncStationClient(a.station, key, a.bootstrap, Path(a.state), stop_timeout_s=0) as client:
        for i in range(start, a.count):
            eid = event_id(a.station, i)
            if i % 10 == 9:  # some station events too: a second topic
                client.emit("station.state", a.station, StationState(state=1000), time=T0,
                            event_id=eid)
            else:
                client.emit("unit.arrived", f"SRV-DUR-{i % a.units:06d}",
                            UnitArrived(step=10 + i // a.units % 100), time=T0, event_id=eid)
            os.write(fd, f"{i} {eid}\n".encode())  # emit returned: it must reach the ledger
            os.fsync(fd)
            if a.rate > 0:
                due = began + (i - start + 1) / a.rate
                if (delay := due - time.monotonic()) > 0:
                    time.sleep(delay)
        client.flush()
    print(f"station {a.station}: emitted {a.count - start} events", flush=True)
    return 0


# --- harness -------------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _start_broker(data_dir: Path, port: int) -> Proc:
    url = data_dir / "broker.url"
    url.unlink(missing_ok=True)
    p = Proc(linetrace_cmd("broker", "--port", str(port), "--data-dir", str(data_dir)),
             data_dir / "broker.out")
    deadline = time.monotonic() + 30
    while not url.exists():
        if p.proc.poll() is not None or time.monotonic() > deadline:
            p.stop()
            pytest.fail(f"broker did not start:\n{p.tail()}")
        time.sleep(0.05)
    return p


def _kill(p: Proc) -> None:
    os.killpg(p.proc.pid, signal.SIGKILL)
    p.proc.wait()


def _enroll(data_dir: Path, station: str) -> Path:
    key = data_dir / f"{station}.key"
    assert run_cli("stations", "keygen", "--out", str(key), data_dir=data_dir).returncode == 0
    r = run_cli("stations", "enroll", station, "--type", "ict", "--public-key", f"{key}.pub",
                data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return key


def _station(data_dir: Path, bootstrap: str, station: str, key: Path, count: int,
             rate: float = 0.0) -> Proc:
    return Proc([sys.executable, "-m", "tests.integration.test_station_durability", "station",
                 "--bootstrap", bootstrap, "--station", station, "--key", str(key),
                 "--state", str(data_dir / "stations" / station),
                 "--ids", str(data_dir / f"{station}.ids"), "--count", str(count),
                 "--rate", str(rate)], data_dir / f"{station}.out")


def _recorded(data_dir: Path, station: str) -> list[str]:
    path = data_dir / f"{station}.ids"
    return [ln.split()[1] for ln in path.read_text().splitlines()] if path.exists() else []


class LedgerView:
    def __init__(self, data_dir: Path) -> None:
        from linetrace.ledger.db import Ledger

        self.ledger = Ledger(f"sqlite:///{data_dir / 'ledger.db'}")

    def count(self, station: str) -> int:
        from linetrace.ledger.models import EventRow

        with self.ledger.reader() as s:
            return s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.source == station)) or 0

    def rows(self, station: str) -> list[tuple[str, str, int, int, str]]:
        """(event id, topic, partition, stationseq, subject) in the order the ledger stored them."""
        from linetrace.ledger.models import EventRow

        with self.ledger.reader() as s:
            return [(r.event_id, r.topic, r.partition or 0, r.stationseq or 0, r.subject)
                    for r in s.scalars(select(EventRow).where(EventRow.source == station)
                                       .order_by(EventRow.seq))]

    def drained(self, bootstrap: str) -> None:
        """Wait until the worker stored all the broker holds and published all it recorded."""
        from linetrace.cli.supervisor import drained

        wait_for(lambda: drained(self.ledger, bootstrap), 90, 0.5, what="the worker to drain")

    def rejected(self, station: str) -> list[str]:
        from linetrace.ledger.models import Rejected

        with self.ledger.reader() as s:
            return [f"{r.code}: {r.message}" for r in
                    s.scalars(select(Rejected).where(Rejected.source == station))]


def _assert_in_order(rows: list[tuple[str, str, int, int, str]]) -> None:
    """Stored in stationseq order per topic-partition (= per station here) and per unit."""
    last: dict[tuple[str, int] | str, int] = defaultdict(int)
    for _, topic, partition, seq, subject in rows:
        for k in ((topic, partition), subject):
            assert seq > last[k], f"{k}: stationseq {seq} stored after {last[k]}"
            last[k] = seq


def _need_broker() -> None:
    try:
        from linetrace.streams.broker import resolve_binary

        resolve_binary()
    except Exception as e:  # noqa: BLE001 - any reason the binary is missing
        need(False, f"the embedded broker ({e})")


# --- the tests -----------------------------------------------------------------------------

def _dead_client(state: Path, **options: Any) -> StationClient:
    """A client whose broker never answers: everything stays in its spool."""
    from linetrace.schemas.signing import generate_key
    from linetrace.stations.client import StationClient

    return StationClient("ict-spool-01", generate_key(), f"127.0.0.1:{_free_port()}", state,
                         stop_timeout_s=0, **options)


def test_emit_returns_with_no_broker_and_refuses_clearly_when_the_spool_is_full(
        tmp_path: Path) -> None:
    from linetrace.schemas.bodies import UnitArrived
    from linetrace.stations.errors import StationError
    from linetrace.stations.spool import SpoolLimits

    async def scenario() -> None:
        async with _dead_client(tmp_path / "s", limits=SpoolLimits(max_events=5)) as client:
            for i in range(5):
                await client.emit("unit.arrived", f"SRV-F-{i:06d}", UnitArrived(step=10), time=T0)
            with pytest.raises(StationError) as e:
                await client.emit("unit.arrived", "SRV-F-000009", UnitArrived(step=10), time=T0)
            assert e.value.code == "station.spool_full" and e.value.retriable
            assert "not yet acknowledged" in str(e.value)
            assert client.pending == 5 and client.last_seq("line.events") == 5
            with pytest.raises(StationError) as e:
                await client.flush(0.3)
            assert e.value.code == "station.delivery_timeout"

    asyncio.run(scenario())


def test_an_emit_retried_with_its_event_id_after_a_crash_returns_the_spooled_bytes(
        tmp_path: Path) -> None:
    from linetrace.schemas.bodies import UnitArrived

    eid = event_id("ict-spool-01", 7)

    async def session() -> bytes:
        async with _dead_client(tmp_path / "s") as client:
            value = await client.emit("unit.arrived", "SRV-R-000001", UnitArrived(step=10),
                                      time=T0, event_id=eid)
            assert client.pending == 1 and client.last_seq("line.events") == 1
            return value

    first, second = asyncio.run(session()), asyncio.run(session())
    assert first == second  # same bytes, same stationseq: no equivocation, no duplicate


def test_acknowledged_events_make_room_before_an_emit_is_refused(tmp_path: Path) -> None:
    from linetrace.stations.spool import Draft, Spool, SpoolLimits

    spool = Spool(tmp_path / "s", "ict-spool-01", SpoolLimits(max_events=3))
    spool.open()

    def draft(i: int) -> Draft:
        return Draft("line.events", 0, b"k", str(uuid.uuid4()),
                     lambda seq: (f"value {i} seq {seq}".encode(), [("h", b"v")]))

    assert all(isinstance(v, bytes) for v in spool.append([draft(i) for i in range(3)]))
    spool.record_acks([(1, 0), (2, 1)], {("line.events", 0): 2}, "c1")
    assert [isinstance(v, bytes) for v in spool.append([draft(3), draft(4), draft(5)])] == [
        True, True, False]  # two retained rows evicted, then full of unacknowledged ones
    assert spool.pending == 3 and spool.count == 3
    assert [r.seq for r in spool.next_pending(10, 1 << 20)] == [3, 4, 5]
    spool.close()
    reopened = Spool(tmp_path / "s", "ict-spool-01")
    reopened.open()
    assert reopened.last_seq("line.events") == 5 and reopened.pending == 3


def test_numbering_carries_over_from_the_first_clients_state_file(tmp_path: Path) -> None:
    from linetrace.stations.spool import LEGACY_SEQ_FILE, Spool

    state = tmp_path / "s"
    state.mkdir()
    (state / LEGACY_SEQ_FILE).write_text(
        '{"version": 1, "station_id": "ict-spool-01", "reserved": {"line.events": 128}}')
    spool = Spool(state, "ict-spool-01")
    spool.open()
    assert spool.last_seq("line.events") == 128 and spool.last_seq("line.stations") == 0


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_5000_events_reach_the_ledger_once_and_in_order_across_a_30s_broker_restart(
        line_dir: Path) -> None:
    _need_broker()
    port = _free_port()
    bootstrap = f"127.0.0.1:{port}"
    broker = _start_broker(line_dir, port)
    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                  env={"LINETRACE_BATCH_WINDOW": "0.02"})
    station_id, n = "ict-dur-01", 5000
    ledger = LedgerView(line_dir)
    station: Proc | None = None
    try:
        key = _enroll(line_dir, station_id)
        station = _station(line_dir, bootstrap, station_id, key, n, rate=140)
        wait_for(lambda: ledger.count(station_id) >= 400, 60, what="the first events in the ledger")
        _kill(broker)
        killed, killed_at = time.monotonic(), len(_recorded(line_dir, station_id))
        # emit must not block: with the broker away, the station goes on emitting
        wait_for(lambda: len(_recorded(line_dir, station_id)) >= killed_at + 1000, 120,
                 what="1,000 emits returning while the broker is away")
        time.sleep(max(0.0, 30 - (time.monotonic() - killed)))  # the scenario: a 30 s outage
        broker = _start_broker(line_dir, port)  # empty: topics, offsets and groups are gone
        assert station.proc.wait(120) == 0, station.tail()
        try:
            wait_for(lambda: ledger.count(station_id) >= n, 90, what=f"{n} events in the ledger")
        except AssertionError:
            raise AssertionError(f"{ledger.count(station_id)} of {n} in the ledger\n"
                                 f"{worker.tail()}") from None
        ledger.drained(bootstrap)  # nothing left to arrive late as a duplicate or a rejection
        rows = ledger.rows(station_id)
        recorded = _recorded(line_dir, station_id)
        assert len(recorded) == n
        assert sorted(r[0] for r in rows) == sorted(recorded)  # exactly once each
        assert ledger.rejected(station_id) == []  # none quarantined (no reordering)
        _assert_in_order(rows)
        assert worker.proc.poll() is None, "the worker must ride through the restart"
        spool = sqlite3.connect(line_dir / "stations" / station_id / "spool.db")
        assert spool.execute("SELECT count(*) FROM events WHERE acked IS NULL").fetchone()[0] == 0
    finally:
        for p in (station, worker, broker):
            if p is not None:
                p.stop()


@pytest.mark.integration
@pytest.mark.slow
@pytest.mark.timeout(180)
def test_a_station_killed_mid_run_loses_nothing_emit_returned_for_and_duplicates_nothing(
        line_dir: Path) -> None:
    _need_broker()
    broker = _start_broker(line_dir, _free_port())
    bootstrap = (line_dir / "broker.url").read_text().strip().removeprefix("kafka://")
    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                  env={"LINETRACE_BATCH_WINDOW": "0.02"})
    station_id, n = "ict-dur-02", 2000
    ledger = LedgerView(line_dir)
    station: Proc | None = None
    try:
        key = _enroll(line_dir, station_id)
        for kill_after in (500, 1200):
            station = _station(line_dir, bootstrap, station_id, key, n)
            wait_for(lambda: len(_recorded(line_dir, station_id)) >= kill_after, 60, 0.01,
                     what=f"{kill_after} events emitted")
            _kill(station)
            recorded = _recorded(line_dir, station_id)
            assert kill_after <= len(recorded) < n
        station = _station(line_dir, bootstrap, station_id, key, n)  # resumes and finishes
        assert station.proc.wait(90) == 0, station.tail()
        wait_for(lambda: ledger.count(station_id) >= n, 90, what=f"{n} events in the ledger")
        ledger.drained(bootstrap)
        rows = ledger.rows(station_id)
        recorded = _recorded(line_dir, station_id)
        assert len(recorded) == n == len(set(recorded))
        assert sorted(r[0] for r in rows) == sorted(recorded)  # none lost, none twice
        assert ledger.rejected(station_id) == []
        _assert_in_order(rows)
    finally:
        for p in (station, worker, broker):
            if p is not None:
                p.stop()


if __name__ == "__main__" and sys.argv[1:2] == ["station"]:
    sys.exit(station_main(sys.argv[2:]))
