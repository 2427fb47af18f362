"""The high-rate input (`line.telemetry`) read in batches by a plain aiokafka consumer.

Faust's stream machinery costs ~180 µs of interpreter time per event here (docs/benchmarks.md
"Pipeline"), more than verifying its signature. `line.telemetry` carries one event per unit per
second (80% of a plant's events), so the worker reads it with an aiokafka consumer of its own,
inside the Faust app's process and event loop, in the consumer group `<group>.telemetry`
(Faust's partition assignor is its own: the two groups cannot be one). Every rule the agents'
path keeps holds here too:

- Ordering: one `WriteLane`, so a partition's batches are written in the order read.
- Positions: the ledger's, never Kafka's. On assignment each partition is sought to where the
  ledger says ingest stands (in the broker incarnation they belong to); Kafka offsets are never
  committed. A batch that starts past the ledger's position is not written: the partition is
  sought back (`BatchProcessor.gaps`).
- Rebalances: before partitions are given up, the batch in the writer is stored (so the next
  owner starts from a position that includes it); a batch still in flight for a partition
  another worker took is de-duplicated by the ledger.
- The broker restarting empty under the consumer: the same `BrokerRestartGuard` checks, when
  the consumer's connections changed, that the broker still holds the last record consumed,
  and rewinds the partitions if not.
- The stages run in the same batch transaction (the processor is shared with the agents); the
  idle check (`linetrace up --until-idle`) and the lag gauge read the same positions.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition

from linetrace.ledger.records import BatchOutcome, SourceRecord

from .lane import WriteLane
from .processor import BatchProcessor
from .restart_guard import BrokerRestartGuard
from .telemetry import observe_lag

#: How long the broker may hold a fetch that finds nothing new, in ms (Kafka's
#: `fetch.max.wait.ms`), for both of the worker's consumers. Faust builds its consumer with
#: 1,500 and aiokafka defaults to 500; measured on the embedded broker, a record then waited
#: ~0.6 s (p99 ~1 s) before the worker read it: most of an alert's latency
#: (`bench.bench_alert_latency --rate 300`: p50 627 -> 64 ms, p99 1,026 -> 102 ms). A fetch
#: that finds records returns at once either way, so throughput is unchanged; an idle worker
#: asks the broker ~20 times a second.
FETCH_MAX_WAIT_MS = 50

log = logging.getLogger("linetrace.worker")


class BatchConsumer:
    """Reads `topics` in batches into the processor, from the ledger's positions."""

    def __init__(self, processor: BatchProcessor, bootstrap: str, group: str,
                 topics: list[str], *, batch_size: int = 500, batch_window: float = 0.05,
                 session_timeout_s: float = 6.0, heartbeat_s: float = 0.5,
                 rebalance_timeout_s: float = 3.0,
                 on_rewind: Callable[[], Awaitable[None]] | None = None,
                 after_write: Callable[[BatchOutcome], None] | None = None) -> None:
        self.processor = processor
        self.bootstrap = bootstrap
        self.group = group
        self.topics = topics
        self.batch_size = batch_size
        self.batch_window = batch_window
        self.timing = (session_timeout_s, heartbeat_s, rebalance_timeout_s)
        self.on_rewind = on_rewind
        self.after_write = after_write
        self.lane = WriteLane(processor)
        self.guard = BrokerRestartGuard()
        self.consumer: AIOKafkaConsumer | None = None
        self._stopping = asyncio.Event()
        self._seen_rewinds = 0

    def stop(self) -> None:
        self._stopping.set()

    def _make_consumer(self) -> AIOKafkaConsumer:
        session, heartbeat, rebalance = self.timing
        return AIOKafkaConsumer(
            bootstrap_servers=self.bootstrap, group_id=self.group,
            enable_auto_commit=False,  # the ledger holds the positions
            auto_offset_reset="earliest", max_poll_records=self.batch_size,
            session_timeout_ms=int(session * 1000), heartbeat_interval_ms=int(heartbeat * 1000),
            rebalance_timeout_ms=int(rebalance * 1000),
            max_partition_fetch_bytes=4 << 20, fetch_max_bytes=16 << 20,
            fetch_max_wait_ms=FETCH_MAX_WAIT_MS)

    async def _resume(self, assigned: set[TopicPartition]) -> None:
        """Seek each newly assigned partition to the ledger's position."""
        if self.on_rewind is not None:
            await self.on_rewind()  # the broker's incarnation, read afresh
        stored = await asyncio.get_running_loop().run_in_executor(
            None, self.processor.stored_next, [(tp.topic, tp.partition) for tp in assigned])
        self.guard.start_at({tp: stored[(tp.topic, tp.partition)] for tp in assigned})

    async def run(self) -> None:
        """Consume until `stop`; the batch in the writer is stored before returning."""
        consumer = self.consumer = self._make_consumer()
        outer = self

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            async def on_partitions_revoked(self, revoked: Any) -> None:
                await outer.lane.drain()  # the next owner starts past what we stored

            async def on_partitions_assigned(self, assigned: Any) -> None:
                await outer._resume(set(assigned))

        consumer.subscribe(self.topics, listener=Listener())
        await consumer.start()
        log.info("reading %s in batches (consumer group %s)", ", ".join(self.topics), self.group)
        try:
            while not self._stopping.is_set():
                await self._once(consumer)
        finally:
            try:
                await self.lane.drain()
            finally:
                await consumer.stop()

    async def _once(self, consumer: AIOKafkaConsumer) -> None:
        self.guard.before_fetch(consumer)
        fetched = await consumer.getmany(timeout_ms=int(self.batch_window * 1000),
                                         max_records=self.batch_size)
        fetched = await self.guard.vet(consumer, fetched)
        if self.guard.rewinds != self._seen_rewinds:
            self._seen_rewinds = self.guard.rewinds
            await self.lane.drain()
            if self.on_rewind is not None:
                await self.on_rewind()
        records = [SourceRecord(topic=m.topic, partition=m.partition, offset=m.offset,
                                key=m.key, value=m.value, headers=_headers(m.headers))
                   for msgs in fetched.values() for m in msgs]
        if not records:
            return
        after = (lambda outcome: self._after(consumer, records, outcome))
        behind = await self.lane.submit(records, after)
        if behind:  # never write past a hole: seek back to where the ledger stands
            log.warning("records start past the ledger's position in %s; seeking back "
                        "(nothing is written past a hole)", ", ".join(
                            f"{t}[{p}]@{o}" for (t, p), o in sorted(behind.items())))
            self.guard.start_at({TopicPartition(t, p): o for (t, p), o in behind.items()})

    def _after(self, consumer: AIOKafkaConsumer, records: list[SourceRecord],
               outcome: BatchOutcome) -> None:
        observe_lag(records, lambda t, p: consumer.highwater(TopicPartition(t, p)))
        if self.after_write is not None:
            self.after_write(outcome)


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    return [(k, v if v is not None else b"") for k, v in raw]
