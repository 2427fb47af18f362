"""One batch of input records: screen -> write -> stages, in one DB transaction; then the relay.

```
records --screen (rules 1, 2)--> candidates + rejections
        --write (one transaction: rules 3, 4, events, projections, leaves,
                 stages' decisions, rejected rows, outbox rows, ingest positions)-->
        --relay (publishes the outbox: system events, DLQ/quarantine copies, ...)--> Kafka
```

Kept apart from Faust so it can be driven by any consumer; the Faust agents in `worker.py`
are thin wiring around `BatchProcessor.process`. Nothing here publishes directly: every
message leaves through the outbox, after the transaction that caused it committed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, nullcontext
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar

from opentelemetry import trace
from opentelemetry.trace import INVALID_SPAN, Span
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError

from linetrace.ledger import log as merkle_log
from linetrace.ledger import stage_failures as failures
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import known_keys
from linetrace.ledger.log import maybe_checkpoint
from linetrace.ledger.positions import resume_offset, stored_positions
from linetrace.ledger.proof.note import Signer
from linetrace.ledger.records import BatchOutcome, Candidate, Rejection, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.telemetry_store import stored_columns
from linetrace.ledger.writer import run_stages, store_events, write_batch
from linetrace.schemas.topics import QUARANTINE, TELEMETRY, dlq_topic

from . import telemetry

from .ingest import KeyDirectory, screen
from .relay import Relay
from .detect.registry import detector_stages
from .stages import Pipeline, Stage
from .erp_stage import ErpStage
from .system_stage import SystemEventsStage
from .route_stage import RouteStage, tick_routes
from .line_clock import DEFAULT_BOUND, DEFAULT_SPEED
from .time_flags import LineClockStage

log = logging.getLogger("linetrace.worker")
T = TypeVar("T")

UNSTORABLE = "event.unstorable"


@dataclass(frozen=True)
class CheckpointPolicy:
    """Sign a checkpoint every N leaves, or every T seconds while the log grows."""

    signer: Signer
    every_leaves: int = 1000
    every_seconds: float = 60.0


@dataclass
class Screened:
    """A batch after rules 1 and 2, ready for the writer: its records, the candidates (with
    their trace context when tracing), the rejections, and the spans to end once written."""

    records: list[SourceRecord]
    candidates: list[Candidate]
    rejections: list[Rejection]
    spans: dict[tuple[str, int | None, int | None], Span]
    batch: Span | None  # the batch's span (None: not tracing)
    #: `BatchProcessor.generation` when the batch was read: what the worker knows of the
    #: ledger's positions is kept up to date from it only if nothing cleared it meanwhile
    generation: int = 0


@dataclass
class Stats:
    stored: Counter[str] = field(default_factory=Counter)
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)


def is_transient(e: BaseException) -> bool:
    """A database error that says "try again" (connection lost, locked), not "this data"."""
    if isinstance(e, (OperationalError, InterfaceError)):
        return True
    return isinstance(e, DBAPIError) and bool(e.connection_invalidated)


def default_stages(ctx: SystemContext | None, clock_bound: timedelta = DEFAULT_BOUND,
                   line_speed: float = DEFAULT_SPEED) -> list[Stage]:
    """The stages every worker runs, in order (orchestration and detectors join here)."""
    conductor: list[Stage] = [SystemEventsStage(ctx), RouteStage(ctx, speed=line_speed)] \
        if ctx is not None else []
    return [*conductor, *detector_stages(ctx, line_speed), LineClockStage(clock_bound),
            ErpStage(ctx.routes if ctx is not None else None)]


class BatchProcessor:
    def __init__(self, ledger: Ledger, bootstrap: str, ctx: SystemContext | None = None,
                 checkpoints: CheckpointPolicy | None = None,
                 stages: Sequence[Stage] | None = None, relay: Relay | None = None,
                 clock_bound: timedelta = DEFAULT_BOUND, screen_thread: bool = False,
                 line_speed: float = DEFAULT_SPEED) -> None:
        self.ledger = ledger
        self.ctx = ctx
        self.checkpoints = checkpoints
        self.bootstrap = bootstrap
        self.keys = KeyDirectory(lambda: known_keys(ledger))
        self.pipeline = Pipeline(default_stages(ctx, clock_bound, line_speed) if stages is None
                                 else stages)
        self.relay = relay if relay is not None else Relay(ledger, bootstrap)
        # One writer thread: batches from all agents are serialised into the DB in order.
        self.writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-writer")
        # Screening runs in a thread of its own (None: on the event loop, as tools and tests
        # that drive `process` directly do).
        self.screener: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="ingest-screen")
            if screen_thread else None)
        self.incarnation: str | None = None  # the broker's, stored with the positions
        self._next: dict[tuple[str, int], int] = {}  # where the ledger stands, this incarnation
        self.generation = 0  # bumped whenever `_next` is cleared (`forget_positions`)
        self.stats = Stats()
        self._started = False
        self._db_down = False

    async def start(self) -> None:
        if not self._started:
            self._started = True
            await self.relay.start()

    async def stop(self) -> None:
        await self.relay.stop()
        self.writer.shutdown(wait=True)
        if self.screener is not None:
            self.screener.shutdown(wait=True)

    def screen_all(self, records: list[SourceRecord]) -> tuple[list[Candidate], list[Rejection]]:
        candidates: list[Candidate] = []
        rejections: list[Rejection] = []
        for rec in records:
            try:
                out = screen(rec, self.keys)
            except Exception as e:  # never let one record stop the agent
                if is_transient(e):  # the keys could not be read: the ledger is away, not
                    raise            # the record at fault; the whole batch waits and retries
                log.exception("unexpected error screening %s[%s]@%s", rec.topic, rec.partition,
                              rec.offset)
                out = Rejection(record=rec, destination=dlq_topic(rec.topic),
                                code="event.invalid", message=f"ingest error: {e}",
                                stage="decode")
            if isinstance(out, Candidate):
                if out.record.topic == TELEMETRY:  # compressed here, off the writer thread
                    out = replace(out, columns=stored_columns(out.record.topic, out.event.value))
                candidates.append(out)
            else:
                rejections.append(out)
        return candidates, rejections

    # -- the write, in the writer thread ----------------------------------------------------
    def _write(self, candidates: Sequence[Candidate], rejections: Sequence[Rejection],
               positions: dict[tuple[str, int], int] | None) -> BatchOutcome:
        return write_batch(self.ledger, candidates, rejections, positions, self.ctx,
                           self.pipeline, self.incarnation)

    def write_isolating(self, candidates: Sequence[Candidate], rejections: Sequence[Rejection],
                        positions: dict[tuple[str, int], int]) -> BatchOutcome:
        """Write the batch; if the database refuses it for a reason that is not transient,
        split it until the record(s) it refuses are alone, write the rest, and dead-letter
        those with the database's reason. Positions advance only with the last write."""
        try:
            return self._write(candidates, rejections, positions)
        except Exception as e:
            if is_transient(e):
                raise
            log.warning("the ledger refused a batch of %d (%s: %s); isolating the record(s) "
                        "it cannot store", len(candidates), type(e).__name__, e)
        out = BatchOutcome()
        unstorable: list[Rejection] = []

        def write_part(part: Sequence[Candidate]) -> None:
            try:
                _merge(out, self._write(part, (), None))
            except Exception as e:
                if is_transient(e):
                    raise
                if len(part) == 1:
                    unstorable.append(_unstorable(part[0], e))
                    return
                half = len(part) // 2
                write_part(part[:half])
                write_part(part[half:])

        write_part(candidates)
        _merge(out, self._write((), [*rejections, *unstorable], positions))
        return out

    def retry_stages(self) -> BatchOutcome:
        """Run the stages again on the events they failed on (in one transaction)."""
        out = BatchOutcome()
        with self.ledger.reader() as session:
            if not failures.count_open(session):
                return out
        with self.ledger.transaction() as session:
            merkle_log.lock_head(session)
            decided = self.pipeline.retry(session)
            if decided:
                nested = store_events(session, decided, self.ctx)
                out.system.extend(nested.stored)
                run_stages(session, nested, self.pipeline, self.ctx)
                out.system.extend(nested.system)
        return out

    # -- the asynchronous shell ---------------------------------------------------------------
    async def in_writer(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in the writer thread, waiting out database outages (never dropping)."""
        loop = asyncio.get_running_loop()
        delay = 0.1
        while True:
            try:
                result = await loop.run_in_executor(self.writer, fn, *args)
            except Exception as e:
                if not is_transient(e):
                    raise
                if not self._db_down:
                    log.error("ledger DB unavailable (%s); retrying until it returns",
                              getattr(e, "orig", e))
                    self._db_down = True
                await asyncio.sleep(delay)
                delay = min(delay * 2, 1.0)
                continue
            if self._db_down:
                log.warning("ledger DB available again")
                self._db_down = False
            return result

    @property
    def db_down(self) -> bool:
        """The last ledger call failed for an outage (and none has succeeded since)."""
        return self._db_down

    def stored_next(self, keys: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Where the ledger says each partition's next record is, in this broker incarnation."""
        with self.ledger.reader() as s:
            stored = stored_positions(s, {k[0] for k in keys})
        return {k: resume_offset(stored.get(k), self.incarnation) for k in keys}

    def forget_positions(self) -> None:
        """After an assignment or a broker restart: ask the ledger again. A batch read before
        this and written after it no longer updates what the worker knows."""
        self.generation += 1
        self._next.clear()

    async def gaps(self, records: Sequence[SourceRecord]) -> dict[tuple[str, int], int]:
        """Partitions whose records start past where the ledger stands (Kafka's offsets ran
        ahead of the ledger: records in between were never stored), with the offset to seek
        back to. Such a batch must not be written: positions advance only with the data."""
        first: dict[tuple[str, int], int] = {}
        for r in records:
            if r.partition is not None and r.offset is not None:
                k = (r.topic, r.partition)
                first[k] = min(first.get(k, r.offset), r.offset)
        nexts: dict[tuple[str, int], int] = {}
        ask = [k for k, o in first.items() if k not in self._next or o > self._next[k]]
        while ask:  # confirm against the ledger (another worker may have written)
            got = await self.in_writer(self.stored_next, ask)
            self._next.update(got)
            nexts.update(got)
            # Another lane may have cleared what this worker knows meanwhile (a rebalance, a
            # broker restart: `forget_positions`): ask for those too, never guess.
            ask = [k for k in first if k not in nexts and k not in self._next]
        nexts.update({k: self._next[k] for k in first if k not in nexts})
        # A broker that no longer holds `want` (retention shorter than an outage) keeps this
        # partition waiting here, logged: skipping records is an operator's decision.
        return {k: nexts[k] for k, o in first.items() if o > nexts[k]}

    async def process(self, records: list[SourceRecord],
                      generation: int | None = None) -> BatchOutcome:
        """Screen and write one batch (what `screen_batch` then `write_screened` do)."""
        return await self.write_screened(await self.screen_batch(records, generation))

    async def _screen(self, records: list[SourceRecord]) -> tuple[list[Candidate], list[Rejection]]:
        if self.screener is None:
            return self.screen_all(records)
        # Ed25519 releases the interpreter lock: verifying in a thread of its own overlaps
        # with the event loop (fetching) and with the writer thread.
        return await asyncio.get_running_loop().run_in_executor(self.screener, self.screen_all,
                                                                records)

    async def screen_batch(self, records: list[SourceRecord],
                           generation: int | None = None) -> Screened:
        """Rules 1 and 2 over a batch; nothing is written. A lane screens the next batch while
        the writer stores the previous one. `generation`: `self.generation` when the records
        were read (default: now)."""
        read_in = self.generation if generation is None else generation
        await self.start()
        contexts = [telemetry.context_of(r.headers) for r in records] \
            if telemetry.tracing() else None
        batch = telemetry.batch_span(records[0].topic if records else "", contexts) \
            if contexts is not None else INVALID_SPAN
        try:
            with _using(batch if contexts is not None else None), \
                    telemetry.child_span("screen", batch):
                candidates, rejections = await self._screen(records)
        except BaseException:
            if contexts is not None:
                batch.end()
            raise
        # Each record's trace goes on in its own span; what it causes carries that span.
        spans: dict[tuple[str, int | None, int | None], Span] = {}
        traced: list[Candidate] = candidates
        if contexts is not None:
            by_position = {(r.topic, r.partition, r.offset): ctx
                           for r, ctx in zip(records, contexts, strict=True)}
            traced = []
            for c in candidates:
                pos = (c.record.topic, c.record.partition, c.record.offset)
                span = telemetry.record_span(c.record.topic, c.event.type, c.event.id,
                                             by_position.get(pos), batch)
                spans[pos] = span
                ctx = trace.set_span_in_context(span)
                traced.append(replace(c, record=replace(
                    c.record, headers=telemetry.with_context(c.record.headers, ctx))))
        return Screened(records, traced, rejections, spans, batch if contexts is not None else None,
                        read_in)

    def discard(self, screened: Screened) -> None:
        """A screened batch that will not be written (it starts past a hole): end its spans."""
        for s in screened.spans.values():
            s.set_attribute("linetrace.outcome", "not_written")
            s.end()
        if screened.batch is not None:
            screened.batch.end()

    async def write_screened(self, screened: Screened) -> BatchOutcome:
        """Write a screened batch in one transaction (rules 3 and 4, stages, positions)."""
        try:
            with _using(screened.batch):
                return await self._write_screened(screened)
        finally:
            if screened.batch is not None:
                screened.batch.end()

    async def _write_screened(self, screened: Screened) -> BatchOutcome:
        records, batch = screened.records, screened.batch or INVALID_SPAN
        read: dict[tuple[str, int], int] = {}
        for r in records:
            if r.partition is not None and r.offset is not None:
                k = (r.topic, r.partition)
                read[k] = max(read.get(k, 0), r.offset + 1)
        # A position never goes back: a partition read again below where the ledger stands (a
        # seek back, a rebalance from Kafka's older committed offsets) stored nothing new, and
        # moved back it would make the next records look as if they started past a hole.
        current = screened.generation == self.generation
        known = self._next if current else {}
        positions = {k: o for k, o in read.items() if o > known.get(k, -1)}
        self.pipeline.parent = screened.batch
        started = time.perf_counter()
        with telemetry.child_span("write ledger", batch, {"db.system": self.ledger.dialect,
                                                          "linetrace.events": len(screened.candidates)}):
            outcome: BatchOutcome = await self.in_writer(self.write_isolating, screened.candidates,
                                                         screened.rejections, positions)
        telemetry.COMMIT_SECONDS.record(time.perf_counter() - started)
        telemetry.BATCH_SIZE.record(len(records), {"messaging.destination.name": records[0].topic}
                                    if records else {})
        if current and screened.generation == self.generation:  # nothing cleared it meanwhile
            self._next.update(positions)
        self._end_record_spans(dict(screened.spans), outcome)
        if self.checkpoints is not None and outcome.stored:
            cp = self.checkpoints
            await self.in_writer(maybe_checkpoint, self.ledger, cp.signer, cp.every_leaves,
                                 cp.every_seconds)
        if outcome.system or outcome.rejections or self.pipeline.enqueued:
            self.pipeline.enqueued = 0
            self.relay.wake()  # otherwise nothing new is in the outbox: let it sleep
        self._count(outcome)
        return outcome

    @staticmethod
    def _end_record_spans(spans: dict[tuple[str, int | None, int | None], Span],
                          outcome: BatchOutcome) -> None:
        for c in outcome.stored:
            s = spans.pop((c.record.topic, c.record.partition, c.record.offset), None)
            if s is not None:
                s.set_attribute("linetrace.outcome", "stored")
                s.end()
        for rj in outcome.rejections:
            s = spans.pop((rj.record.topic, rj.record.partition, rj.record.offset), None)
            if s is not None:
                s.set_attribute("linetrace.outcome", rj.code)
                s.end()
        for s in spans.values():
            s.set_attribute("linetrace.outcome", "duplicate")
            s.end()

    async def tick(self) -> None:
        """Periodic work while the line is quiet: stage retries, the route stage's waits and
        stuck units (`route_stage.tick_routes`). Never waits out an outage (the next tick tries
        again; the batches' own retry loop reports it)."""
        loop = asyncio.get_running_loop()
        try:
            out = await loop.run_in_executor(self.writer, self.retry_stages)
            routed = await loop.run_in_executor(self.writer, tick_routes, self.ledger,
                                                self.pipeline, self.ctx)
        except Exception as e:
            if is_transient(e):
                return
            raise
        if out.system or routed.system or self.pipeline.enqueued:
            self.pipeline.enqueued = 0
            self.relay.wake()

    def _count(self, outcome: BatchOutcome) -> None:
        stored: Counter[str] = Counter(c.record.topic for c in outcome.stored)
        for t, n in stored.items():
            telemetry.EVENTS.add(n, {"messaging.destination.name": t, "linetrace.outcome": "stored"})
        for c in outcome.stored:
            self.stats.stored[c.event.type] += 1
        if any(c.event.type in ("station.enrolled", "station.revoked") for c in outcome.stored):
            self.keys.reload()
        self.stats.duplicates += outcome.duplicates
        if outcome.duplicates:
            telemetry.EVENTS.add(outcome.duplicates, {"linetrace.outcome": "duplicate"})
        for rj in outcome.rejections:
            telemetry.REJECTED.add(1, {"linetrace.destination": rj.destination,
                                       "error.code": rj.code})
            telemetry.EVENTS.add(1, {"messaging.destination.name": rj.record.topic,
                                     "linetrace.outcome": "quarantined"
                                     if rj.destination == QUARANTINE else "dead_lettered"})
            self.stats.rejected[rj.code] += 1
            log.warning("rejected %s[%s]@%s -> %s: %s (%s)", rj.record.topic, rj.record.partition,
                        rj.record.offset, rj.destination, rj.code, rj.message)


def _using(span: Span | None) -> AbstractContextManager[object]:
    """The batch's span as the current one (nothing to do when not tracing)."""
    return nullcontext() if span is None else trace.use_span(span, end_on_exit=False)


def _merge(into: BatchOutcome, part: BatchOutcome) -> None:
    into.stored.extend(part.stored)
    into.duplicates += part.duplicates
    into.rejections.extend(part.rejections)
    into.system.extend(part.system)


def _unstorable(c: Candidate, e: BaseException) -> Rejection:
    why = str(getattr(e, "orig", None) or e).splitlines()[0] if str(e) else type(e).__name__
    return Rejection(
        record=c.record, destination=dlq_topic(c.record.topic), code=UNSTORABLE,
        message=(f"the ledger could not store this event ({type(e).__name__}: {why}); it passed "
                 "the schema, so report it: the record is kept here and in the rejected table"),
        stage="write", source=c.event.source, event_id=c.event.id)
