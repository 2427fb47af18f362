"""The line-clock stage: flags events far from their partition's line clock (issue 8, item 5).

A stage of the pipeline (`stages.py`): `load` rebuilds, from the ledger alone, the clock of
every partition the batch touches (the highest time among its events that count, since its
last reset; see `line_clock`), `decide` runs the batch's events through `line_clock.observe`
in the order they were stored and returns a flag row for each event that gets one. Nothing is
kept in memory between batches, so a worker that starts (or restarts, or replays into a fresh
ledger) flags exactly what a worker that never stopped would have.

Only events read from an input partition are judged; system events (no partition) are not.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Table, func, literal, select, union_all
from sqlalchemy.orm import Session

from linetrace.ledger.flags import EventFlag
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate
from linetrace.ledger.log import event_seqs
from linetrace.schemas.envelope import parse_time

from .line_clock import DEFAULT_BOUND, EXCLUDED, FAR, RESET, RESET_AFTER, PartitionClock, describe, observe
from .stages import Decisions

Partition = tuple[str, int]


@dataclass(frozen=True)
class ClockState:
    """What `decide` needs: each touched partition's clock before the batch, the batch's
    events.seq numbers, and the time the flags are recorded at."""

    clocks: dict[Partition, PartitionClock]
    seqs: dict[tuple[str, str], int]
    now: datetime


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def partition_clock(session: Session, topic: str, partition: int, before_seq: int,
                    reset_after: int = RESET_AFTER, flagged: bool = True) -> PartitionClock:
    """The clock of (topic, partition) as the events stored before `before_seq` left it.

    `flagged=False` says the partition has no flags at all (the common case): one query then.
    """
    where = (EventFlag.topic == topic, EventFlag.partition == partition,
             EventFlag.event_seq < before_seq)
    reset = 0
    if flagged:
        reset = session.scalar(select(func.max(EventFlag.event_seq)).where(
            *where, EventFlag.kind == RESET)) or 0
    counted = [EventRow.topic == topic, EventRow.partition == partition,
               EventRow.seq >= reset, EventRow.seq < before_seq]
    if flagged:
        counted.append(~select(EventFlag.id).where(
            EventFlag.event_seq == EventRow.seq, EventFlag.kind.in_(sorted(EXCLUDED))).exists())
    top_row = session.execute(select(EventRow.time, EventRow.seq).where(*counted)
                              .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1)).first()
    if top_row is None:
        return PartitionClock()
    top, top_seq = top_row
    if not flagged:
        return PartitionClock(_utc(top))
    far = session.scalars(select(EventFlag.event_time).where(
        *where, EventFlag.kind == FAR, EventFlag.event_seq > (top_seq or 0))
        .order_by(EventFlag.event_seq.desc()).limit(max(reset_after - 1, 1))).all()
    return PartitionClock(_utc(top), tuple(_utc(t) for t in reversed(far)))


def plain_clocks(session: Session, before: dict[Partition, int]) -> dict[Partition, PartitionClock]:
    """The clocks of partitions that have no flags at all (the common case), each as
    `partition_clock(..., flagged=False)` gives it, in one statement for all of them."""
    if not before:
        return {}
    parts = list(before.items())
    one = [select(literal(i).label("k"), EventRow.time, EventRow.seq)
           .where(EventRow.topic == tp[0], EventRow.partition == tp[1], EventRow.seq < s)
           .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1).subquery()
           for i, (tp, s) in enumerate(parts)]
    q = union_all(*[select(sub.c.k, sub.c.time) for sub in one])
    found = {int(r[0]): r[1] for r in session.execute(q)}
    return {tp: PartitionClock(_utc(found[i])) if i in found else PartitionClock()
            for i, (tp, _) in enumerate(parts)}


def flagged_partitions(session: Session, partitions: Sequence[Partition]) -> set[Partition]:
    """Which of these partitions have any flag (one query for all of them)."""
    if not partitions:
        return set()
    rows = session.execute(select(EventFlag.topic, EventFlag.partition).where(
        EventFlag.topic.in_(sorted({t for t, _ in partitions})),
        EventFlag.partition.in_(sorted({p for _, p in partitions}))).distinct())
    return {(str(r[0]), int(r[1])) for r in rows if r[1] is not None} & set(partitions)


class LineClockStage:
    """Flags `time.far_from_clock` / `time.clock_reset`; never refuses or changes an event."""

    name = "line-clock"

    def __init__(self, bound: timedelta = DEFAULT_BOUND, reset_after: int = RESET_AFTER) -> None:
        if bound <= timedelta(0) or reset_after < 1:
            raise ValueError("the line clock bound must be positive and reset_after >= 1")
        self.bound = bound
        self.reset_after = reset_after

    def load(self, session: Session, batch: Sequence[Candidate]) -> ClockState:
        read = [(c.event.source, c.event.id) for c in batch if c.record.partition is not None]
        seqs = event_seqs(session, read)  # the writer's record of what it stored, else a query
        first: dict[Partition, int] = {}
        for c in batch:
            seq = seqs.get((c.event.source, c.event.id))
            if c.record.partition is not None and seq is not None:
                key = (c.record.topic, c.record.partition)
                first[key] = min(first.get(key, seq), seq)
        flagged = flagged_partitions(session, list(first))
        clocks = plain_clocks(session, {tp: s for tp, s in first.items() if tp not in flagged})
        clocks.update({tp: partition_clock(session, tp[0], tp[1], s, self.reset_after)
                       for tp, s in first.items() if tp in flagged})
        return ClockState(clocks, seqs, datetime.now(UTC))

    def decide(self, batch: Sequence[Candidate], state: ClockState) -> Decisions:
        clocks = dict(state.clocks)
        table: Table = EventFlag.__table__  # type: ignore[assignment]
        rows: list[tuple[Table, dict[str, Any]]] = []
        for c in batch:
            seq = state.seqs.get((c.event.source, c.event.id))
            if c.record.partition is None or seq is None:
                continue
            where = (c.record.topic, c.record.partition)
            before = clocks.get(where, PartitionClock())
            time = parse_time(c.event.envelope.time)
            clocks[where], kind = observe(before, time, self.bound, self.reset_after)
            if kind is None:
                continue
            rows.append((table, {
                "event_seq": seq, "kind": kind, "source": c.event.source,
                "event_id": c.event.id, "topic": c.record.topic, "partition": c.record.partition,
                "event_time": time, "clock": before.time,
                "message": describe(kind, time, before.time, self.bound)[:512],
                "recorded": state.now}))
        return Decisions(rows=rows)
