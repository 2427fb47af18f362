"""Alerts as the CLI, the console and `line.alerts` show them: `AlertView` (the contract shape of
`linetrace alerts --json`) and `HistoryEntry` (one transition, `linetrace alerts show ID`).

The contract (CONTRACTS.md, issue 12): `{id, condition, subject, priority, state, occurrences,
raised, updated, message, action}`; more fields may be added, none renamed. Times are RFC 3339
UTC with milliseconds.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from ..errors import LedgerError
from ..genealogy import iso
from .conditions import STATES
from .models import Alert, AlertHistory

#: `--state all`: every alert, normal ones included; no `--state`: every one not normal.
ALL = "all"


class AlertError(LedgerError):
    """An alert that does not exist, or an action its state does not allow."""

    code = "alert.error"


def utc(t: datetime) -> datetime:
    """A stored time as aware UTC (SQLite returns naive UTC)."""
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def utc_or_none(t: datetime | None) -> datetime | None:
    return None if t is None else utc(t)


@dataclass(frozen=True)
class AlertView:
    """One alert now. The first ten fields are the contract; the rest are additions."""

    id: str
    condition: str
    subject: str
    priority: str
    state: str
    occurrences: int
    raised: datetime
    updated: datetime
    message: str
    action: str
    active: bool = False
    acknowledged: bool = True
    chattering: bool = False
    latched: bool = False
    shelved_until: datetime | None = None
    cleared: datetime | None = None
    unit: str | None = None
    station: str | None = None
    lot: str | None = None
    parent: str | None = None
    details: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def of(cls, a: Alert) -> AlertView:
        return cls(id=a.alert_id, condition=a.condition, subject=a.subject, priority=a.priority,
                   state=a.state, occurrences=a.occurrences, raised=utc(a.raised),
                   updated=utc(a.updated), message=a.message, action=a.action, active=a.active,
                   acknowledged=a.acked, chattering=a.chattering, latched=a.latched,
                   shelved_until=utc_or_none(a.shelved_until), cleared=utc_or_none(a.cleared),
                   unit=a.unit, station=a.station, lot=a.lot, parent=a.parent,
                   details=dict(a.details or {}))

    def to_json(self) -> dict[str, Any]:
        """The `linetrace alerts --json` shape (contract fields first)."""
        return {"id": self.id, "condition": self.condition, "subject": self.subject,
                "priority": self.priority, "state": self.state,
                "occurrences": self.occurrences, "raised": iso(self.raised),
                "updated": iso(self.updated), "message": self.message, "action": self.action,
                "active": self.active, "acknowledged": self.acknowledged,
                "chattering": self.chattering, "latched": self.latched,
                "shelved_until": iso(self.shelved_until), "cleared": iso(self.cleared),
                "unit": self.unit, "station": self.station, "lot": self.lot,
                "parent": self.parent}


@dataclass(frozen=True)
class HistoryEntry:
    """One transition of an alert (`linetrace alerts show ID`)."""

    occurrence: int
    transition: str
    state: str
    time: datetime
    by: str | None
    cause: str
    note: str | None

    def to_json(self) -> dict[str, Any]:
        return {"occurrence": self.occurrence, "transition": self.transition,
                "state": self.state, "time": iso(self.time), "by": self.by,
                "cause": self.cause, "note": self.note}


def check_state(state: str | None) -> str | None:
    """`--state S` validated: one of the ISA-18.2 states, or `all`."""
    if state is None or state == ALL or state in STATES:
        return state
    raise AlertError(f"unknown alert state {state!r}: use one of {', '.join(STATES)} or "
                     f"{ALL}", code="alert.unknown_state")


def list_alerts(session: Session, state: str | None = None) -> list[AlertView]:
    """Alerts in `state` (`all`: every one; None: every one not normal), the most urgent
    first: high before medium before low, then the most recently updated."""
    check_state(state)
    q = select(Alert)
    if state is None:
        q = q.where(Alert.state != "normal")
    elif state != ALL:
        q = q.where(Alert.state == state)
    rank = {"high": 0, "medium": 1, "low": 2}
    views = [AlertView.of(a) for a in session.scalars(q)]
    views.sort(key=lambda v: (v.id,))
    views.sort(key=lambda v: v.updated, reverse=True)
    views.sort(key=lambda v: rank.get(v.priority, 3))
    return views


def unknown(alert_id: str) -> AlertError:
    return AlertError(f"no alert {alert_id!r}: `linetrace alerts --state all` lists them",
                      code="alert.unknown")


def get_alert(session: Session, alert_id: str) -> AlertView:
    a = session.get(Alert, alert_id)
    if a is None:
        raise unknown(alert_id)
    return AlertView.of(a)


def alert_history(session: Session, alert_id: str) -> list[HistoryEntry]:
    """Every transition of one alert, oldest first."""
    rows: Sequence[AlertHistory] = session.scalars(
        select(AlertHistory).where(AlertHistory.alert_id == alert_id)
        .order_by(AlertHistory.id)).all()
    return [HistoryEntry(occurrence=h.occurrence, transition=h.transition, state=h.state,
                         time=utc(h.time), by=h.by, cause=h.cause, note=h.note) for h in rows]


def alert_document(session: Session, alert_id: str) -> dict[str, Any]:
    """One alert with its details and every transition (who, when, why): the document of
    `linetrace alerts show ID --json` and the console's `GET /api/v1/alerts/{id}`."""
    view = get_alert(session, alert_id)
    return {**view.to_json(), "details": view.details,
            "history": [h.to_json() for h in alert_history(session, alert_id)]}
