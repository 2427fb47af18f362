"""The alert engine's tables: each alert's current state, and every transition it went through.

`alerts` holds one row per `(condition, subject)` (its id is `conditions.alert_id`), with the
ISA-18.2 state kept as orthogonal flags (the condition active or not, acknowledged or not,
suppressed, shelved until, out of service) and the state they give (`state`, stored so
`linetrace alerts --state S` is one indexed query). `alert_history` records each transition
(raised, cleared, acknowledged, shelved, ...): the console's history, the KPIs (alarms per
10 minutes, flood, chattering, top-10 share) and the `line.alerts` messages all derive from it.
`(alert_id, occurrence, transition, cause)` is unique, so a redo of the same work adds nothing.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from ..models import Base, BigId


class Alert(Base):
    """One alert and its ISA-18.2 state. `active`: in alarm (the condition holds, or a latched
    alarm not yet reset); `process_active`: what the detector last said; `acked`: nothing left
    to acknowledge for the current occurrence; `cause`/`cause_active`: the last finding
    applied, so the same finding again changes nothing."""

    __tablename__ = "alerts"
    alert_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    condition: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(256))
    priority: Mapped[str] = mapped_column(String(8))
    state: Mapped[str] = mapped_column(String(24))
    active: Mapped[bool] = mapped_column(Boolean)
    process_active: Mapped[bool] = mapped_column(Boolean)
    acked: Mapped[bool] = mapped_column(Boolean)
    suppressed: Mapped[bool] = mapped_column(Boolean)
    out_of_service: Mapped[bool] = mapped_column(Boolean)
    latched: Mapped[bool] = mapped_column(Boolean)
    chattering: Mapped[bool] = mapped_column(Boolean)
    shelved_until: Mapped[datetime | None]
    occurrences: Mapped[int] = mapped_column(Integer)
    raised: Mapped[datetime]  # activation of the current (or last) occurrence
    cleared: Mapped[datetime | None]  # when the current occurrence's condition cleared
    updated: Mapped[datetime]  # the last transition
    message: Mapped[str] = mapped_column(String(1024))
    action: Mapped[str] = mapped_column(String(1024))
    details: Mapped[dict[str, Any]]
    unit: Mapped[str | None] = mapped_column(String(128))
    station: Mapped[str | None] = mapped_column(String(64))
    lot: Mapped[str | None] = mapped_column(String(128))
    parent: Mapped[str | None] = mapped_column(String(16))
    cause: Mapped[str] = mapped_column(String(128))
    cause_active: Mapped[bool] = mapped_column(Boolean)
    last_time: Mapped[datetime]  # event time of the last finding that changed the alert
    __table_args__ = (Index("ix_alerts_state", "state"), Index("ix_alerts_parent", "parent"))


class AlertHistory(Base):
    """One transition of one alert: what happened, the state it left, when (event time for a
    detector's finding, the action's time for a person's), who acted, and why."""

    __tablename__ = "alert_history"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    alert_id: Mapped[str] = mapped_column(String(16))
    occurrence: Mapped[int] = mapped_column(Integer)
    transition: Mapped[str] = mapped_column(String(24))
    state: Mapped[str] = mapped_column(String(24))
    condition: Mapped[str] = mapped_column(String(64))
    priority: Mapped[str] = mapped_column(String(8))
    time: Mapped[datetime]
    by: Mapped[str | None] = mapped_column(String(128))
    cause: Mapped[str] = mapped_column(String(128))
    note: Mapped[str | None] = mapped_column(String(4096))  # a reason or a comment
    __table_args__ = (
        UniqueConstraint("alert_id", "occurrence", "transition", "cause",
                         name="uq_alert_history"),
        Index("ix_alert_history_alert", "alert_id", "id"),
        Index("ix_alert_history_time", "time"),
    )
