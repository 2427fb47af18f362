"""The stage pipeline: screen -> write -> stages, all in the batch's transaction.

A stage (route enforcement, a detector) is a pure function over the batch and its state:
`load` reads what it needs from the ledger, `decide` returns `Decisions` (system events to
record, messages for the outbox). The pipeline writes the decisions in the batch transaction,
each stage inside its own savepoint, so a stage that raises never rejects events: they are
already stored; the failure is recorded with the event it failed on (`stage_failures`) and
retried later, and the other stages' decisions and the rest of the batch are kept.

Adding a stage means adding it to the list given to `Pipeline`; the processor never changes.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from opentelemetry import trace
from opentelemetry.trace import Span
from sqlalchemy import Table, update
from sqlalchemy.orm import Session

from linetrace.ledger import outbox
from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.log import event_seqs
from linetrace.ledger import stage_failures as failures
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.sql import insert_ignore
from linetrace.ledger.telemetry_store import require_bytes
from linetrace.schemas.envelope import decode_stored_event

log = logging.getLogger("linetrace.stages")
tracer = trace.get_tracer("linetrace.streams")


@dataclass(frozen=True)
class Decisions:
    """What a stage decided for a batch; the pipeline writes it in the batch transaction."""

    system: list[Candidate] = field(default_factory=list)  # system events: ledger + leaf + outbox
    messages: list[outbox.Message] = field(default_factory=list)  # commands, alerts, ERP
    rows: list[tuple[Table, dict[str, Any]]] = field(default_factory=list)  # insert-or-ignore
    #: UPDATEs after the rows: (table, {column: value} the rows match, {column: new value})
    updates: list[tuple[Table, dict[str, Any], dict[str, Any]]] = field(default_factory=list)
    #: detectors' findings: the alert engine turns them into alert state and `line.alerts`
    conditions: list[Condition] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.system or self.messages or self.rows or self.updates
                    or self.conditions)


NO_DECISIONS = Decisions()


class Stage(Protocol):
    """One step after the write. `decide` must depend only on its arguments (replays decide
    the same), and must not write: it returns what to write."""

    name: str

    def load(self, session: Session, batch: Sequence[Candidate]) -> Any:
        """The state `decide` needs, read from the ledger (never from Kafka or memory)."""

    def decide(self, batch: Sequence[Candidate], state: Any) -> Decisions:
        """Decisions for the batch (often none)."""


@dataclass
class StageStats:
    runs: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    retried: Counter[str] = field(default_factory=Counter)


def _retry_after(attempts: int) -> timedelta:
    return timedelta(seconds=min(2.0 ** attempts, 300.0))


class Pipeline:
    """Runs the stages in order; usable as the ledger writer's `StageHook`."""

    def __init__(self, stages: Sequence[Stage], retry_limit: int = 100) -> None:
        names = [s.name for s in stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stage names must be unique: {names}")
        self.stages = list(stages)
        self.retry_limit = retry_limit
        self.stats = StageStats()
        self.parent: Span | None = None  # the batch's span, for each stage's span
        self.enqueued = 0  # outbox messages the stages wrote (the relay is woken for them)

    def __call__(self, session: Session, batch: Sequence[Candidate]) -> list[Candidate]:
        decided: list[Candidate] = []
        if not batch:
            return decided
        for stage in self.stages:
            decided += self._run(session, stage, batch)
        return decided

    def _apply(self, session: Session, stage: Stage, batch: Sequence[Candidate]) -> Decisions:
        with tracer.start_as_current_span(
                f"stage {stage.name}", context=trace.set_span_in_context(self.parent)
                if self.parent is not None else None,
                attributes={"linetrace.events": len(batch)}), session.begin_nested():
            decisions = stage.decide(batch, stage.load(session, batch))
            self.enqueued += write_decisions(session, decisions)
        self.stats.runs[stage.name] += 1
        return decisions

    def _run(self, session: Session, stage: Stage, batch: Sequence[Candidate]) -> list[Candidate]:
        try:
            return list(self._apply(session, stage, batch).system)
        except Exception as e:
            if len(batch) == 1:
                self._failed(session, stage, batch, e)
                return []
        out: list[Candidate] = []  # isolate the event(s) the stage fails on
        for c in batch:
            try:
                out += self._apply(session, stage, [c]).system
            except Exception as e:
                self._failed(session, stage, [c], e)
        return out

    def _failed(self, session: Session, stage: Stage, batch: Sequence[Candidate],
                error: Exception) -> None:
        why = f"{type(error).__name__}: {error}"
        log.error("stage %s failed on %s/%s: %s (the event is stored; the stage will retry)",
                  stage.name, batch[0].event.source, batch[0].event.id, why)
        self.stats.failures[stage.name] += len(batch)
        seqs = event_seqs(session, [(c.event.source, c.event.id) for c in batch])
        failures.record_failures(session, stage.name, [
            (seqs[(c.event.source, c.event.id)], c.event.source, c.event.id)
            for c in batch if (c.event.source, c.event.id) in seqs], why)

    def retry(self, session: Session, now: datetime | None = None) -> list[Candidate]:
        """Run each stage again on the events it failed on and that are due; returns the
        system events decided (for the caller to record in the same transaction)."""
        t = now or datetime.now(UTC)
        decided: list[Candidate] = []
        by_name = {s.name: s for s in self.stages}
        for f in failures.open_failures(session, limit=self.retry_limit):
            stage = by_name.get(f.stage)
            if stage is None:
                continue  # a stage no longer configured: left open for an operator
            if not _due(f, t):
                continue
            rows = failures.event_rows(session, [f.event_seq])
            if not rows:
                continue
            self.stats.retried[stage.name] += 1
            c = stored_candidate(rows[0])
            try:
                decided += self._apply(session, stage, [c]).system
            except Exception as e:
                self._failed(session, stage, [c], e)
                continue
            failures.resolve_failures(session, stage.name, [f.event_seq], t)
            log.info("stage %s succeeded on retry for %s/%s", stage.name, f.source, f.event_id)
        return decided


def write_decisions(session: Session, decisions: Decisions) -> int:
    """Write a stage's messages, rows and updates (not its system events: the caller records
    those); returns how many outbox messages it enqueued."""
    outbox.enqueue(session, decisions.messages)
    run: list[dict[str, Any]] = []  # consecutive rows of one table and columns: one executemany
    for i, (table, row) in enumerate(decisions.rows):
        run.append(row)
        following = decisions.rows[i + 1] if i + 1 < len(decisions.rows) else None
        if following is None or following[0] is not table or following[1].keys() != row.keys():
            insert_ignore(session, table, run)
            run = []
    for table, where, values in decisions.updates:
        session.execute(update(table).where(*(table.c[k] == v for k, v in where.items()))
                        .values(values))
    alerted = 0
    if decisions.conditions:
        from linetrace.ledger.alerts.engine import apply_conditions
        alerted = apply_conditions(session, decisions.conditions)
    return len(decisions.messages) + alerted


def _due(f: failures.OpenFailure, now: datetime) -> bool:
    last = f.last_failed
    if last.tzinfo is None:  # SQLite returns naive UTC
        last = last.replace(tzinfo=UTC)
    return now - last >= _retry_after(f.attempts)


def stored_candidate(row: EventRow) -> Candidate:
    """A stored event as the stages see it (exact bytes; its Kafka position if it had one)."""
    value = require_bytes(row.value, f"event {row.source}/{row.event_id}", row.digest)
    record = SourceRecord(topic=row.topic, partition=row.partition, offset=row.offset,
                          key=row.subject.encode(), value=value)
    return Candidate(record=record, event=decode_stored_event(value), keyid=row.keyid,
                     signature=row.signature, cause=row.cause)
