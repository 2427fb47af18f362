"""System events that wait for leaves the ledger has not read yet (docs/system-events.md).

A `unit.sealed` covers each sub-assembly's chain up to the event its install names. When the
worker reads the server's partition ahead of the board's, that event is not in the ledger yet:
the seal cannot be made, and must not be made from less. It waits here, durably, written in
the transaction of its cause:

- `pending_system_events`: one row per waiting system event, keyed by the id it will have
  (UUIDv5 of type, subject and cause), with its cause;
- `pending_waits`: the events it waits for, by id (indexed), so that the batch in which one
  of them arrives finds it in one query (`awaiting`).

The system-events stage plans it again then; once the system event is recorded, the writer
removes its rows (`resolve`). The event has the id and time it would have had without the
wait (its cause's), and the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Index, String, Table, delete, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from linetrace.schemas.envelope import decode_stored_event, parse_time

from .models import Base, EventRow
from .records import Candidate, SourceRecord
from .sql import keys_in

Row = tuple[Table, dict[str, Any]]
DEFERRABLE = frozenset({"unit.sealed"})  # system event types that may wait
_CHUNK = 400


class PendingSystemEvent(Base):
    """A system event decided but not yet written: the leaves it covers are not all here."""

    __tablename__ = "pending_system_events"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the id it will have
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    cause_source: Mapped[str] = mapped_column(String(64))
    cause_id: Mapped[str] = mapped_column(String(36))
    since: Mapped[datetime]  # the cause's time: the time the event will carry


class PendingWait(Base):
    """One event (by subject and id) a pending system event waits for."""

    __tablename__ = "pending_waits"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the pending event
    subject: Mapped[str] = mapped_column(String(128), primary_key=True)
    awaited: Mapped[str] = mapped_column(String(36), primary_key=True)
    __table_args__ = (Index("ix_pending_waits_awaited", "awaited"),)


def pending_rows(event_id: str, event_type: str, cause: Candidate,
                 missing: Sequence[tuple[str, str]]) -> list[Row]:
    """The rows that make a system event wait for `missing` (insert-or-ignore: planning it
    again adds only what it now waits for)."""
    events: Table = PendingSystemEvent.__table__  # type: ignore[assignment]
    waits: Table = PendingWait.__table__  # type: ignore[assignment]
    ev = cause.event
    rows: list[Row] = [(events, {"event_id": event_id, "type": event_type,
                                 "subject": ev.subject, "cause_source": ev.source,
                                 "cause_id": ev.id, "since": parse_time(ev.envelope.time)})]
    rows += [(waits, {"event_id": event_id, "subject": s, "awaited": a}) for s, a in missing]
    return rows


def awaiting(session: Session, batch: Sequence[Candidate]) -> list[Candidate]:
    """The causes of pending system events that wait for an event of `batch`, in the order
    they were recorded."""
    ids = sorted({c.event.id for c in batch})
    causes: set[tuple[str, str]] = set()
    for i in range(0, len(ids), _CHUNK):
        rows = session.execute(
            select(PendingSystemEvent.cause_source, PendingSystemEvent.cause_id)
            .join(PendingWait, PendingWait.event_id == PendingSystemEvent.event_id)
            .where(PendingWait.awaited.in_(ids[i:i + _CHUNK])))
        causes.update((r[0], r[1]) for r in rows)
    if not causes:
        return []
    keys = sorted(causes)
    found: list[EventRow] = []
    for i in range(0, len(keys), _CHUNK):
        found += session.scalars(select(EventRow).where(
            keys_in(session, (EventRow.source, EventRow.event_id), keys[i:i + _CHUNK])))
    return [_candidate(r) for r in sorted(found, key=lambda r: r.seq)]


def _candidate(row: EventRow) -> Candidate:
    record = SourceRecord(topic=row.topic, partition=row.partition, offset=row.offset,
                          key=row.subject.encode(), value=row.value)
    return Candidate(record=record, event=decode_stored_event(row.value), keyid=row.keyid,
                     signature=row.signature, cause=row.cause)


def resolve(session: Session, recorded: Sequence[Candidate]) -> None:
    """Forget what the recorded system events among `recorded` waited for (they are written)."""
    ids = sorted({c.event.id for c in recorded if c.event.type in DEFERRABLE})
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i:i + _CHUNK]
        session.execute(delete(PendingWait).where(PendingWait.event_id.in_(chunk)))
        session.execute(delete(PendingSystemEvent).where(PendingSystemEvent.event_id.in_(chunk)))


def pending(session: Session) -> list[PendingSystemEvent]:
    """Every system event still waiting, oldest cause first (for operators and audits)."""
    return list(session.scalars(select(PendingSystemEvent).order_by(
        PendingSystemEvent.since, PendingSystemEvent.event_id)))
