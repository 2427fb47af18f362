"""Telemetry retention: raw burn-in telemetry is kept N days, its SHA-256 forever.

`prune_telemetry` replaces the `value` of `line.telemetry` rows whose event time is older
than the cutoff with the `PRUNED` marker, keeping every other column (ids, times, keyid,
signature, digest). Before a row's bytes go, its digest is checked against them (a row that
was edited is reported and kept, never pruned into silence) and filled in for rows written
before digests existed. Rows a stage still owes a decision for (an open stage failure) are
kept until it is resolved. One short transaction per chunk, so the worker is never held up
for long. The policy and its sizing: docs/operations.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Table, bindparam, select, update

from linetrace.schemas.topics import TELEMETRY

from .db import Ledger
from .models import EventRow
from .stage_failures import StageFailure
from .telemetry_store import PRUNED, digest, is_pruned

_CHUNK = 1000


@dataclass
class PruneReport:
    cutoff: datetime
    pruned: int = 0
    bytes_dropped: int = 0  # of the event bytes (their decoded size)
    kept_open_failures: int = 0
    mismatched: list[str] = field(default_factory=list)  # "source/event_id" of edited rows


def prune_telemetry(ledger: Ledger, cutoff: datetime, chunk: int = _CHUNK) -> PruneReport:
    """Prune every telemetry row with event time < `cutoff` (see the module doc)."""
    rep = PruneReport(cutoff=cutoff)
    after = 0
    while True:
        with ledger.transaction() as s:
            rows = s.execute(
                select(EventRow.seq, EventRow.source, EventRow.event_id, EventRow.value,
                       EventRow.digest)
                .where(EventRow.topic == TELEMETRY, EventRow.time < cutoff,
                       EventRow.seq > after, EventRow.value != PRUNED)
                .order_by(EventRow.seq).limit(chunk)).all()
            if not rows:
                return rep
            after = rows[-1][0]
            owed = set(s.scalars(select(StageFailure.event_seq).where(
                StageFailure.resolved.is_(None),
                StageFailure.event_seq.in_([r[0] for r in rows]))))
            changes = []
            for seq, source, event_id, value, stored_digest in rows:
                if is_pruned(value):
                    continue
                if seq in owed:
                    rep.kept_open_failures += 1
                    continue
                d = digest(value)
                if stored_digest is not None and d != stored_digest:
                    rep.mismatched.append(f"{source}/{event_id}")
                    continue
                changes.append({"s": seq, "d": d})
                rep.bytes_dropped += len(value)
            if changes:
                events: Table = EventRow.__table__  # type: ignore[assignment]
                s.connection().execute(
                    update(events).where(events.c.seq == bindparam("s"))
                    .values(value=PRUNED, digest=bindparam("d")), changes)
                rep.pruned += len(changes)
