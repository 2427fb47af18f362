"""Burn-in verdicts: the `burnin_verdicts` projection and the runs that wait for results.

`burnin_verdicts` is a projection of the `burnin.verdict` leaves (one row per verdict, written
when the system event is stored, rebuilt by `linetrace verify-ledger`'s replay); the full body
(per-GPU figures, reasons) stays in the leaf, which `burnin show` reads. `burnin_waits` holds a
run whose end the worker has stored before the unit's results: the verdict stage decides it
in the batch that completes the set, with the run end as its cause (docs/burnin.md).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Index, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_stored_event, parse_time

from .models import Base, BigId, EventRow


class BurninVerdictRow(Base):
    """One `burnin.verdict` (a projection of its leaf)."""

    __tablename__ = "burnin_verdicts"
    event_id: Mapped[str] = mapped_column(String(36), primary_key=True)  # the verdict's id
    serial: Mapped[str] = mapped_column(String(128))
    run_id: Mapped[str] = mapped_column(String(36))
    run_end: Mapped[str] = mapped_column(String(36))  # the burnin.run (end) that caused it
    station: Mapped[str] = mapped_column(String(64))
    sku: Mapped[str | None] = mapped_column(String(128))
    result: Mapped[str] = mapped_column(String(8))
    reasons: Mapped[int]
    failed_gpus: Mapped[str] = mapped_column(String(256))  # "3,5": indexes of failed GPUs
    telemetry_sha256: Mapped[str] = mapped_column(String(64))
    telemetry_events: Mapped[int]
    limits_sha256: Mapped[str] = mapped_column(String(64))
    decided_at: Mapped[datetime]  # the verdict's time (= its run end's)
    __table_args__ = (Index("ix_burnin_verdicts_serial", "serial", "decided_at"),)


class BurninWait(Base):
    """A run whose end is stored but whose results may not all be: decided later."""

    __tablename__ = "burnin_waits"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(64))  # the burnin.run (end)
    event_id: Mapped[str] = mapped_column(String(36))
    until: Mapped[datetime]  # its time: the unit's results are in once line.events reach it
    resolved: Mapped[datetime | None]
    __table_args__ = (UniqueConstraint("source", "event_id", name="uq_burnin_waits_end"),
                      Index("ix_burnin_waits_serial", "serial", "resolved"))


def verdict_row(event: Event) -> dict[str, object]:
    body = event.body
    assert isinstance(body, b.BurninVerdict)
    failed = [g.gpu_index for g in body.gpus if g.result == "Failed"]
    return {"event_id": event.id, "serial": event.subject, "run_id": body.run_id,
            "run_end": body.run_end, "station": body.station, "sku": body.sku,
            "result": body.result, "reasons": len(body.reasons),
            "failed_gpus": ",".join(map(str, failed))[:256],
            "telemetry_sha256": body.telemetry_sha256,
            "telemetry_events": body.telemetry_events, "limits_sha256": body.limits_sha256,
            "decided_at": parse_time(event.envelope.time)}


def project_verdict(session: Session, event: Event, time: datetime) -> None:
    """Projection of a `burnin.verdict` (idempotent: a replayed verdict changes nothing)."""
    if session.get(BurninVerdictRow, event.id) is None:
        session.add(BurninVerdictRow(**verdict_row(event)))


@dataclass(frozen=True)
class StoredVerdict:
    event: Event
    body: b.BurninVerdict


def verdicts_of(session: Session, serial: str) -> list[StoredVerdict]:
    """The unit's verdicts, latest first (by time, then id), with their full bodies."""
    ids = [r[0] for r in session.execute(
        select(BurninVerdictRow.event_id).where(BurninVerdictRow.serial == serial)
        .order_by(BurninVerdictRow.decided_at.desc(), BurninVerdictRow.event_id.desc()))]
    rows = {r.event_id: r for r in session.scalars(select(EventRow).where(
        EventRow.event_id.in_(ids), EventRow.type == "burnin.verdict"))} if ids else {}
    out: list[StoredVerdict] = []
    for i in ids:
        if i in rows:
            ev = decode_stored_event(rows[i].value)
            assert isinstance(ev.body, b.BurninVerdict)
            out.append(StoredVerdict(ev, ev.body))
    return out


def waiting_runs(session: Session, serials: Sequence[str]) -> list[BurninWait]:
    """Open waits of these units, oldest first."""
    if not serials:
        return []
    return list(session.scalars(select(BurninWait).where(
        BurninWait.serial.in_(sorted(set(serials))), BurninWait.resolved.is_(None))
        .order_by(BurninWait.id)))
