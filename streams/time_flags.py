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

from sqlalchemy import Table
from sqlalchemy.orm import Session

from linetrace.ledger.flags import EventFlag
from linetrace.ledger.records import Candidate
from linetrace.ledger.log import event_seqs
from linetrace.schemas.envelope import parse_time

from linetrace.ledger.line_clock import (
    Partition as Partition,
    flagged_partitions as flagged_partitions,
    partition_clock as partition_clock,
    plain_clocks as plain_clocks,
)

from .line_clock import DEFAULT_BOUND, FAR, RESET, RESET_AFTER, PartitionClock, describe, observe
from .stages import Decisions



@dataclass(frozen=True)
class ClockState:
    """What `decide` needs: each touched partition's clock before the batch, the batch's
    events.seq numbers, and the time the flags are recorded at."""

    clocks: dict[Partition, PartitionClock]
    seqs: dict[tuple[str, str], int]
    now: datetime


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


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
