"""Where ingest stands in each input partition: the ledger's word, not Kafka's.

Positions are written in the batch transaction with the data (`write_batch`), each with the
broker incarnation it belongs to. On partition assignment the worker seeks to them: the same
incarnation means "continue here"; another one (the embedded broker restarted empty, offsets
begin at 0 again) means "read the new log from the beginning" (de-duplication makes that safe),
never "already drained".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from .models import IngestPosition


@dataclass(frozen=True)
class Position:
    next_offset: int
    incarnation: str | None


def stored_positions(session: Session, topics: Iterable[str]) -> dict[tuple[str, int], Position]:
    rows = session.execute(select(IngestPosition.topic, IngestPosition.partition,
                                  IngestPosition.next_offset, IngestPosition.incarnation)
                           .where(IngestPosition.topic.in_(sorted(set(topics)))))
    return {(r[0], r[1]): Position(r[2], r[3]) for r in rows}


def resume_offset(stored: Position | None, incarnation: str | None) -> int:
    """Where to start reading a partition of the broker incarnation `incarnation`."""
    if stored is None:
        return 0
    if stored.incarnation is not None and incarnation is not None \
            and stored.incarnation != incarnation:
        return 0  # a new log: read it from the start
    return stored.next_offset


def advance(session: Session, positions: Mapping[tuple[str, int], int], incarnation: str | None,
            now: datetime) -> None:
    """Record that the batch being committed read each partition up to `positions` (the next
    offset to read). A position never goes back within one broker incarnation: a batch of
    records read again below it (a seek back, a rebalance from Kafka's older committed offsets)
    stored nothing new, and moving the position back would make the next records look as if
    they started past a hole. Another incarnation (the broker restarted empty: offsets begin
    at 0 again) replaces the position."""
    if not positions:
        return
    table = IngestPosition.__table__
    ins = postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert
    stmt = ins(table)
    new = stmt.excluded
    same_log = ~and_(table.c.incarnation.is_not(None), new.incarnation.is_not(None),
                     table.c.incarnation != new.incarnation)
    greatest = func.greatest if session.get_bind().dialect.name == "postgresql" else func.max
    stmt = stmt.on_conflict_do_update(index_elements=["topic", "partition"], set_={
        "next_offset": case((same_log, greatest(table.c.next_offset, new.next_offset)),
                            else_=new.next_offset),
        "incarnation": func.coalesce(new.incarnation, table.c.incarnation),
        "updated": new.updated})
    session.execute(stmt, [{"topic": t, "partition": p, "next_offset": o,
                            "incarnation": incarnation, "updated": now}
                           for (t, p), o in positions.items()])
