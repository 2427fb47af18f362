"""The ledger database goes away and comes back: nothing is skipped, nothing dead-lettered.

Issue 8, item 22. In process, a real SQLite ledger whose folder is moved away (its engine
disposed, so no pooled connection survives) or a real PostgreSQL ledger whose role may no longer
log in (its connections terminated), driving `process_until_done` (a batch that keeps failing
is retried, never skipped) and `BatchProcessor.in_writer` (writes wait for the database). End to
end, a real `linetrace worker` on PostgreSQL through the same outage.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import make_url, select

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow, IngestPosition, Rejected
from linetrace.ledger.records import SourceRecord
from linetrace.schemas import signing
from linetrace.schemas.topics import partition_of
from linetrace.streams.processor import BatchProcessor
from linetrace.streams.lane import process_until_done

from ..conftest import PG_URL, Proc, linetrace_cmd, pg_admin, run_cli, wait_for
from .test_ingest import produce, work_started

pytestmark = pytest.mark.integration

KEY = signing.generate_key()
STATION = "ict-41"
RETRYING = "failed; retrying it"  # process_until_done: the batch raised, it is tried again
DB_DOWN = "ledger DB unavailable"  # in_writer: a transient database error, waited out


def records(n: int, first: int = 1) -> list[SourceRecord]:
    """`n` signed work.started of STATION on the partitions murmur2 gives their units."""
    out: list[SourceRecord] = []
    offsets: dict[int, int] = {}
    for seq in range(first, first + n):
        serial = f"PCBA-DB-{seq % 5:06d}"
        value = work_started(STATION, serial, seq)
        p = partition_of(serial.encode(), 8)
        offsets[p] = offsets.get(p, -1) + 1
        out.append(SourceRecord("line.events", p, offsets[p], serial.encode(), value,
                                signing.sign_value(value, KEY)))
    return out


class Outage:
    """Takes a ledger's database away and gives it back."""

    def down(self) -> None: ...

    def up(self) -> None: ...


class SqliteOutage(Outage):
    def __init__(self, ledger: Ledger, home: Path) -> None:
        self.ledger, self.home, self.away = ledger, home, home.with_name("away")

    def down(self) -> None:
        self.ledger.engine.dispose()
        self.home.rename(self.away)

    def up(self) -> None:
        self.away.rename(self.home)


@dataclass
class PgOutage(Outage):
    """A role of its own (owning a schema of its own): NOLOGIN and its sessions terminated is
    PostgreSQL gone for this ledger, and for no other test sharing the server."""

    admin: Any
    role: str
    url: str

    def down(self) -> None:
        self.admin.execute(f"ALTER ROLE {self.role} NOLOGIN")
        self.admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                           "WHERE usename = %s", (self.role,))

    def up(self) -> None:
        self.admin.execute(f"ALTER ROLE {self.role} LOGIN")


@pytest.fixture
def pg_outage() -> Iterator[PgOutage]:
    admin = pg_admin()
    role = f"lt_{uuid.uuid4().hex[:12]}"
    admin.execute(f"CREATE ROLE {role} LOGIN")
    admin.execute(f"CREATE SCHEMA {role} AUTHORIZATION {role}")
    url = make_url(PG_URL).set(username=role, password=None).render_as_string(
        hide_password=False)
    outage = PgOutage(admin, role, f"{url}?options=-csearch_path%3D{role}")
    yield outage
    outage.up()
    admin.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s",
                  (role,))
    admin.execute(f"DROP SCHEMA {role} CASCADE")
    admin.execute(f"DROP ROLE {role}")
    admin.close()


def enrolled(url: str, keys: Path) -> Ledger:
    ledger = Ledger(url)
    plant, _ = load_or_create_plant_key(keys)
    enroll_station(ledger, plant, STATION, "ict", KEY.public_key())
    return ledger


def stored_ids(ledger: Ledger) -> list[str]:
    with ledger.reader() as s:
        return sorted(s.scalars(select(EventRow.event_id).where(EventRow.source == STATION)))


def rejected(ledger: Ledger) -> list[str]:
    with ledger.reader() as s:
        return [f"{r.code}: {r.message}" for r in s.scalars(select(Rejected))]


def positions(ledger: Ledger) -> dict[tuple[str, int], int]:
    with ledger.reader() as s:
        return {(r.topic, r.partition): r.next_offset for r in s.scalars(select(IngestPosition))}


def ends(batch: list[SourceRecord]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for r in batch:
        assert r.partition is not None and r.offset is not None
        out[(r.topic, r.partition)] = max(out.get((r.topic, r.partition), 0), r.offset + 1)
    return out


def ids(batch: list[SourceRecord]) -> list[str]:
    from linetrace.schemas.envelope import decode_event

    return sorted(decode_event(r.value or b"").id for r in batch)


async def until(pred: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not pred():
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


def logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in r.getMessage() for r in caplog.records)


def test_a_batch_that_keeps_failing_is_retried_until_the_ledger_returns_nothing_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Screening reads the enrolled keys from the ledger (every 2 s, here on every record):
    with the ledger away that raises, and the whole batch must wait, never be skipped (Faust
    would ack it) and never be dead-lettered as invalid."""
    home = tmp_path / "db"
    home.mkdir()
    ledger = enrolled(f"sqlite:///{home / 'l.db'}", tmp_path / "keys")
    outage = SqliteOutage(ledger, home)
    batch = records(12)
    proc = BatchProcessor(ledger, "127.0.0.1:1")
    proc.keys.max_age = 0

    async def scenario() -> None:
        outage.down()
        task = asyncio.create_task(process_until_done(proc, batch))
        try:
            await until(lambda: logged(caplog, RETRYING) or logged(caplog, DB_DOWN) or task.done(),
                        "the batch to fail")
            assert not task.done(), "the batch went through with the ledger away"
            assert logged(caplog, RETRYING), [r.getMessage() for r in caplog.records]
        finally:
            outage.up()
        await asyncio.wait_for(task, 60)
        await proc.stop()

    with caplog.at_level(logging.WARNING, logger="linetrace.worker"):
        asyncio.run(scenario())
    assert rejected(ledger) == []
    assert stored_ids(ledger) == ids(batch)
    assert positions(ledger) == ends(batch)
    ledger.close()


@pytest.mark.parametrize("db", ["sqlite", "postgresql"])
def test_writes_wait_for_the_database_and_resume_when_it_returns(
        db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture,
        request: pytest.FixtureRequest) -> None:
    if db == "sqlite":
        home = tmp_path / "db"
        home.mkdir()
        ledger = enrolled(f"sqlite:///{home / 'l.db'}", tmp_path / "keys")
        outage: Outage = SqliteOutage(ledger, home)
    else:
        pg: PgOutage = request.getfixturevalue("pg_outage")
        ledger = enrolled(pg.url, tmp_path / "keys")
        outage = pg
    first, second = records(5), records(20, first=6)
    proc = BatchProcessor(ledger, "127.0.0.1:1")
    proc.keys.max_age = 3600  # the keys screening needs are already known

    async def scenario() -> None:
        await proc.process(first)  # connected and writing
        outage.down()
        task = asyncio.create_task(proc.process(second))
        try:
            await until(lambda: logged(caplog, DB_DOWN) or task.done(), "the write to fail")
            assert not task.done(), "the batch went through with the ledger away"
        finally:
            outage.up()
        out = await asyncio.wait_for(task, 60)
        assert (len(out.stored), out.rejections) == (len(second), [])
        await proc.stop()

    with caplog.at_level(logging.WARNING, logger="linetrace.worker"):
        asyncio.run(scenario())
    assert logged(caplog, "ledger DB available again")
    assert rejected(ledger) == []
    assert stored_ids(ledger) == ids(first + second)
    assert positions(ledger) == ends(first + second)
    ledger.close()


def test_a_worker_rides_out_a_postgresql_outage(broker: str, line_dir: Path, tmp_path: Path,
                                                pg_outage: PgOutage) -> None:
    """A real `linetrace worker` on PostgreSQL: the database's sessions are killed and logins
    refused while records arrive; once it is back every record is stored exactly once and
    nothing was dead-lettered or quarantined."""
    env = {"LINETRACE_DB": pg_outage.url}
    key_file = tmp_path / "ict.key"
    assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir,
                   env=env).returncode == 0
    r = run_cli("stations", "enroll", STATION, "--type", "ict", "--public-key",
                f"{key_file}.pub", data_dir=line_dir, env=env)
    assert r.returncode == 0, r.stderr
    key = signing.load_private_key_pem(key_file.read_bytes())
    ledger = Ledger(pg_outage.url)

    def send(first: int, n: int) -> list[str]:
        values = [(f"PCBA-DB-{i % 5:06d}", work_started(STATION, f"PCBA-DB-{i % 5:06d}", i))
                  for i in range(first, first + n)]
        asyncio.run(produce(broker, [("line.events", s.encode(), v, signing.sign_value(v, key))
                                     for s, v in values]))
        from linetrace.schemas.envelope import decode_event

        return [decode_event(v).id for _, v in values]

    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                  env={**env, "LINETRACE_BATCH_WINDOW": "0.02"})
    try:
        sent = send(1, 10)
        wait_for(lambda: len(stored_ids(ledger)) == 10, 120, what="the first events stored")
        ledger.engine.dispose()
        pg_outage.down()
        # The scenario, not a proof: records that arrive once the worker's key cache (2 s) is
        # stale make screening ask the ledger too, not only the write (the outage meets the
        # worker wherever it stands: a write, a checkpoint, the keys of a new batch).
        time.sleep(3)
        sent += send(11, 40)
        try:
            wait_for(lambda: DB_DOWN in worker.tail() or RETRYING in worker.tail(), 60,
                     what="the worker to meet the outage")
        finally:
            pg_outage.up()
        assert worker.proc.poll() is None, worker.tail()
        wait_for(lambda: len(stored_ids(ledger)) >= 50, 120,
                 what="writes to resume")
        from linetrace.cli.supervisor import drained

        wait_for(lambda: drained(ledger, broker), 60, 0.5, what="the worker to drain")
        assert stored_ids(ledger) == sorted(sent)  # each once
        assert rejected(ledger) == []  # an outage never turns valid events into dead letters
    except AssertionError as e:
        raise AssertionError(f"{e}\n--- worker\n{worker.tail()}") from None
    finally:
        worker.stop()
        ledger.close()
