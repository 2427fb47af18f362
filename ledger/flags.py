"""Event flags: accepted events that a person should look at, recorded and listable.

A flag never refuses anything: the event is stored like any other. The first kinds come from
the line clock (`time.far_from_clock`, `time.clock_reset`, see `linetrace.streams.line_clock`);
the detection issue turns flags into alerts and adds kinds (supply-chain gaps). A flag is
decided in the batch transaction of its event, from the ledger alone, so a replay into a fresh
ledger flags the same events; `(event_seq, kind)` is unique, so deciding again stores nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import DateTime, Index, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from .db import Ledger
from .models import Base, BigId, EventRow


class EventFlag(Base):
    __tablename__ = "event_flags"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    event_seq: Mapped[int] = mapped_column(BigId)  # events.seq of the flagged event
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    topic: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int | None] = mapped_column(Integer)
    event_time: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    clock: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))  # what it was compared with
    message: Mapped[str] = mapped_column(String(512))
    recorded: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (
        Index("uq_event_flags_event_kind", "event_seq", "kind", unique=True),
        Index("ix_event_flags_partition", "topic", "partition", "kind", "event_seq"),
    )


@dataclass(frozen=True)
class Flag:
    """One flag as `linetrace flags` shows it."""

    id: int
    kind: str
    recorded: datetime
    topic: str
    partition: int | None
    source: str
    event_id: str
    type: str
    subject: str
    event_time: datetime
    clock: datetime | None
    message: str


def _utc(t: datetime | None) -> datetime | None:
    if t is None:
        return None
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def list_flags(ledger: Ledger, kind: str | None = None, limit: int | None = None) -> list[Flag]:
    """Flags in the order they were recorded (oldest first), optionally of one kind."""
    with ledger.reader() as s:
        q = (select(EventFlag, EventRow.type, EventRow.subject)
             .join(EventRow, EventRow.seq == EventFlag.event_seq)
             .order_by(EventFlag.id))
        if kind is not None:
            q = q.where(EventFlag.kind == kind)
        if limit is not None:
            q = q.limit(limit)
        out = []
        for f, etype, subject in s.execute(q).all():
            event_time = _utc(f.event_time)
            recorded = _utc(f.recorded)
            assert event_time is not None and recorded is not None
            out.append(Flag(id=f.id, kind=f.kind, recorded=recorded, topic=f.topic,
                            partition=f.partition, source=f.source, event_id=f.event_id,
                            type=etype, subject=subject, event_time=event_time,
                            clock=_utc(f.clock), message=f.message))
        return out
