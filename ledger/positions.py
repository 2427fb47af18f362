"""Where ingest stands in each input partition: the ledger's word, not Kafka's.

Positions are written in the batch transaction with the data (`write_batch`), each with the
broker incarnation it belongs to. On partition assignment the worker seeks to them: the same
incarnation means "continue here"; another one (the embedded broker restarted empty, offsets
begin at 0 again) means "read the new log from the beginning" (de-duplication makes that safe),
never "already drained".
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from sqlalchemy import select
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
