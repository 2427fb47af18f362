"""What people do with alerts: acknowledge, shelve, unshelve, comment, out of service, return.

ISA-18.2 / IEC 62682 gives the operator these actions; in linetrace each is a person's signed
statement (`schemas.statements`, action `alert.*`, target the alert id) recorded, in one
ledger transaction, as a plant-signed system event (`alert.acknowledged`, `alert.shelved`,
... on line.alerts, key = alert id, `schemas.alert_events`) that carries the statement and
names the user, and applied to the alert by the engine (`engine.apply_action`, with the event
as its cause), which records the transition and queues the alert's `line.alerts` message. The
system event is a leaf of the Merkle log, so `verify-ledger` re-checks who acted
(`ledger.proof.statements`), as for holds.

The cause of the event is the statement's request UUID, the idempotency key: the same request
again records nothing and returns the alert as it is (`hold_actions.recorded_again`). Its
time is the wall clock.

Who may do what (docs/alerts.md "Operator actions"): acknowledging, shelving, unshelving and
commenting are the operator's work on the line (ISA-18.2 "operator actions"); linetrace has no
operator role, so supervisors, quality users and admins take them. Taking an alert out of
service, and returning it, removes it from the operator's view for maintenance and needs
authorisation (ISA-18.2 "out of service" under management of change): supervisor or admin.
Viewers sign nothing. A shelve is time-limited: it lasts at most `SHELVE_MAX` (24 h, so a
shelved alert cannot be forgotten into staleness) from the signed statement's time.
"""

from __future__ import annotations

from collections.abc import Collection
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from linetrace.schemas import alert_events as ae
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, deterministic_id, format_time, parse_time
from linetrace.schemas.statements import read_statement

from ..db import Ledger
from ..hold_actions import Recorder, check_details, recorded_again
from ..models import EventRow
from ..proof.statements import shelve_problem
from ..users import verify_user_statement
from .engine import Action, apply_action
from .models import Alert
from .views import AlertError, AlertView, get_alert, unknown

#: Roles that may sign each action (mirrored in `ledger.proof.statements.ALERT_ROLES`; a test
#: keeps the two equal).
ALERT_ROLES: dict[str, tuple[str, ...]] = {
    "alert.acknowledge": ("supervisor", "quality", "admin"),
    "alert.shelve": ("supervisor", "quality", "admin"),
    "alert.unshelve": ("supervisor", "quality", "admin"),
    "alert.comment": ("supervisor", "quality", "admin"),
    "alert.out_of_service": ("supervisor", "admin"),
    "alert.return_to_service": ("supervisor", "admin"),
}
#: The longest shelve (ISA-18.2: shelving is time-limited); the shortest, so a typo such as
#: `--for 2s` is caught.
SHELVE_MAX = timedelta(hours=24)
SHELVE_MIN = timedelta(minutes=1)
#: The engine's action -> the statement's action and the system event that records it.
STATEMENT_ACTION: dict[Action, str] = {
    "acknowledge": "alert.acknowledge", "shelve": "alert.shelve", "unshelve": "alert.unshelve",
    "comment": "alert.comment", "out_of_service": "alert.out_of_service",
    "return_to_service": "alert.return_to_service"}
EVENT_TYPE: dict[Action, str] = {
    "acknowledge": "alert.acknowledged", "shelve": "alert.shelved",
    "unshelve": "alert.unshelved", "comment": "alert.commented",
    "out_of_service": "alert.outofservice", "return_to_service": "alert.inservice"}
_DONE = {"acknowledge": "acknowledged", "shelve": "shelved", "unshelve": "unshelved",
         "comment": "commented on", "out_of_service": "took out of service",
         "return_to_service": "returned to service"}
_MAX_TEXT = 4096


@dataclass(frozen=True)
class AlertOutcome:
    """What an action did: the alert as `linetrace alerts` shows it now, whether this call
    recorded anything (`new`), the event types recorded and what to tell the person."""

    alert: AlertView
    new: bool
    message: str
    recorded: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {**self.alert.to_json(), "recorded": self.recorded, "new": self.new,
                "message": self.message}


def _text(value: str | None, what: str, *, required: bool) -> str | None:
    """A reason or comment as recorded: None when not given; refused when required and empty,
    too long, or holding NUL (which the database cannot store)."""
    if value is None or not value.strip():
        if required:
            raise AlertError(f"{what} is required and may not be empty", code="alert.invalid")
        return None
    if len(value) > _MAX_TEXT or "\x00" in value:
        raise AlertError(f"{what} must be at most {_MAX_TEXT} characters without NUL",
                         code="alert.invalid")
    return value


def statement_details(action: Action, *, comment: str | None = None,
                      reason: str | None = None, until: str | None = None) -> dict[str, str]:
    """What the person signs for `action` (strings only), exactly what the event records:
    acknowledge `{comment?}`, shelve `{until, reason}`, unshelve `{reason?}`, comment
    `{comment}`, out of service `{reason}`, return to service `{reason?}`."""
    if action == "acknowledge":
        c = _text(comment, "an acknowledgement's comment", required=False)
        return {"comment": c} if c else {}
    if action == "comment":
        return {"comment": _text(comment, "a comment", required=True) or ""}
    if action == "shelve":
        if until is None:
            raise AlertError("a shelve needs its end (--for DURATION)", code="alert.invalid")
        return {"until": until,
                "reason": _text(reason, "a shelve's reason (--reason)", required=True) or ""}
    if action == "out_of_service":
        return {"reason": _text(reason, "taking an alert out of service needs a reason "
                                        "(--reason); the reason", required=True) or ""}
    r = _text(reason, "the reason", required=False)
    return {"reason": r} if r else {}


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION = re.compile(r"^(?:[0-9]+[smhd])+\Z")


def parse_duration(text: str) -> timedelta:
    """A shelve's length as people write it: `30m`, `2h`, `1d`, `1h30m` (s, m, h, d); an
    `alert.invalid` error otherwise (`linetrace shelve --for`, the console's `for`)."""
    t = text.strip().lower()
    if not _DURATION.match(t):
        raise AlertError(f"{text!r} is not a duration: write e.g. 30m, 2h, 1h30m or 1d "
                         "(s, m, h, d)", code="alert.invalid")
    seconds = sum(int(n) * _UNITS[u] for n, u in re.findall(r"([0-9]+)([smhd])", t))
    if seconds > 366 * 86400:  # timedelta overflows past ~2.7 million years; nobody means it
        raise AlertError(f"{text!r} is longer than a year: write e.g. 30m, 2h or 1d",
                         code="alert.invalid")
    return timedelta(seconds=seconds)


def shelve_until(duration: timedelta, now: datetime | None = None) -> str:
    """The end of a shelve of `duration` from `now` (RFC 3339, what the person signs), or an
    `alert.invalid` error outside SHELVE_MIN..SHELVE_MAX."""
    if not SHELVE_MIN <= duration <= SHELVE_MAX:
        raise AlertError(f"a shelve lasts {SHELVE_MIN} to {SHELVE_MAX} (ISA-18.2: shelving is "
                         f"time-limited), not {duration}; take a longer-lasting problem out of "
                         "service instead (`linetrace alerts out-of-service ID --reason R`, "
                         "supervisor)", code="alert.invalid")
    return format_time((now or datetime.now(UTC)) + duration)


def _body(action: Action, alert_id: str, user: str, signed: b.SignedStatement,
          details: dict[str, str]) -> b.Body:
    if action == "acknowledge":
        return ae.AlertAcknowledged(alert_id=alert_id, user=user, comment=details.get("comment"),
                                    statement=signed)
    if action == "shelve":
        return ae.AlertShelved(alert_id=alert_id, user=user, until=details["until"],
                               reason=details["reason"], statement=signed)
    if action == "unshelve":
        return ae.AlertUnshelved(alert_id=alert_id, user=user, reason=details.get("reason"),
                                 statement=signed)
    if action == "comment":
        return ae.AlertCommented(alert_id=alert_id, user=user, comment=details["comment"],
                                 statement=signed)
    if action == "out_of_service":
        return ae.AlertOutOfService(alert_id=alert_id, user=user, reason=details["reason"],
                                    statement=signed)
    return ae.AlertReturnedToService(alert_id=alert_id, user=user, reason=details.get("reason"),
                                     statement=signed)


def act(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, alert_id: str,
        action: Action, *, comment: str | None = None, reason: str | None = None,
        until: str | None = None, now: datetime | None = None) -> AlertOutcome:
    """Record the person's `signed` statement of `action` on `alert_id` as its `alert.*`
    system event and apply it to the alert, in one transaction. Refuses (`UserError`) a
    statement that does not verify, a role that may not, a statement that says something else;
    (`AlertError`) an unknown alert (`alert.unknown`), an action its state does not allow
    (`alert.not_allowed`), a shelve outside its limits (`alert.invalid`)."""
    if action not in EVENT_TYPE:
        raise AlertError(f"unknown alert action {action!r}", code="alert.invalid")
    details = statement_details(action, comment=comment, reason=reason, until=until)
    event_type = EVENT_TYPE[action]
    request = read_statement(signed).request
    now = now or datetime.now(UTC)
    with ledger.transaction() as session:
        if recorded_again(session, signed, alert_id, (event_type,)) is not None:
            return AlertOutcome(get_alert(session, alert_id), False, "already recorded")
        # Locked for this transaction (PostgreSQL: two people acting at once are decided one
        # after the other, so the second sees the first's acknowledgement); alert.unknown
        # before anything is checked or recorded.
        if session.scalars(select(Alert).where(Alert.alert_id == alert_id).with_for_update()
                           ).one_or_none() is None:
            raise unknown(alert_id)
        st = verify_user_statement(session, signed, action=STATEMENT_ACTION[action],
                                   target=alert_id, roles=ALERT_ROLES[STATEMENT_ACTION[action]])
        check_details(st, details)
        if action == "shelve":
            why = shelve_problem(details["until"], st.time, format_time(now))
            if why is not None:
                raise AlertError(f"{alert_id}: {why}; sign a new shelve", code="alert.invalid")
        rec = Recorder(session, plant, now)
        event = rec.record(event_type, alert_id, _body(action, alert_id, st.user, signed,
                                                       details), request)
        assert event.id == deterministic_id(event_type, alert_id, request)
        view = apply_action(session, alert_id, action, user=st.user, time=now, cause=event.id,
                            until=parse_time(details["until"]) if action == "shelve" else None,
                            reason=details.get("comment") or details.get("reason"))
        what = f"{st.user} {_DONE[action]} {alert_id} ({view.condition} on {view.subject})"
        if action == "shelve":
            what += f" until {details['until']}"
        return AlertOutcome(view, True, f"{what}: now {view.state}",
                            [e.type for e in rec.events])


def alert_action_seqs(session: Session, serials: Collection[str], lots: Collection[str]
                      ) -> list[int]:
    """events.seq of the people's `alert.*` events on every alert about one of `serials` (its
    `unit`) or `lots`: what an evidence bundle carries, so an auditor sees who acknowledged,
    shelved or took out of service an alert about the unit (the bundle adds the user leaves of
    those who signed them, `evidence.py`)."""
    if not serials and not lots:
        return []
    about = select(Alert.alert_id).where(or_(Alert.unit.in_(sorted(serials)),
                                             Alert.lot.in_(sorted(lots))))
    return sorted(session.scalars(select(EventRow.seq).where(
        EventRow.source == SYSTEM_SOURCE, EventRow.subject.in_(about),
        EventRow.type.in_(sorted(EVENT_TYPE.values())))))
