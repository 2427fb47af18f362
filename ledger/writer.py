"""The idempotent batch writer: ingest rules 3 and 4, events, projections, rejections.

One DB transaction per batch. `(source, id)` is unique; an identical replay is a silent
duplicate, the same id with other bytes is equivocation (quarantine), and a station event
whose `stationseq` does not advance on its (station, topic, partition) is reordered
(quarantine). Every rejection, from any rule, is stored in `rejected` in the same transaction.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime

from typing import Any

from sqlalchemy import Table, bindparam, insert, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError
from sqlalchemy.orm import Session

from linetrace.schemas.envelope import SYSTEM_SOURCE, parse_time
from linetrace.schemas.routes import packaged_routes
from linetrace.schemas.topics import QUARANTINE

from . import log as merkle_log
from . import outbox, pending, security_alerts, telemetry_store
from .db import Ledger
from .system_events import SystemContext, derive, register_plant_key
from .models import EventRow, IngestPosition, Rejected, StationKey, StationPosition
from .projections import PROJECTIONS, project_batch
from .records import BatchOutcome, Candidate, Rejection
from .sql import insert_ignore, upsert

_CHUNK = 400


_EXISTING = (select(EventRow.source, EventRow.event_id, EventRow.value, EventRow.digest)
             .where(EventRow.source == bindparam("source"),
                    EventRow.event_id.in_(bindparam("ids", expanding=True))))


def _existing(session: Session, keys: Sequence[tuple[str, str]]
              ) -> dict[tuple[str, str], tuple[bytes, bytes | None]]:
    """(source, id) -> (stored value, digest) of those keys already in the ledger: one cached
    statement per source (`source = ? AND event_id IN (...)` searches the unique index)."""
    found: dict[tuple[str, str], tuple[bytes, bytes | None]] = {}
    by_source: dict[str, list[str]] = {}
    for src, eid in dict.fromkeys(keys):
        by_source.setdefault(src, []).append(eid)
    for src, ids in by_source.items():
        for i in range(0, len(ids), _CHUNK):
            rows = session.execute(_EXISTING, {"source": src, "ids": ids[i : i + _CHUNK]})
            found.update({(r[0], r[1]): (r[2], r[3]) for r in rows})
    return found


_POSITIONS = (select(StationPosition.station_id, StationPosition.topic,
                     StationPosition.partition, StationPosition.last_seq)
              .where(StationPosition.station_id.in_(bindparam("stations", expanding=True)),
                     StationPosition.topic.in_(bindparam("topics", expanding=True))))


def _positions(
    session: Session, keys: Iterable[tuple[str, str, int]]
) -> dict[tuple[str, str, int], int]:
    """Last accepted stationseq per (station, topic, partition) of these keys: one cached
    statement for the batch's stations and topics (a few rows each), filtered here."""
    wanted = set(keys)
    if not wanted:
        return {}
    rows = session.execute(_POSITIONS, {"stations": sorted({k[0] for k in wanted}),
                                        "topics": sorted({k[1] for k in wanted})})
    out = {(str(r[0]), str(r[1]), int(r[2])): int(r[3]) for r in rows}
    return {k: v for k, v in out.items() if k in wanted}


def revocation_violation(keyid: str, station: str, revoked_after: dict[str, int] | None,
                         topic: str, seq: int | None) -> str | None:
    """Why an event signed by a revoked key is refused, or None if the key may sign it."""
    if revoked_after is None:
        return None
    last = revoked_after.get(topic)
    if last is not None and seq is not None and seq <= last:
        return None
    return (f"key {keyid} of {station} was revoked (last valid stationseq on {topic}: {last}); "
            f"this event is {seq}. Sign with the station's current key.")


def _revoked(session: Session, keyids: set[str]) -> dict[str, dict[str, int]]:
    """Revoked keys among `keyids`, read inside the batch transaction (so a revocation the
    CLI committed applies to every batch written after it)."""
    if not keyids:
        return {}
    rows = session.execute(select(StationKey.keyid, StationKey.revoked_after).where(
        StationKey.keyid.in_(sorted(keyids)), StationKey.revoked_at.is_not(None)))
    out: dict[str, dict[str, int]] = {}
    for row in rows:
        limits: dict[str, Any] = row[1] or {}
        out[str(row[0])] = {str(t): int(n) for t, n in limits.items()}
    return out


def _quarantine(c: Candidate, code: str, message: str, stage: str) -> Rejection:
    return Rejection(record=c.record, destination=QUARANTINE, code=code, message=message,
                     stage=stage, source=c.event.source, event_id=c.event.id)


def rejection_digest(r: Rejection) -> str:
    """The `rejected.digest` of a rejection: where the record was read, its bytes and why
    (unique, so a replay of the same record stores nothing twice)."""
    rec = r.record
    digest = hashlib.sha256()
    for part in (rec.topic.encode(), str(rec.partition).encode(), str(rec.offset).encode(),
                 rec.key or b"", rec.value or b"", r.code.encode()):
        digest.update(len(part).to_bytes(8, "big") + part)
    return digest.hexdigest()


def rejection_row(r: Rejection, now: datetime) -> dict[str, object]:
    rec = r.record
    return {
        "destination": r.destination, "code": r.code, "message": r.message[:2048],
        "stage": r.stage, "topic": rec.topic, "partition": rec.partition, "offset": rec.offset,
        "key": rec.key, "value": rec.value,
        "headers": {"headers": [[k, v.decode("utf-8", "replace")] for k, v in rec.headers]},
        "source": r.source, "event_id": r.event_id, "digest": rejection_digest(r),
        "recorded": now,
    }


def _suspects(candidates: Sequence[Candidate], last: Mapping[tuple[str, str, int], int],
              full: bool) -> list[tuple[str, str]]:
    """The (source, id) keys that may already be in the ledger, to look up before storing.

    A station event whose `stationseq` is past the last one accepted on its partition cannot
    have been stored (positions advance in the transaction that stores the event), so the
    common case needs no lookup; a reused id there still meets the unique key, and the batch
    is then written again with every key looked up (`full`)."""
    out: list[tuple[str, str]] = []
    for c in candidates:
        ev = c.event
        seq, part = ev.seq, c.record.partition
        if full or seq is None or part is None:
            out.append((ev.source, ev.id))
            continue
        prev = last.get((ev.source, c.record.topic, part))
        if prev is not None and seq <= prev:
            out.append((ev.source, ev.id))
    return out


def _event_row(c: Candidate, now: datetime) -> dict[str, Any]:
    ev, rec = c.event, c.record
    row: dict[str, Any] = {
        "source": ev.source, "event_id": ev.id, "type": ev.type, "subject": ev.subject,
        "time": parse_time(ev.envelope.time), "stationseq": ev.seq, "topic": rec.topic,
        "partition": rec.partition, "offset": rec.offset, "cause": c.cause, "keyid": c.keyid,
        "signature": c.signature, "recorded": now}
    row.update(c.columns if c.columns is not None
               else telemetry_store.stored_columns(rec.topic, ev.value))
    return row


def _allocate_seqs(session: Session, n: int) -> list[int]:
    """n new events.seq numbers, in increasing order (PostgreSQL: the column's sequence;
    SQLite: past the highest, safe because a writer holds the database's write lock)."""
    if session.get_bind().dialect.name == "postgresql":
        got: Iterable[Any] = session.execute(text("SELECT nextval(pg_get_serial_sequence('events', 'seq')) "
                                   "FROM generate_series(1, :n)"), {"n": n}).scalars()
        return sorted(int(x) for x in got)
    top = int(session.execute(text("SELECT COALESCE(MAX(seq), 0) FROM events")).scalar_one())
    return list(range(top + 1, top + 1 + n))


def _insert_events(session: Session, rows: Sequence[dict[str, Any]]) -> list[int]:
    """Bulk INSERT of event rows (Core executemany of one small statement: the driver's fast
    path, psycopg's pipeline), their seq allocated beforehand; returns the seqs."""
    if not rows:
        return []
    seqs = _allocate_seqs(session, len(rows))
    for row, seq in zip(rows, seqs, strict=True):
        row["seq"] = seq
    table: Table = EventRow.__table__  # type: ignore[assignment]
    if session.get_bind().dialect.name == "postgresql":
        _copy_rows(session, table, rows)
    else:
        session.execute(insert(table), list(rows))
    return seqs


def _copy_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """PostgreSQL: COPY the rows in (one round trip, no statement to parse per row), on the
    session's own connection, so inside the batch transaction."""
    cols = list(rows[0])
    dbapi = session.connection().connection.driver_connection
    assert dbapi is not None
    names = ", ".join(f'"{c}"' for c in cols)
    statement = f"COPY {table.name} ({names}) FROM STDIN"
    dbapi_error: type[Exception] = session.get_bind().dialect.loaded_dbapi.Error
    try:
        with dbapi.cursor() as cur, cur.copy(statement) as copy:
            for row in rows:
                copy.write_row([row[c] for c in cols])
    except dbapi_error as e:  # as SQLAlchemy raises it (IntegrityError, OperationalError...)
        raise DBAPIError.instance(statement, None, e, dbapi_error) from e


def store_events(session: Session, candidates: Sequence[Candidate],
                 ctx: SystemContext | None = None, *, full_dedupe: bool = False) -> BatchOutcome:
    """Rules 3 and 4, store and project the accepted events, append their leaves, and queue
    the system events among them for publishing (inside the caller's transaction).

    The system events they cause are decided after, by the stages (`run_stages`). Event rows
    are inserted in bulk (Core); only events with a projection touch the ORM.
    """
    out = BatchOutcome()
    session.info["routes"] = ctx.routes if ctx is not None else packaged_routes()  # projections
    last = _positions(session, [(c.event.source, c.record.topic, c.record.partition)
                                for c in candidates
                                if c.event.seq is not None and c.record.partition is not None])
    existing = _existing(session, _suspects(candidates, last, full_dedupe))
    moved: dict[tuple[str, str, int], int] = {}
    revoked = _revoked(session, {c.keyid for c in candidates})
    now = datetime.now(UTC)
    for c in candidates:
        ev = c.event
        if c.keyid in revoked:
            why = revocation_violation(c.keyid, ev.source, revoked[c.keyid], c.record.topic, ev.seq)
            if why is not None:
                out.rejections.append(_quarantine(c, "key.revoked", why, "verify"))
                continue
        key = (ev.source, ev.id)
        prior = existing.get(key)
        if prior is not None:
            if telemetry_store.same_bytes(prior[0], prior[1], ev.value):
                out.duplicates += 1
            else:
                out.rejections.append(_quarantine(
                    c, "event.equivocation",
                    f"{ev.source} already sent event {ev.id} with different bytes; an event id "
                    "is used once (a resend must be byte-identical)", "dedupe"))
            continue
        seq = ev.seq
        if seq is not None and c.record.partition is not None:
            pos = (ev.source, c.record.topic, c.record.partition)
            prev = moved.get(pos, last.get(pos))
            if prev is not None and seq <= prev:
                out.rejections.append(_quarantine(
                    c, "seq.reordered",
                    f"stationseq {seq} from {ev.source} on {c.record.topic}[{c.record.partition}] "
                    f"is not after the last accepted {prev}; send events in order and never "
                    "reuse a number", "sequence"))
                continue
            moved[pos] = seq
        existing[key] = (ev.value, None)
        out.stored.append(c)
    seqs = _insert_events(session, [_event_row(c, now) for c in out.stored])
    stored_seqs(session).update({(c.event.source, c.event.id): s
                                 for c, s in zip(out.stored, seqs, strict=True)})
    projected = [c.event for c in out.stored if c.event.type in PROJECTIONS]
    if projected:  # then settled: the states installs decide, whatever the partitions' order
        project_batch(session, projected)
    upsert(session, StationPosition.__table__,  # type: ignore[arg-type]
           [{"station_id": k[0], "topic": k[1], "partition": k[2], "last_seq": v}
            for k, v in moved.items()], ["station_id", "topic", "partition"])
    merkle_log.append_events(session, out.stored)
    pending.resolve(session, out.stored)  # a seal that waited is written now
    own = [c for c in out.stored if is_own_system_event(c)]
    if own:
        outbox.enqueue(session, [system_message(c) for c in own], now)
        if ctx is not None:  # ingest verifies them when they come back from Kafka
            register_plant_key(session, ctx.plant_key, now)
    return out


def stored_seqs(session: Session) -> dict[tuple[str, str], int]:
    """events.seq of every event this transaction stored, by (source, id): what the log and
    the stages need, without a query or a scan of the session."""
    seqs: dict[tuple[str, str], int] = session.info.setdefault("event_seqs", {})
    return seqs


def is_own_system_event(c: Candidate) -> bool:
    """A system event authored here (not one read back from Kafka): it must be published."""
    return c.event.source == SYSTEM_SOURCE and c.record.partition is None


def system_message(c: Candidate) -> outbox.Message:
    """The outbox copy of a system event, its id derived from type, subject and cause."""
    return outbox.Message(kind="system", topic=c.record.topic, key=c.event.subject.encode(),
                          value=c.event.value, headers=list(c.record.headers),
                          message_id=outbox.message_id(c.event.type, c.event.subject,
                                                       c.cause or c.event.id))


def error_headers(r: Rejection) -> list[tuple[str, bytes]]:
    """The original headers plus the documented error headers (UTF-8, CONTRACTS.md)."""
    rec = r.record
    extra = {
        "error.code": r.code,
        "error.message": r.message,
        "error.stage": r.stage,
        "original.topic": rec.topic,
        "original.partition": "" if rec.partition is None else str(rec.partition),
        "original.offset": "" if rec.offset is None else str(rec.offset),
    }
    kept = [(k, v) for k, v in rec.headers if k not in extra and k != outbox.MESSAGE_ID_HEADER]
    return kept + [(k, v.encode("utf-8")) for k, v in extra.items()]


def record_rejections(session: Session, rejections: Sequence[Rejection],
                      now: datetime | None = None) -> None:
    """Store each rejection (raw bytes + reason) and queue its DLQ/quarantine copy."""
    if not rejections:
        return
    t = now or datetime.now(UTC)
    rows = [rejection_row(r, t) for r in rejections]
    insert_ignore(session, Rejected.__table__, rows)  # type: ignore[arg-type]
    outbox.enqueue(session, [
        outbox.Message(kind="quarantine" if r.destination == QUARANTINE else "dlq",
                       topic=r.destination, key=r.record.key, value=r.record.value,
                       headers=error_headers(r),
                       message_id=outbox.message_id("rejected", r.destination, str(row["digest"])))
        for r, row in zip(rejections, rows, strict=True)], t)


#: What the worker's stage pipeline plugs into the batch transaction: given the events just
#: stored, it writes its decisions and returns the system events it decided (to be recorded).
StageHook = Callable[[Session, Sequence[Candidate]], Sequence[Candidate]]
_MAX_DEPTH = 8  # system events caused by system events: a bound, never reached in practice


#: W3C trace context headers: a system event carries those of the record that caused it.
TRACE_HEADERS = ("traceparent", "tracestate")


def _with_cause_trace(decided: Sequence[Candidate], batch: Sequence[Candidate]) -> list[Candidate]:
    trace_of = {c.event.id: [(k, v) for k, v in c.record.headers if k in TRACE_HEADERS]
                for c in batch}
    out = []
    for d in decided:
        extra = trace_of.get(d.cause or "", [])
        if extra:
            kept = [(k, v) for k, v in d.record.headers if k not in TRACE_HEADERS]
            d = replace(d, record=replace(d.record, headers=kept + extra))
        out.append(d)
    return out


def run_stages(session: Session, out: BatchOutcome, stages: StageHook,
               ctx: SystemContext | None) -> None:
    """Run the stages over what was stored, record the system events they decide, repeat."""
    batch: list[Candidate] = [*out.stored, *out.system]
    for _ in range(_MAX_DEPTH):
        decided = _with_cause_trace(stages(session, batch), batch)
        if not decided:
            return
        nested = store_events(session, decided, ctx)
        out.system.extend(nested.stored)
        out.system.extend(nested.system)
        batch = [*nested.stored, *nested.system]
    raise RuntimeError(f"stages kept deciding system events {_MAX_DEPTH} levels deep")


def _derive_hook(ctx: SystemContext | None) -> StageHook | None:
    """Without a stage pipeline (tools, tests, benches), the writer derives the system events
    itself, as the worker's system-events stage does."""
    if ctx is None:
        return None
    return lambda session, stored: derive(session, stored, ctx)


def write_batch(
    ledger: Ledger,
    candidates: Sequence[Candidate],
    rejections: Sequence[Rejection] = (),
    positions: Mapping[tuple[str, int], int] | None = None,
    ctx: SystemContext | None = None,
    stages: StageHook | None = None,
    incarnation: str | None = None,
) -> BatchOutcome:
    """One batch, one transaction. Retried if a concurrent writer raced us on a key.

    Events, projections, leaves, the system events they cause, the stages' decisions, the
    rejections and every outbox message all commit together, or none of them does.
    """
    for attempt in range(3):
        try:
            with ledger.transaction() as session:
                # The log-head lock is taken by `append_events`, after the events and their
                # projections are written: two PostgreSQL workers serialise only on the
                # appends and the stages, and a batch with no leaf (telemetry) never waits for
                # it. Two workers whose batches touch the same row (a sub-assembly's custody)
                # can then deadlock; PostgreSQL aborts one, and that batch is written again at
                # once (`rolled_back_by_peer`).
                out = store_events(session, candidates, ctx, full_dedupe=attempt > 0)
                hook = stages if stages is not None else _derive_hook(ctx)
                if hook is not None:
                    run_stages(session, out, hook, ctx)
                out.rejections[:0] = rejections
                now = datetime.now(UTC)
                known = security_alerts.known_rejections(session, out.rejections)
                record_rejections(session, out.rejections, now)
                security_alerts.raise_security_alerts(  # quarantined / absurd times: alerts
                    session, out.rejections, known, _station_seqs(session, out.stored), now)
                if positions:
                    upsert(session, IngestPosition.__table__,  # type: ignore[arg-type]
                           [{"topic": t, "partition": p, "next_offset": o, "incarnation": incarnation,
                             "updated": now}
                            for (t, p), o in positions.items()], ["topic", "partition"])
                return out
        except IntegrityError:
            # A key another writer stored meanwhile, or an event id reused past the station's
            # last position: write it again, this time looking every key up (rules 3 and 4).
            if attempt == 2:
                raise
        except OperationalError as e:
            if attempt == 2 or not rolled_back_by_peer(e):
                raise
    raise AssertionError("unreachable")


def _station_seqs(session: Session, stored: Sequence[Candidate]) -> list[int]:
    """events.seq of the stored events read from an input partition (those the line clock
    judges), for the absurd-time alerts."""
    seqs = stored_seqs(session)
    return [seqs[k] for c in stored if c.record.partition is not None
            and (k := (c.event.source, c.event.id)) in seqs]


def rolled_back_by_peer(e: OperationalError) -> bool:
    """PostgreSQL aborted the transaction because of another one (deadlock detected,
    serialization failure): write the batch again at once."""
    return getattr(e.orig, "sqlstate", None) in ("40P01", "40001")


def record_system_event(session: Session, candidate: Candidate) -> bool:
    """Record one of linetrace's own events before it is published (True if new)."""
    assert candidate.event.source == SYSTEM_SOURCE
    out = store_events(session, [candidate])
    if out.rejections:
        raise ValueError(out.rejections[0].message)
    return bool(out.stored)


