"""Stage failures: a stage that raised on an event, recorded so it is retried, never lost.

The events themselves are already stored (a stage bug never rejects valid, signed events);
this table says which stage still owes a decision for which event, why it failed, and how
often it was tried. The worker retries open failures; a success closes the row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Index, Integer, String, func, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, BigId, EventRow
from .sql import upsert


class StageFailure(Base):
    __tablename__ = "stage_failures"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    stage: Mapped[str] = mapped_column(String(64))
    event_seq: Mapped[int] = mapped_column(BigId)  # events.seq of the event it failed on
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    error: Mapped[str] = mapped_column(String(2048))
    attempts: Mapped[int] = mapped_column(Integer)
    first_failed: Mapped[datetime]
    last_failed: Mapped[datetime]
    resolved: Mapped[datetime | None]
    __table_args__ = (
        Index("uq_stage_failures_stage_event", "stage", "event_seq", unique=True),
        Index("ix_stage_failures_open", "resolved", "stage"),
    )


@dataclass(frozen=True)
class OpenFailure:
    stage: str
    event_seq: int
    source: str
    event_id: str
    error: str
    attempts: int
    last_failed: datetime


def record_failures(session: Session, stage: str, failed: Sequence[tuple[int, str, str]],
                    error: str, now: datetime | None = None) -> None:
    """Record (or count again) the stage's failure on each (events.seq, source, id)."""
    if not failed:
        return
    t = now or datetime.now(UTC)
    seqs = [f[0] for f in failed]
    prior = {r[0]: r[1] for r in session.execute(
        select(StageFailure.event_seq, StageFailure.attempts).where(
            StageFailure.stage == stage, StageFailure.event_seq.in_(seqs)))}
    rows = [{"stage": stage, "event_seq": seq, "source": source, "event_id": event_id,
             "error": error[:2048], "attempts": prior.get(seq, 0) + 1, "first_failed": t,
             "last_failed": t, "resolved": None}
            for seq, source, event_id in failed]
    new = [r for r in rows if r["event_seq"] not in prior]
    old = [r for r in rows if r["event_seq"] in prior]
    upsert(session, StageFailure.__table__, new, ["stage", "event_seq"])  # type: ignore[arg-type]
    for r in old:
        session.execute(update(StageFailure).where(
            StageFailure.stage == stage, StageFailure.event_seq == r["event_seq"]).values(
            error=r["error"], attempts=r["attempts"], last_failed=t, resolved=None))


def open_failures(session: Session, stage: str | None = None, limit: int = 500
                  ) -> list[OpenFailure]:
    q = select(StageFailure).where(StageFailure.resolved.is_(None))
    if stage is not None:
        q = q.where(StageFailure.stage == stage)
    return [OpenFailure(r.stage, r.event_seq, r.source, r.event_id, r.error, r.attempts,
                        r.last_failed)
            for r in session.scalars(q.order_by(StageFailure.event_seq).limit(limit))]


def resolve_failures(session: Session, stage: str, event_seqs: Sequence[int],
                     now: datetime | None = None) -> None:
    if event_seqs:
        session.execute(update(StageFailure).where(
            StageFailure.stage == stage, StageFailure.event_seq.in_(list(event_seqs)),
            StageFailure.resolved.is_(None)).values(resolved=now or datetime.now(UTC)))


def count_open(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(StageFailure)
                              .where(StageFailure.resolved.is_(None))) or 0)


def event_rows(session: Session, event_seqs: Sequence[int]) -> list[EventRow]:
    """The stored events a retry runs the stage on again, in log order."""
    return list(session.scalars(select(EventRow).where(EventRow.seq.in_(list(event_seqs)))
                                .order_by(EventRow.seq)))
