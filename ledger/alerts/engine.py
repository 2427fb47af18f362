"""The ISA-18.2 / IEC 62682 alert engine: detectors' findings and operators' actions in, alert
state, history and `line.alerts` messages out, all in the caller's transaction.

State is kept as orthogonal flags on the `alerts` row and `state_of` derives the one state the
CLI shows. The transitions (DOMAIN.md §6):

- a finding that the condition holds raises the alert: normal -> unacknowledged, a new
  occurrence (`occurrences` + 1, `raised` = the finding's event time). While it is active, the
  same finding again changes nothing. If the condition names a `parent` alert that is active,
  the alert is suppressed by design instead (not annunciated; a station down does not also
  raise one alarm per waiting unit); when the parent clears, a child still active is
  annunciated (unacknowledged).
- the condition clears: unacknowledged -> rtn_unacknowledged, acknowledged -> normal. A
  latched condition (`Spec.latched`) stays in alarm until acknowledged.
- acknowledge: unacknowledged -> acknowledged, rtn_unacknowledged -> normal.
- shelve (until a time) / unshelve or expiry, out_of_service / return_to_service: the alert
  shows that state; underneath it keeps following its condition, and shows that state again
  when shelving or out-of-service ends.

Determinism: a finding is applied at most once per alert (its `(cause, active)` against the
last one, then the history's causes), a finding older than the alert's last change is stale,
and message ids derive from (alert id, occurrence, transition, cause), so a replay of the same
events into a fresh ledger gives the same alerts, and into the same ledger nothing new.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Table, func, select
from sqlalchemy.orm import Session

from .. import outbox
from ..sql import insert_ignore
from .conditions import Condition, alert_id, spec_of
from .messages import alert_message
from .models import Alert, AlertHistory
from .views import AlertError, AlertView, unknown, utc, utc_or_none

Action = Literal["acknowledge", "shelve", "unshelve", "comment", "out_of_service",
                 "return_to_service"]
ACTIONS: tuple[Action, ...] = ("acknowledge", "shelve", "unshelve", "comment",
                               "out_of_service", "return_to_service")

#: Transitions that start an occurrence (a new activation), annunciated or not.
ACTIVATIONS = ("raised", "suppressed")
CHATTER_WINDOW = timedelta(minutes=1)
CHATTER_COUNT = 3  # activations within CHATTER_WINDOW of event time: chattering


def state_of(a: Alert) -> str:
    """The one ISA-18.2 state the alert's flags give (out of service and shelved win)."""
    if a.out_of_service:
        return "out_of_service"
    if a.shelved_until is not None:
        return "shelved"
    if a.active and a.suppressed:
        return "suppressed"
    if a.active:
        return "acknowledged" if a.acked else "unacknowledged"
    return "normal" if a.acked else "rtn_unacknowledged"


class _Writer:
    """Collects the history rows and messages of the transitions of one call. `prior`: the
    stored history a batch of findings needs (the causes it names, the last minute's
    activations) of the alerts it touches, read once; None: ask the database each time."""

    def __init__(self, session: Session,
                 prior: dict[str, list[tuple[str, str, datetime]]] | None = None,
                 alerts: dict[str, Alert] | None = None) -> None:
        self.session = session
        self.prior = prior
        self.alerts = alerts  # the batch's alerts and their children, when read up front
        self.history: list[dict[str, Any]] = []
        self.messages: list[outbox.Message] = []
        #: this call's transitions by alert, and (alert, cause, transition) made: a batch of
        #: thousands of findings looks its own history up in O(1), not by scanning it
        self.by_alert: dict[str, list[dict[str, Any]]] = {}
        self.made: set[tuple[str, str, str]] = set()

    def transition(self, a: Alert, transition: str, time: datetime, cause: str,
                   by: str | None = None, note: str | None = None) -> None:
        a.state = state_of(a)
        clipped = _clip(cause, 128)
        row: dict[str, Any] = {
            "alert_id": a.alert_id, "occurrence": a.occurrences, "transition": transition,
            "state": a.state, "condition": a.condition, "priority": a.priority, "time": time,
            "by": _clip_or_none(by, 128), "cause": clipped,
            "note": _clip_or_none(note, 4096)}
        self.history.append(row)
        self.by_alert.setdefault(a.alert_id, []).append(row)
        self.made.add((a.alert_id, clipped, transition))
        self.messages.append(alert_message(
            AlertView.of(a), transition=transition, occurrence=a.occurrences, time=time,
            cause=cause, by=by, note=note))

    def write(self) -> int:
        self.session.flush()
        insert_ignore(self.session, AlertHistory.__table__,  # type: ignore[arg-type]
                      self.history)
        outbox.enqueue(self.session, self.messages)
        return len(self.messages)


def _seen(session: Session, w: _Writer, aid: str, cause: str,
          transitions: Sequence[str]) -> bool:
    """Did this cause already make one of these transitions of the alert (a replay)?"""
    clipped = _clip(cause, 128)
    if any((aid, clipped, t) in w.made for t in transitions):
        return True
    if w.prior is not None:
        return any(c == cause and t in transitions for t, c, _ in w.prior.get(aid, ()))
    return session.scalar(select(func.count()).select_from(AlertHistory).where(
        AlertHistory.alert_id == aid, AlertHistory.cause == cause,
        AlertHistory.transition.in_(transitions))) != 0


def _chattering(session: Session, w: _Writer, aid: str, time: datetime) -> bool:
    """This activation and the ones before it within a minute of event time: >= 3?"""
    start = time - CHATTER_WINDOW
    if w.prior is not None:
        earlier = sum(1 for t, _, at in w.prior.get(aid, ())
                      if t in ACTIVATIONS and start < at <= time)
    else:
        earlier = session.scalar(select(func.count()).select_from(AlertHistory).where(
            AlertHistory.alert_id == aid, AlertHistory.transition.in_(ACTIVATIONS),
            AlertHistory.time > start, AlertHistory.time <= time)) or 0
    earlier += sum(1 for h in w.by_alert.get(aid, ())
                   if h["transition"] in ACTIVATIONS and start < h["time"] <= time)
    return earlier + 1 >= CHATTER_COUNT


def _prior(session: Session, ids: Sequence[str], causes: Sequence[str],
           since: datetime) -> dict[str, list[tuple[str, str, datetime]]]:
    """The stored history `_seen` and `_chattering` need for a batch, in one read: the
    transitions of these alerts by these causes, and their activations after `since`."""
    out: dict[str, list[tuple[str, str, datetime]]] = {}
    if not ids:
        return out
    rows = session.execute(select(AlertHistory.alert_id, AlertHistory.transition,
                                  AlertHistory.cause, AlertHistory.time).where(
        AlertHistory.alert_id.in_(ids),
        AlertHistory.cause.in_(sorted(set(causes)))
        | (AlertHistory.transition.in_(ACTIVATIONS) & (AlertHistory.time > since))))
    for aid, transition, cause, time in rows:
        out.setdefault(aid, []).append((transition, cause, utc(time)))
    return out


def _clip(text: str, n: int) -> str:
    """Text cut to its column's length (a detector's long message must not fail the batch)."""
    return text if len(text) <= n else text[: n - 1] + "\u2026"


def _clip_or_none(text: str | None, n: int) -> str | None:
    return None if text is None else _clip(text, n)


def _json(details: Mapping[str, Any]) -> dict[str, Any]:
    """A detector's details as plain JSON (times and other objects as strings)."""
    out: dict[str, Any] = json.loads(json.dumps(dict(details), default=str))
    return out


def _new_alert(c: Condition, aid: str) -> Alert:
    spec = spec_of(c.condition)
    return Alert(alert_id=aid, condition=c.condition, subject=_clip(c.subject, 256),
                 priority=c.priority or spec.priority, state="normal", active=False,
                 process_active=False, acked=True, suppressed=False, out_of_service=False,
                 latched=spec.latched, chattering=False, shelved_until=None, occurrences=0,
                 raised=c.time, cleared=None, updated=c.time,
                 message=_clip(c.message or spec.title, 1024),
                 action=_clip(c.action or spec.action, 1024), details=_json(c.details),
                 unit=_clip_or_none(c.unit, 128), station=_clip_or_none(c.station, 64),
                 lot=_clip_or_none(c.lot, 128),
                 parent=c.parent, cause="", cause_active=False, last_time=c.time)


def _activate(session: Session, w: _Writer, a: Alert, c: Condition) -> None:
    if a.active:  # already in alarm: nothing changes (a latched one sees its condition again)
        a.process_active = True
        return
    if _seen(session, w, a.alert_id, c.cause, ACTIVATIONS):
        return
    spec = spec_of(c.condition)
    chattering = _chattering(session, w, a.alert_id, c.time)
    a.occurrences += 1
    a.active = a.process_active = True
    a.raised = a.updated = a.last_time = c.time
    a.cleared = None
    a.priority = c.priority or spec.priority
    a.message = _clip(c.message or spec.title, 1024)
    a.action = _clip(c.action or spec.action, 1024)
    a.details = _json(c.details)
    a.unit, a.station = _clip_or_none(c.unit, 128), _clip_or_none(c.station, 64)
    a.lot, a.parent = _clip_or_none(c.lot, 128), c.parent
    a.latched = spec.latched
    a.chattering = chattering
    parent = None
    if c.parent:
        parent = (w.alerts.get(c.parent) if w.alerts is not None
                  else session.get(Alert, c.parent))
    a.suppressed = parent is not None and parent.active
    a.acked = a.suppressed  # a suppressed alarm is not annunciated: nothing to acknowledge
    w.transition(a, "suppressed" if a.suppressed else "raised", c.time, c.cause)


def _deactivated(session: Session, w: _Writer, a: Alert, time: datetime, cause: str) -> None:
    """`a` left alarm: annunciate the alerts it suppressed that are still active."""
    if w.alerts is not None:  # the batch read its alerts' children up front
        children = [x for x in w.alerts.values() if x.parent == a.alert_id
                    and x.suppressed and x.active]
    else:
        children = list(session.scalars(select(Alert).where(
            Alert.parent == a.alert_id, Alert.suppressed.is_(True), Alert.active.is_(True))))
    for child in sorted(children, key=lambda x: x.alert_id):
        child.suppressed = False
        child.acked = False
        child.updated = time
        w.transition(child, "annunciated", time, cause)


def _clear(session: Session, w: _Writer, a: Alert, c: Condition) -> None:
    if not a.active and not a.process_active:
        return
    if _seen(session, w, a.alert_id, c.cause, ("cleared",)):
        return
    a.process_active = False
    a.cleared = c.time
    if a.latched and not a.acked:  # stays in alarm until an operator acknowledges it
        return
    if not a.active:
        return
    a.active = False
    a.suppressed = False
    a.updated = a.last_time = c.time
    w.transition(a, "cleared", c.time, c.cause)
    _deactivated(session, w, a, c.time, c.cause)


def apply_conditions(session: Session, conditions: Sequence[Condition]) -> int:
    """Apply detectors' findings in order (see the module docstring); returns how many
    `line.alerts` messages were enqueued."""
    if not conditions:
        return 0
    ids = [alert_id(c.condition, c.subject) for c in conditions]
    wanted = sorted(set(ids) | {c.parent for c in conditions if c.parent})
    with session.no_autoflush:  # one read of the alerts and their children (locked: an
        known = {a.alert_id: a for a in session.scalars(  # operator may act meanwhile)
            select(Alert).where(Alert.alert_id.in_(wanted) | Alert.parent.in_(wanted))
            .order_by(Alert.alert_id).with_for_update())}
        since = min(utc(c.time) for c in conditions) - CHATTER_WINDOW
        prior = _prior(session, sorted(set(ids) & known.keys()),
                       [_clip(c.cause, 128) for c in conditions], since)
    w = _Writer(session, prior, known)
    for aid, c in zip(ids, conditions, strict=True):
        spec_of(c.condition)  # an unknown condition is a detector's bug: say so
        if len(c.cause) > 128:
            c = replace(c, cause=_clip(c.cause, 128))
        if c.time.tzinfo is not UTC:  # stored and compared as UTC (SQLite keeps no offset)
            c = replace(c, time=utc(c.time))
        a = known.get(aid)
        if a is None:
            if not c.active:
                continue  # a clear of an alert never raised: nothing to say
            a = known[aid] = _new_alert(c, aid)
            session.add(a)
        elif (a.cause, a.cause_active) == (c.cause, c.active) or c.time < utc(a.last_time):
            continue  # the same finding again, or one older than the alert's last change
        before = len(w.history)
        if c.active:
            _activate(session, w, a, c)
        else:
            _clear(session, w, a, c)
        if len(w.history) > before:  # remembered only when it changed something
            a.cause, a.cause_active = c.cause, c.active
    return w.write()


def expiry_cause(until: datetime) -> str:
    """The cause of a shelve's expiry: the same expiry always gives the same message id."""
    return f"shelve-expired:{utc(until).isoformat()}"


def expire_shelf(w: _Writer, a: Alert, now: datetime) -> bool:
    """Unshelve `a` if its shelve ran out by `now`."""
    until = utc_or_none(a.shelved_until)
    if until is None or now < until:
        return False
    a.shelved_until = None
    a.updated = until
    w.transition(a, "shelve_expired", until, expiry_cause(until))
    return True


def expire_shelves(session: Session, now: datetime) -> int:
    """Every shelve that ran out by `now` ends (the alert shows its underlying state again);
    returns the messages enqueued."""
    w = _Writer(session)
    due = session.scalars(select(Alert).where(Alert.shelved_until.is_not(None),
                                              Alert.shelved_until <= now)).all()
    for a in sorted(due, key=lambda x: x.alert_id):
        expire_shelf(w, a, now)
    return w.write()


@dataclass(frozen=True)
class Expiries:
    """Shelves that ran out, as writes for a caller that only reads now and writes later (the
    worker's tick): guarded updates of `alerts` (only a row still shelved until the same end
    changes), history rows and messages (both stored once, whatever the redo)."""

    updates: list[tuple[Table, dict[str, Any], dict[str, Any]]]
    rows: list[tuple[Table, dict[str, Any]]]
    messages: list[outbox.Message]


def shelf_expiries(session: Session, now: datetime, limit: int = 100) -> Expiries:
    """What `expire_shelves` would write, without writing it (the session is read only)."""
    out = Expiries([], [], [])
    due = session.scalars(select(Alert).where(Alert.shelved_until.is_not(None),
                                              Alert.shelved_until <= now)
                          .order_by(Alert.alert_id).limit(limit)).all()
    table: Table = Alert.__table__  # type: ignore[assignment]
    history: Table = AlertHistory.__table__  # type: ignore[assignment]
    for a in due:
        stored = a.shelved_until
        w = _Writer(session)
        if not expire_shelf(w, a, now):
            continue
        out.updates.append((table, {"alert_id": a.alert_id, "shelved_until": stored},
                            {"shelved_until": None, "state": a.state, "updated": a.updated}))
        out.rows.extend((history, h) for h in w.history)
        out.messages.extend(w.messages)
    session.expunge_all()  # nothing read here may be flushed by this session
    return out


_TRANSITION: dict[Action, str] = {
    "acknowledge": "acknowledged", "shelve": "shelved", "unshelve": "unshelved",
    "comment": "commented", "out_of_service": "out_of_service",
    "return_to_service": "returned_to_service"}
#: Every transition the history and `line.alerts` name (schemas/alert_message.py lists them).
TRANSITIONS: tuple[str, ...] = (*ACTIVATIONS, "annunciated", "cleared", "shelve_expired",
                                *_TRANSITION.values())


def _not_allowed(a: Alert, why: str) -> AlertError:
    return AlertError(f"alert {a.alert_id} ({a.condition} on {a.subject}) is {a.state}: {why}",
                      code="alert.not_allowed")


def apply_action(session: Session, alert_id: str, action: Action, *, user: str,
                 time: datetime, cause: str, until: datetime | None = None,
                 reason: str | None = None) -> AlertView:
    """An operator's action on one alert, by `user` at `time`, caused by event `cause` (the
    signed system event that records it). The same cause again changes nothing. Raises
    `AlertError` (`alert.unknown`, `alert.not_allowed`, `alert.invalid`)."""
    if action not in _TRANSITION:
        raise AlertError(f"unknown alert action {action!r}: use one of {', '.join(ACTIONS)}",
                         code="alert.invalid")
    time, until = utc(time), utc_or_none(until)
    a = session.get(Alert, alert_id, with_for_update=True)  # the worker may apply findings
    if a is None:
        raise unknown(alert_id)
    transition = _TRANSITION[action]
    if _seen(session, _Writer(session), alert_id, cause, (transition,)):
        return AlertView.of(a)  # this action was already applied (a redo, a replay)
    w = _Writer(session)
    expire_shelf(w, a, time)
    was_active = a.active
    if action == "acknowledge":
        if a.acked:
            raise _not_allowed(a, "there is nothing to acknowledge")
        a.acked = True
        if a.latched and not a.process_active:
            a.active = False  # a latched alarm is reset by its acknowledgement
            a.suppressed = False
    elif action == "shelve":
        if a.out_of_service:
            raise _not_allowed(a, "return it to service before shelving it")
        if until is None or until <= time:
            raise AlertError(f"a shelve of {alert_id} needs an end after {time.isoformat()}",
                             code="alert.invalid")
        a.shelved_until = until
    elif action == "unshelve":
        if a.shelved_until is None:
            raise _not_allowed(a, "it is not shelved")
        a.shelved_until = None
    elif action == "comment":
        if not reason:
            raise AlertError("a comment needs its text", code="alert.invalid")
    elif action == "out_of_service":
        if a.out_of_service:
            raise _not_allowed(a, "it is already out of service")
        a.out_of_service = True
        a.shelved_until = None
    else:  # return_to_service
        if not a.out_of_service:
            raise _not_allowed(a, "it is not out of service")
        a.out_of_service = False
    if action != "comment":
        a.updated = time
    w.transition(a, transition, time, cause, by=user, note=reason)
    if was_active and not a.active:  # a latched alarm reset: its children are annunciated
        _deactivated(session, w, a, time, cause)
    w.write()
    return AlertView.of(a)
