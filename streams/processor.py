"""One batch of input records: screen, write in one DB transaction, publish rejections.

Kept apart from Faust so it can be driven by any consumer; the Faust agents in `worker.py`
are thin wiring around `BatchProcessor.process`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from aiokafka import AIOKafkaProducer
from sqlalchemy.exc import OperationalError

from linetrace.ledger.db import Ledger
from linetrace.ledger.log import maybe_checkpoint
from linetrace.ledger.proof.note import Signer
from linetrace.ledger.keys import known_keys
from linetrace.ledger.records import BatchOutcome, Candidate, Rejection, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch

from .ingest import KeyDirectory, error_headers, screen

log = logging.getLogger("linetrace.worker")


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint every N leaves, or every T seconds while the log grows."""

    signer: Signer
    every_leaves: int = 1000
    every_seconds: float = 60.0


@dataclass
class Stats:
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


class BatchProcessor:
    def __init__(self, ledger: Ledger, bootstrap: str, ctx: SystemContext | None = None,
                 checkpoints: CheckpointPolicy | None = None) -> None:
        self.ledger = ledger
        self.ctx = ctx
        self.checkpoints = checkpoints
        self.bootstrap = bootstrap
        self.keys = KeyDirectory(lambda: known_keys(ledger))
        # One writer thread: batches from all agents are serialised into the DB in order.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        self.producer: AIOKafkaProducer | None = None
        self.stats = Stats()

    async def start(self) -> None:
        self.producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all",
                                         linger_ms=5)
        await self.producer.start()

    async def stop(self) -> None:
        if self.producer is not None:
            await self.producer.stop()
        self.writer.shutdown(wait=True)

    def screen_all(self, records: list[SourceRecord]) -> tuple[list[Candidate], list[Rejection]]:
        candidates: list[Candidate] = []
        rejections: list[Rejection] = []
        for rec in records:
            try:
                out = screen(rec, self.keys)
            except Exception as e:  # never let one record stop the agent
                log.exception("unexpected error screening %s[%s]@%s", rec.topic, rec.partition,
                              rec.offset)
                from linetrace.schemas.topics import dlq_topic

                out = Rejection(record=rec, destination=dlq_topic(rec.topic),
                                code="event.invalid", message=f"ingest error: {e}",
                                stage="decode")
            (candidates if isinstance(out, Candidate) else rejections).append(out)  # type: ignore[arg-type]
        return candidates, rejections

    async def process(self, records: list[SourceRecord]) -> BatchOutcome:
        if self.producer is None:
            await self.start()
        candidates, rejections = self.screen_all(records)
        positions: dict[tuple[str, int], int] = {}
        for r in records:
            if r.partition is not None and r.offset is not None:
                k = (r.topic, r.partition)
                positions[k] = max(positions.get(k, 0), r.offset + 1)
        loop = asyncio.get_running_loop()
        delay = 0.5
        while True:  # the DB is the system of record: wait for it rather than drop a batch
            try:
                outcome = await loop.run_in_executor(
                    self.writer, write_batch, self.ledger, candidates, rejections, positions,
                    self.ctx)
                break
            except OperationalError as e:
                log.error("ledger DB unavailable (%s); retrying batch of %d in %.1fs",
                          e.orig, len(records), delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
        if self.checkpoints is not None and outcome.stored:
            cp = self.checkpoints
            await loop.run_in_executor(self.writer, maybe_checkpoint, self.ledger, cp.signer,
                                       cp.every_leaves, cp.every_seconds)
        await self.publish_rejections(outcome.rejections)
        await self.publish_system(outcome.system)
        for c in outcome.stored:
            self.stats.stored[c.event.type] += 1
        if any(c.event.type in ("station.enrolled", "station.revoked") for c in outcome.stored):
            self.keys.reload()
        self.stats.duplicates += outcome.duplicates
        for rj in outcome.rejections:
            self.stats.rejected[rj.code] += 1
            log.warning("rejected %s[%s]@%s -> %s: %s (%s)", rj.record.topic, rj.record.partition,
                        rj.record.offset, rj.destination, rj.code, rj.message)
        return outcome

    async def publish_system(self, events: list[Candidate]) -> None:
        """System events are recorded before they are published; ingest dedupes them."""
        if not events or self.producer is None:
            return
        for c in events:
            try:
                await self.producer.send(c.record.topic, value=c.event.value,
                                         key=c.event.subject.encode(), headers=c.record.headers)
            except Exception as e:
                log.error("could not publish %s %s: %s (it is in the ledger)", c.event.type,
                          c.event.id, e)

    async def publish_rejections(self, rejections: list[Rejection]) -> None:
        """Copies for Kafka consumers; the `rejected` table already holds them durably."""
        if not rejections or self.producer is None:
            return
        futures = []
        for r in rejections:
            try:
                futures.append(await self.producer.send(
                    r.destination, value=r.record.value, key=r.record.key,
                    headers=error_headers(r)))
            except Exception as e:
                log.error("could not publish rejection to %s: %s (kept in the rejected table)",
                          r.destination, e)
        for f in futures:
            try:
                await f
            except Exception as e:
                log.error("rejection not acknowledged by the broker: %s (kept in the DB)", e)
