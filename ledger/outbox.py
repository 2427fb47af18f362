"""The outbox: every message linetrace publishes, written in the transaction that causes it.

System events, DLQ/quarantine copies and (as the project grows) commands, alerts and ERP
messages are rows here, inserted in the same DB transaction as the rows that cause them, and
published by one relay (`linetrace.streams.relay`). So a message exists if and only if its
cause was committed, and a crash between commit and publish delays it, never loses it.

Each row has a `message_id` derived from what caused it (UUIDv5 of kind, key and cause): a redo
of the same work inserts nothing new (`ON CONFLICT DO NOTHING`), and a consumer that
de-duplicates on the `linetrace-message-id` header sees each message once.

`seq` orders the rows. On PostgreSQL a sequence value is taken at insert time, so a
transaction with a lower `seq` may commit after one with a higher `seq`, or roll back (or
conflict, on a redo) and leave a gap for ever. `pending` therefore returns rows in `seq` order
only up to the first gap, until the gap is known to be final: on PostgreSQL once every
transaction that was running when the gap was first seen has ended (each holds a lock on its
own transaction id, visible in `pg_locks`, and a lock on the outbox table), elsewhere after `gap_grace`; rows that commit
late below the watermark are returned on the next pass.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Index, Integer, LargeBinary, String, select, text, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from .models import Base, BigId
from .sql import insert_ignore

MESSAGE_ID_HEADER = "linetrace-message-id"
_NS = uuid.UUID("5d3c8f4e-2a51-5b7e-9c0d-6f7574626f78")  # "outbox"

Headers = list[tuple[str, bytes]]


class OutboxRow(Base):
    __tablename__ = "outbox"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    message_id: Mapped[str] = mapped_column(String(36), unique=True)
    kind: Mapped[str] = mapped_column(String(32))  # system, dlq, quarantine, command, ...
    topic: Mapped[str] = mapped_column(String(80))
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]]  # {"headers": [[name, hex], ...]}: bytes kept exactly
    created: Mapped[datetime]
    sent: Mapped[datetime | None]
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    last_error: Mapped[str | None] = mapped_column(String(512))
    __table_args__ = (Index("ix_outbox_unsent", "sent", "seq"),)


class Lease(Base):
    """A named lease (the one active relay): holder and expiry, taken by a conditional UPDATE."""

    __tablename__ = "leases"
    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    holder: Mapped[str] = mapped_column(String(128))
    expires: Mapped[datetime]


@dataclass(frozen=True)
class Message:
    """One message to publish: where, what, and the id derived from its cause."""

    kind: str
    topic: str
    key: bytes | None
    value: bytes | None
    headers: Headers
    message_id: str


@dataclass(frozen=True)
class Pending:
    seq: int
    message: Message
    attempts: int


def message_id(kind: str, key: bytes | str | None, cause: str) -> str:
    """UUIDv5 of (kind, key, cause): the same cause always gives the same id."""
    k = key.decode("utf-8", "backslashreplace") if isinstance(key, bytes) else (key or "")
    return str(uuid.uuid5(_NS, f"{kind}\x00{k}\x00{cause}"))


def _encode_headers(headers: Headers) -> dict[str, Any]:
    return {"headers": [[k, v.hex()] for k, v in headers]}


def _decode_headers(data: dict[str, Any] | None) -> Headers:
    return [(str(k), bytes.fromhex(v)) for k, v in (data or {}).get("headers", [])]


def enqueue(session: Session, messages: Sequence[Message], now: datetime | None = None) -> None:
    """Add messages to the outbox inside the caller's transaction (a redo adds nothing)."""
    if not messages:
        return
    t = now or datetime.now(UTC)
    rows = []
    for m in messages:
        headers = [(k, v) for k, v in m.headers if k != MESSAGE_ID_HEADER]
        headers.append((MESSAGE_ID_HEADER, m.message_id.encode()))
        rows.append({"message_id": m.message_id, "kind": m.kind, "topic": m.topic, "key": m.key,
                     "value": m.value, "headers": _encode_headers(headers), "created": t,
                     "sent": None, "attempts": 0, "last_error": None})
    insert_ignore(session, OutboxRow.__table__, rows)  # type: ignore[arg-type]


def _pending(row: OutboxRow) -> Pending:
    return Pending(row.seq, Message(row.kind, row.topic, row.key, row.value,
                                    _decode_headers(row.headers), row.message_id), row.attempts)


@dataclass
class Watermark:
    """How far the relay has seen `seq` without gaps (in memory; rebuilt at start)."""

    seq: int = 0
    gap_since: datetime | None = None
    gap_running: frozenset[str] | None = None  # PostgreSQL: transactions running at the gap


#: Transactions (by id) that are writing to this database's outbox table: only they can fill a
#: gap (an INSERT locks the table before it draws its seq). Other transactions of the cluster
#: (a long report, another database's load) never hold the relay back.
_RUNNING = text(
    "SELECT x.transactionid::text FROM pg_locks x JOIN pg_locks r "
    "ON r.virtualtransaction = x.virtualtransaction "
    "WHERE x.locktype = 'transactionid' AND x.mode = 'ExclusiveLock' AND x.granted "
    "AND r.locktype = 'relation' AND r.relation = CAST('outbox' AS regclass) "
    "AND r.database = (SELECT oid FROM pg_database WHERE datname = current_database())")


def _running(session: Session) -> frozenset[str]:
    return frozenset(str(x) for x in session.scalars(_RUNNING))


def _gap_is_final(session: Session, mark: Watermark, now: datetime, grace: timedelta) -> bool:
    """Can no transaction still commit a row into the gap after `mark.seq`?"""
    postgres = session.get_bind().dialect.name == "postgresql"
    if mark.gap_since is None:
        mark.gap_since = now
        mark.gap_running = _running(session) if postgres else None
    if now - mark.gap_since >= grace:
        return True
    if mark.gap_running is not None:
        return not (mark.gap_running & _running(session))
    return False


def start_watermark(session: Session) -> Watermark:
    """Below the oldest unsent row, or at the newest row if all are sent."""
    oldest = session.scalar(select(OutboxRow.seq).where(OutboxRow.sent.is_(None))
                            .order_by(OutboxRow.seq).limit(1))
    if oldest is not None:
        return Watermark(oldest - 1)
    newest = session.scalar(select(OutboxRow.seq).order_by(OutboxRow.seq.desc()).limit(1))
    return Watermark(newest or 0)


def pending(session: Session, mark: Watermark, limit: int = 500,
            gap_grace: timedelta = timedelta(seconds=5), now: datetime | None = None
            ) -> list[Pending]:
    """Unsent messages in `seq` order, only where every older row is visible.

    Advances `mark` over rows seen without a gap. A gap (a `seq` taken by a transaction that
    has not committed yet, or that rolled back) stops the scan until it fills or is older than
    `gap_grace`; rows that commit late below the watermark are returned first.
    """
    t = now or datetime.now(UTC)
    late = list(session.scalars(select(OutboxRow).where(
        OutboxRow.sent.is_(None), OutboxRow.seq <= mark.seq).order_by(OutboxRow.seq)
        .limit(limit)))
    if len(late) >= limit:
        return [_pending(r) for r in late]
    fresh = session.execute(select(OutboxRow.seq, OutboxRow.sent).where(OutboxRow.seq > mark.seq)
                            .order_by(OutboxRow.seq).limit(limit - len(late))).all()
    visible: list[int] = []
    for seq, sent in fresh:
        if seq != mark.seq + 1 and not _gap_is_final(session, mark, t, gap_grace):
            break  # an older transaction may still commit into the gap
        mark.seq, mark.gap_since, mark.gap_running = seq, None, None
        if sent is None:
            visible.append(seq)
    rows = late
    if visible:
        rows += list(session.scalars(select(OutboxRow).where(OutboxRow.seq.in_(visible))
                                     .order_by(OutboxRow.seq)))
    return [_pending(r) for r in rows]


def mark_sent(session: Session, seqs: Sequence[int], now: datetime | None = None) -> None:
    if seqs:
        session.execute(update(OutboxRow).where(OutboxRow.seq.in_(list(seqs)))
                        .values(sent=now or datetime.now(UTC)))


def mark_failed(session: Session, seq: int, error: str) -> None:
    session.execute(update(OutboxRow).where(OutboxRow.seq == seq).values(
        attempts=OutboxRow.attempts + 1, last_error=error[:512]))


def backlog(session: Session) -> int:
    """Messages recorded and not yet acknowledged by the broker."""
    from sqlalchemy import func

    return int(session.scalar(select(func.count()).select_from(OutboxRow)
                              .where(OutboxRow.sent.is_(None))) or 0)


def take_lease(session: Session, name: str, holder: str, ttl: timedelta,
               now: datetime | None = None) -> bool:
    """Take or renew the lease `name` for `holder` unless another holder's is still valid."""
    t = now or datetime.now(UTC)
    expires = t + ttl
    got = session.execute(update(Lease).where(
        Lease.name == name, (Lease.holder == holder) | (Lease.expires < t))
        .values(holder=holder, expires=expires))
    if got.rowcount:  # type: ignore[attr-defined]
        return True
    insert_ignore(session, Lease.__table__,  # type: ignore[arg-type]
                  [{"name": name, "holder": holder, "expires": expires}])
    row = session.get(Lease, name, populate_existing=True)
    return row is not None and row.holder == holder


def release_lease(session: Session, name: str, holder: str) -> None:
    session.execute(update(Lease).where(Lease.name == name, Lease.holder == holder)
                    .values(expires=datetime(1970, 1, 1, tzinfo=UTC)))
