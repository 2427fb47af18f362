"""The one relay: publishes the ledger's outbox to Kafka, in order, until the broker acks.

Exactly one relay is active per ledger: it holds the `relay` lease (renewed every pass,
taken over by another worker when it expires). It publishes unsent rows in `seq` order, only
once every older transaction is visible (`outbox.pending`), waits for `acks=all`, then marks
them sent. A publish that fails is retried with backoff from the first unacknowledged row, so
per key the order holds; a crash between publish and mark re-sends the same bytes with the
same `linetrace-message-id`, which consumers de-duplicate on. An acknowledgement counts only
from the broker described (without creating topics) just before and again just after the
publish: a restarted embedded broker starts empty and acknowledges a produce to a topic it
does not have while storing nothing. A state change (broker lost, back) is logged once, not
per message.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from aiokafka import AIOKafkaProducer
from opentelemetry import trace
from opentelemetry.trace import Span
from sqlalchemy.exc import SQLAlchemyError

from linetrace.ledger import outbox
from linetrace.ledger.db import Ledger
from linetrace.schemas.topics import ALL_TOPICS

from . import telemetry
from .broker import BrokerView, describe
from .errors import BrokerError
from .faults import NO_FAULTS, Faults

log = logging.getLogger("linetrace.relay")

LEASE = "relay"


class BrokerChanged(BrokerError):
    """The broker that acknowledged a publish is not the one described before it (internal:
    logged by the relay, which publishes the batch again)."""

    code = "broker.changed"


@dataclass(frozen=True)
class RelayPolicy:
    lease_ttl: float = 10.0  # seconds a silent holder keeps the lease
    poll: float = 0.5  # seconds between passes when nobody wakes the relay
    batch: int = 500
    gap_grace: float = 5.0  # seconds a seq gap may wait for an older transaction
    backoff_max: float = 2.0
    topic_grace: float = 5.0  # seconds a missing topic may be waited for before a warning


@dataclass
class RelayStats:
    published: int = 0
    failures: int = 0  # passes that failed on the broker side (down, restarted, refused)
    backlog: int = 0
    active: bool = False
    by_kind: dict[str, int] = field(default_factory=dict)


def holder_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Relay:
    def __init__(self, ledger: Ledger, bootstrap: str, policy: RelayPolicy | None = None,
                 holder: str | None = None, faults: Faults = NO_FAULTS) -> None:
        self.ledger = ledger
        self.faults = faults
        self.bootstrap = bootstrap
        self.policy = policy or RelayPolicy()
        self.holder = holder or holder_name()
        self.stats = RelayStats()
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox-relay")
        self._wake = asyncio.Event()
        self._producer: AIOKafkaProducer | None = None
        self._mark: outbox.Watermark | None = None
        self._task: asyncio.Task[None] | None = None
        self._trouble: str | None = None  # "db" or "broker" while passes fail
        self._held_since: float | None = None  # monotonic time the lease was last renewed
        self._incarnation: str | None = None  # the cluster id of the broker last published to
        # topics the relay waits for -> since when (monotonic; None once it has said so)
        self._waiting: dict[str, float | None] = {}

    def wake(self) -> None:
        """Something was committed to the outbox: publish it now rather than at the next poll."""
        self._wake.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="outbox-relay")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):
                pass
        await self._db_call(self._release)
        if self._producer is not None:
            await self._producer.stop()
        self._db.shutdown(wait=True)

    async def _db_call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._db, fn, *args)

    # -- database side (relay thread) -------------------------------------------------------
    def _take(self) -> bool:
        """Hold the lease: renewed in the DB once a third of its time has passed (a write
        transaction per wake-up would contend with the writer for SQLite's lock)."""
        now = time.monotonic()
        if self._held_since is not None and now - self._held_since < self.policy.lease_ttl / 3:
            return True
        with self.ledger.transaction() as s:
            held = outbox.take_lease(s, LEASE, self.holder,
                                     timedelta(seconds=self.policy.lease_ttl))
        self._held_since = now if held else None
        return held

    def _release(self) -> None:
        self._held_since = None
        try:
            with self.ledger.transaction() as s:
                outbox.release_lease(s, LEASE, self.holder)
        except Exception as e:  # shutting down: the lease simply expires
            log.debug("could not release the relay lease: %s", e)

    def _pending(self) -> list[outbox.Pending]:
        with self.ledger.reader() as s:
            if self._mark is None:
                self._mark = outbox.start_watermark(s)
            rows = outbox.pending(s, self._mark, self.policy.batch,
                                  timedelta(seconds=self.policy.gap_grace))
            self.stats.backlog = telemetry.GAUGES.backlog = outbox.backlog(s)
            return rows

    def _mark_sent(self, seqs: list[int]) -> None:
        with self.ledger.transaction() as s:
            outbox.mark_sent(s, seqs)

    def _mark_failed(self, seq: int, error: str) -> None:
        with self.ledger.transaction() as s:
            outbox.mark_failed(s, seq, error)

    # -- broker side -------------------------------------------------------------------------
    async def _ensure_producer(self) -> AIOKafkaProducer:
        if self._producer is None:
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=2,
                                 request_timeout_ms=5000, retry_backoff_ms=100)
            await p.start()
            self._producer = p
        return self._producer

    def _ready(self, view: BrokerView, topic: str) -> bool:
        """Publish only to a topic the broker has, with the contract's partition count: a
        restarted embedded broker starts empty and acknowledges a produce to a topic it does
        not have while storing nothing, and one it auto-creates gets 4 partitions."""
        want = ALL_TOPICS.get(topic)
        have = view.partitions.get(topic)
        if have is not None and (want is None or have == want):
            self._waiting.pop(topic, None)
            return True
        now = time.monotonic()
        since = self._waiting.setdefault(topic, now)
        # A restarted embedded broker gets its topics within a second (`linetrace broker`):
        # only a wait that lasts is worth a warning, and one warning per wait.
        if since is not None and now - since >= self.policy.topic_grace:
            self._waiting[topic] = None
            log.warning("outbox relay: waiting for topic %s: the broker has %s, the contract "
                        "says %s partition(s) (`linetrace broker` creates the topics at start)",
                        topic, f"{have} partition(s)" if have else "no such topic", want or "any")
        return False

    async def publish(self, rows: list[outbox.Pending]) -> int:
        """Publish rows in order; returns how many were acknowledged (a prefix).

        The broker is described (without creating topics) before and after: rows go only to
        topics it has with the right count, and they count as sent only if the broker that
        acknowledged them is still the same incarnation afterwards (the embedded broker gets
        a new cluster id at every start, empty)."""
        producer = await self._ensure_producer()
        if any(r.message.kind == "system" for r in rows):
            self.faults.at("kill-before-publish")
        before = await describe(producer.client, {r.message.topic for r in rows})
        if self._incarnation is not None and before.cluster_id != self._incarnation:
            log.info("outbox relay: the broker is a new one (cluster id %s, was %s); "
                     "publishing once it has the topics", before.cluster_id, self._incarnation)
            await producer.client.force_metadata_update()
        self._incarnation = before.cluster_id
        futures: list[tuple[outbox.Pending, asyncio.Future[Any]]] = []
        spans: list[Span] = []
        tracing = telemetry.tracing()
        for row in rows:
            m = row.message
            if not self._ready(before, m.topic):
                break
            headers = m.headers
            cause = telemetry.context_of(headers) if tracing else None
            if cause is not None:  # the trace of what caused it goes on to the consumers
                span = telemetry.publish_span(m.topic, m.message_id, cause)
                spans.append(span)
                headers = telemetry.with_context(headers, trace.set_span_in_context(span))
            fut = await producer.send(m.topic, value=m.value, key=m.key, headers=headers)
            futures.append((row, fut))
        acked: list[int] = []
        error: Exception | None = None
        failed: outbox.Pending | None = None
        for row, fut in futures:
            try:
                await fut
            except Exception as e:
                error, failed = e, row
                break
            acked.append(row.seq)
        for span in spans:
            span.end()
        if acked:
            sent = {row.message.topic for row, _ in futures[: len(acked)]}
            after = await describe(producer.client, sent)
            if after.cluster_id != before.cluster_id or any(
                    after.partitions.get(t) != before.partitions.get(t) for t in sent):
                self._incarnation = after.cluster_id
                raise BrokerChanged(
                    f"the broker changed while publishing (cluster id {after.cluster_id}, was "
                    f"{before.cluster_id}); its acknowledgements of {len(acked)} message(s) "
                    "are not trusted, they are published again")
            if any(row.message.kind == "system" for row, _ in futures[: len(acked)]):
                self.faults.at("kill-after-publish")
            await self._db_call(self._mark_sent, acked)
            self.stats.published += len(acked)
            telemetry.PUBLISHED.add(len(acked))
            for row, _ in futures[: len(acked)]:
                k = row.message.kind
                self.stats.by_kind[k] = self.stats.by_kind.get(k, 0) + 1
        if failed is not None and error is not None:
            await self._db_call(self._mark_failed, failed.seq, f"{type(error).__name__}: {error}")
            raise error
        return len(acked)

    async def pass_once(self) -> int:
        """One pass: take the lease, publish what is visible. Returns the count published."""
        if not await self._db_call(self._take):
            self.stats.active = False
            return 0
        if not self.stats.active:
            log.info("outbox relay active (%s)", self.holder)
            self._mark = None  # another holder may have published meanwhile
        self.stats.active = True
        total = 0
        while True:
            rows = await self._db_call(self._pending)
            if not rows:
                return total
            n = await self.publish(rows)
            total += n
            if n < len(rows):
                return total

    async def run(self) -> None:
        delay = 0.1
        while True:
            try:
                await self.pass_once()
                if self._trouble is not None:
                    log.warning("outbox relay: %s again; publishing resumed",
                                "ledger DB available" if self._trouble == "db"
                                else "broker reachable")
                    self._trouble = None
                delay = 0.1
                try:
                    await asyncio.wait_for(self._wake.wait(), self.policy.poll)
                except TimeoutError:
                    pass
                self._wake.clear()
            except asyncio.CancelledError:
                raise
            except Exception as e:
                trouble = "db" if isinstance(e, SQLAlchemyError) else "broker"
                if trouble == "broker":
                    self.stats.failures += 1
                if self._trouble != trouble:  # a state change is logged once, not per retry
                    what = ("the ledger DB is unavailable" if trouble == "db"
                            else "publishing to the broker failed")
                    log.error("outbox relay: %s (%s: %s); %d message(s) wait in the ledger and "
                              "are retried", what, type(e).__name__, e, self.stats.backlog)
                    self._trouble = trouble
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.policy.backoff_max)


async def drain(ledger: Ledger, bootstrap: str, timeout: float = 15.0) -> int:
    """Publish the outbox once and return (for the CLI). If a running worker holds the lease,
    leave the work to it."""
    relay = Relay(ledger, bootstrap, RelayPolicy(lease_ttl=timeout + 5))
    try:
        return await asyncio.wait_for(relay.pass_once(), timeout)
    finally:
        await relay.stop()
