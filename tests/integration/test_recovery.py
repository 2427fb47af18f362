"""A worker SIGKILLed at the moments that decide whether data survives, then restarted.

Real embedded broker, real `linetrace worker` processes; the kill points are armed with the
hidden `--fault-inject` flag (streams/faults.py). Nothing may be lost, nothing written twice,
and every outbox message reaches Kafka (de-duplicable on `linetrace-message-id`).
"""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from sqlalchemy import func, select

from linetrace.ledger import log as merkle_log
from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, IngestPosition, Rejected
from linetrace.ledger.outbox import MESSAGE_ID_HEADER, OutboxRow
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event

from ..conftest import Proc, linetrace_cmd, run_cli, wait_for
from .test_ingest import produce, read_all, work_started

pytestmark = pytest.mark.integration

GROUP = "linetrace-worker"


def _enrol(line_dir: Path, tmp_path: Path, station: str, kind: str):  # type: ignore[no-untyped-def]
    key_file = tmp_path / f"{station}.key"
    assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", station, "--type", kind, "--public-key",
                f"{key_file}.pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    return signing.load_private_key_pem(key_file.read_bytes())


def _worker(line_dir: Path, fault: str | None, n: int) -> Proc:
    args = ["worker", "--data-dir", str(line_dir)] + (["--fault-inject", fault] if fault else [])
    return Proc(linetrace_cmd(*args), line_dir / f"worker-{n}.out",
                env={"LINETRACE_BATCH_WINDOW": "0.02"})


def _killed_at(line_dir: Path, fault: str) -> Proc:
    """Run a worker armed with `fault` until the fault kills it (SIGKILL, as the point says)."""
    first = _worker(line_dir, fault, 1)
    try:
        wait_for(lambda: first.proc.poll() is not None, timeout=120,
                 what=f"the worker to die at {fault}")
    finally:
        first.stop()
    assert first.proc.returncode == -9, first.tail()
    return first


def _stored(ledger: Ledger, source: str) -> int:
    with ledger.reader() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.source == source)) or 0)


async def _committed(bootstrap: str, topic: str, partitions: int) -> dict[int, int]:
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=GROUP, enable_auto_commit=False)
    await c.start()
    try:
        out = {}
        for p in range(partitions):
            off = await c.committed(TopicPartition(topic, p))
            if off is not None:
                out[p] = off
        return out
    finally:
        await c.stop()


def _positions(ledger: Ledger) -> dict[int, int]:
    with ledger.reader() as s:
        return {r.partition: r.next_offset for r in s.scalars(
            select(IngestPosition).where(IngestPosition.topic == "line.events"))}


def _assert_exactly_once(ledger: Ledger, source: str, n: int) -> None:
    with ledger.reader() as s:
        assert _stored(ledger, source) == n
        assert s.scalar(select(func.count()).select_from(Rejected)) == 0
        events = s.scalar(select(func.count()).select_from(EventRow)) or 0
        assert merkle_log.tree_size(s) == events  # one leaf per event, none twice


def _sixty_events(broker: str, line_dir: Path, tmp_path: Path, station: str,
                  prefix: str) -> Ledger:
    """60 signed events of an enrolled ICT station over 7 boards (7 of the 8 partitions) on the
    broker, before any worker runs; the ledger they are to reach."""
    key = _enrol(line_dir, tmp_path, station, "ict")
    serials = [f"{prefix}-{i % 7:06d}" for i in range(60)]
    values = [work_started(station, serial, i + 1) for i, serial in enumerate(serials)]
    asyncio.run(produce(broker, [("line.events", serial.encode(), v, signing.sign_value(v, key))
                                 for serial, v in zip(serials, values, strict=True)]))
    return Ledger(f"sqlite:///{line_dir / 'ledger.db'}")


@pytest.mark.parametrize("fault", ["kill-before-write", "kill-after-write"])
def test_a_worker_killed_around_the_ledger_commit_loses_nothing_and_writes_nothing_twice(
        broker: str, line_dir: Path, tmp_path: Path, fault: str) -> None:
    ledger = _sixty_events(broker, line_dir, tmp_path, "ict-31", "PCBA-K")

    first = _killed_at(line_dir, fault)
    stored = _stored(ledger, "ict-31")
    committed = asyncio.run(_committed(broker, "line.events", 8))
    if fault == "kill-before-write":  # Kafka's offsets are ahead of what the ledger holds
        assert stored < 60 and sum(committed.values()) > sum(_positions(ledger).values())
    else:  # the ledger is ahead of Kafka's offsets
        assert stored > 0 and sum(committed.values()) < sum(_positions(ledger).values())

    second = _worker(line_dir, None, 2)
    try:
        wait_for(lambda: _stored(ledger, "ict-31") >= 60, timeout=120,
                 what="every event after the restart")
        _assert_exactly_once(ledger, "ict-31", 60)
    except AssertionError:
        raise AssertionError(f"{first.tail()}\n---\n{second.tail()}") from None
    finally:
        second.stop()
        ledger.close()


def _receipt(station: str, lot: str, seq: int) -> bytes:
    return encode_event(
        event_type="material.received", source=station, subject=lot, time="2026-03-01T08:00:00Z",
        stationseq=seq, event_id=str(uuid.uuid4()),
        body=b.MaterialReceived(lot=lot, mpn="699-2G520-0200-000", supplier="NVIDIA",
                                date_code="2026-08", qty=8))


@pytest.mark.parametrize("fault", ["kill-before-publish", "kill-after-publish"])
def test_a_system_event_committed_before_a_crash_is_published_after_the_restart_once_per_id(
        broker: str, line_dir: Path, tmp_path: Path, fault: str) -> None:
    key = _enrol(line_dir, tmp_path, "recv-07", "receiving")
    lots = [f"LOT-RC-{i}" for i in range(3)]
    asyncio.run(produce(broker, [("line.receipts", lot.encode(), v, signing.sign_value(v, key))
                                 for i, lot in enumerate(lots)
                                 for v in [_receipt("recv-07", lot, i + 1)]]))
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")

    def unsent_checks() -> int:
        with ledger.reader() as s:
            return int(s.scalar(select(func.count()).select_from(OutboxRow).where(
                OutboxRow.topic == "line.receipts", OutboxRow.sent.is_(None))) or 0)

    first = _killed_at(line_dir, fault)
    assert unsent_checks() > 0  # recorded, not marked sent

    second = _worker(line_dir, None, 2)
    try:
        wait_for(lambda: unsent_checks() == 0, timeout=120, what="the outbox to drain")
    finally:
        second.stop()
    msgs = asyncio.run(read_all(broker, "line.receipts", 3 + 3 + (3 if fault ==
                                                                  "kill-after-publish" else 0)))
    checks = [m for m in msgs if b'"type":"material.checked"' in m.value]
    ids = [dict(m.headers)[MESSAGE_ID_HEADER].decode() for m in checks]
    assert len(set(ids)) == 3  # each check reaches Kafka; a consumer de-duplicating sees it once
    seen: dict[str, bytes] = {}
    for m, i in zip(checks, ids, strict=True):
        assert seen.setdefault(i, m.value) == m.value  # a re-send carries the same bytes
    with ledger.reader() as s:
        assert s.scalar(select(func.count()).select_from(EventRow).where(
            EventRow.type == "material.checked")) == 3  # read back: duplicates, not new events
        assert s.scalar(select(func.count()).select_from(Rejected)) == 0
    ledger.close()


def test_a_consumer_moved_past_the_ledger_with_nothing_left_to_read_goes_back_for_the_rest(
        broker: str, line_dir: Path, tmp_path: Path) -> None:
    """The position check (`gaps`) runs on records that arrive. A consumer moved past what the
    ledger holds with nothing left to fetch behind it delivers none, and the partitions' tails
    waited forever: one CI run's restarted worker stored nothing more for 120 s after seeking
    two partitions back. The `jump-past-ledger` point drops the first batch and moves the
    consumer to the end of every partition; the worker must notice that the ledger stands
    still behind the broker and read the rest again."""
    ledger = _sixty_events(broker, line_dir, tmp_path, "ict-32", "PCBA-J")
    # A window long enough for the first batch to take every event: nothing arrives after it.
    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir), "--fault-inject",
                                "jump-past-ledger"), line_dir / "worker-jump.out",
                  env={"LINETRACE_BATCH_WINDOW": "1.0"})
    try:
        wait_for(lambda: _stored(ledger, "ict-32") >= 60, timeout=120,
                 what="every event after the consumer moved past the ledger")
        _assert_exactly_once(ledger, "ict-32", 60)
        log = worker.log.read_text(errors="replace")
        assert "fault injection: jump-past-ledger" in log
        assert "stopped reaching the ledger" in log
    except AssertionError as e:
        raise AssertionError(f"{e}\n{worker.tail()}") from None
    finally:
        worker.stop()
        ledger.close()
