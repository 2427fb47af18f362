"""A write lane: the next batch is screened while the writer stores the one before it.

Every consumer of input records (a Faust agent, the telemetry batch consumer) drives one lane.
A lane keeps at most one batch in the writer: screening (decode, schema, Ed25519, which releases
the interpreter lock) of batch N+1 overlaps the write of batch N, and batch N+1 is checked
against the ledger's positions (`BatchProcessor.gaps`) and handed to the writer only once
batch N is stored. So batches of a lane are written one after another, in the order they were
read, and positions in the ledger still advance only with the data: what a crash leaves in
flight is read again from the ledger's positions (docs: "Delivery semantics").
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from linetrace.ledger.records import BatchOutcome, SourceRecord

from .processor import BatchProcessor, Screened, is_transient

log = logging.getLogger("linetrace.worker")

#: The longest wait between two tries of a failing batch: writes resume within about a
#: second of the database's return (docs/benchmarks.md "Recovery").
RETRY_CAP_S = 1.0


def since_last_rewind(records: list[SourceRecord]) -> list[SourceRecord]:
    """The records of each partition from its last seek back on.

    A consumer that seeks a partition back (to where the ledger stands) may still hand over,
    in the same batch, records it fetched before the seek: that partition's offsets then go
    down within the batch. The records before the last such drop are not the stream from the
    position sought; written first, they would land past a hole and the ones before them be
    quarantined as reordered. They are left out here and read again when the consumer gets
    back to them (positions advance only with the data)."""
    prev: dict[tuple[str, int], int] = {}
    start: dict[tuple[str, int], int] = {}  # index of the partition's last drop in offsets
    for i, r in enumerate(records):
        if r.partition is None or r.offset is None:
            continue
        k = (r.topic, r.partition)
        if k in prev and r.offset <= prev[k]:
            start[k] = i
        prev[k] = r.offset
    if not start:
        return records
    kept = [r for i, r in enumerate(records)
            if r.partition is None or i >= start.get((r.topic, r.partition), 0)]
    log.info("left out %d record(s) fetched before a seek back in %s; they are read again",
             len(records) - len(kept), ", ".join(f"{t}[{p}]" for t, p in sorted(start)))
    return kept


async def process_until_done(processor: BatchProcessor, records: list[SourceRecord],
                             screened: Screened | None = None,
                             generation: int | None = None) -> BatchOutcome:
    """Bad input never raises (it is dead-lettered or quarantined) and records the database
    cannot store are isolated; what still fails is a bug or an outage (screening could not
    read the enrolled keys). Never skip the batch (Faust would ack it): retry it, logging
    once, until it goes through. `screened`: the batch already screened (first try only);
    `generation`: the processor's when the records were read (default: now)."""
    if generation is None:
        generation = processor.generation
    delay = 0.1
    failing = False
    while True:
        try:
            if screened is not None:
                first, screened = screened, None
                outcome = await processor.write_screened(first)
            else:
                outcome = await processor.process(records, generation)
            if failing:
                log.warning("batch of %d records written after earlier failures", len(records))
            return outcome
        except asyncio.CancelledError:
            raise
        except Exception as e:
            if not failing:
                if is_transient(e):  # an outage: one line, no traceback
                    log.error("batch of %d records failed; retrying it (nothing is skipped) "
                              "until the ledger DB answers: %s", len(records),
                              getattr(e, "orig", e))
                else:
                    log.exception("batch of %d records failed; retrying it (nothing is "
                                  "skipped)", len(records))
                failing = True
            await asyncio.sleep(delay)
            delay = min(delay * 2, RETRY_CAP_S)


class WriteLane:
    """One consumer's batches: at most one in the writer while the next is screened."""

    def __init__(self, processor: BatchProcessor) -> None:
        self.processor = processor
        self._inflight: asyncio.Task[None] | None = None

    @property
    def busy(self) -> bool:
        return self._inflight is not None and not self._inflight.done()

    async def drain(self) -> None:
        """Wait until the batch in the writer (if any) is stored."""
        task, self._inflight = self._inflight, None
        if task is not None:
            await task

    async def submit(self, records: list[SourceRecord],
                     after: Callable[[BatchOutcome], None] | None = None
                     ) -> dict[tuple[str, int], int]:
        """Screen `records` (overlapping the write in flight), then, once that write is
        stored, hand them to the writer and return at once. Returns {} when handed over, or
        the partitions whose records start past where the ledger stands, with the offsets to
        seek back to (nothing of the batch is written then). `after` runs once it is stored."""
        records = since_last_rewind(records)
        generation = self.processor.generation
        try:
            screened: Screened | None = await self.processor.screen_batch(records, generation)
        except Exception as e:  # e.g. the enrolled keys could not be read: the write retries
            if not is_transient(e):
                log.exception("screening a batch of %d records failed; it is retried",
                              len(records))
            screened = None
        await self.drain()
        behind = await self.processor.gaps(records)
        if behind:
            if screened is not None:
                self.processor.discard(screened)
            return behind
        self._inflight = asyncio.create_task(self._write(records, screened, generation, after))
        return {}

    async def _write(self, records: list[SourceRecord], screened: Screened | None,
                     generation: int, after: Callable[[BatchOutcome], None] | None) -> None:
        outcome = await process_until_done(self.processor, records, screened, generation)
        if after is not None:
            after(outcome)
