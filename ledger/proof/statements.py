"""People's statements checked against the log alone: what an auditor re-does.

Every hold, release, disposition, user change and operator action on an alert (acknowledge,
shelve, unshelve, comment, out of service, return to service) is a plant-signed system event
carrying the acting person's signed statement. The plant key (and the database) could make
such an event; only the person's key makes the statement. So an auditor does not trust the `users` table:
replaying the log in order, each statement must verify against a key the log enrolled for its
user before it (and did not revoke, nor remove the user, before it), say the action the event
records on its target, and come from a role that may take it at that point of the log: an
admin for user changes (or, while the log holds no admin with a valid key, the first admin's
own self-signed enrolment); for holds, the roles `ledger/hold_actions.py` and
`dispositions.py` require when recording (`PLACE_ROLES`, `RELEASE_ROLES`, `DISPOSITION_ROLES`);
for alerts, those of `ledger/alerts/actions.py` (`ALERT_ROLES`; a test keeps the tables equal),
and a shelve lasts at most `SHELVE_MAX` from its signing.

The event around the statements must say what they say: a hold's scope and reason, a
release's reason, a disposition's decision, reason and hold, an alert action's comment, reason
or shelve expiry (`_details`); `placed_by`, `released_by`, `decided_by` and an alert event's
`user` name the signers; a hold placed by a quality user, or on a lot or an MPN, is a quality
hold; and a quality hold is released only with the statements of two different quality users
(the first one's approval carried along). So someone holding the plant key cannot turn one
person's approval into a release, nor record another decision than the one signed.

A statement may also be a *console attestation*: it names the user signed in to the web
console and is signed by the console's own key, which a plant-signed `console.enrolled` event
enrolled earlier in the log (and no `console.revoked` revoked before it). It stands on the same
terms for that user (enrolled, active, a role that allows the action at that point of the
log), for hold and alert actions only (`CONSOLE_ACTIONS`), never for user administration. It
proves less than a person's own signature: the console vouches that the signed-in user acted;
whoever held the console's key could have said so for anyone, and since the plant key enrols
console keys, so could whoever held the plant key. `StatementAudit.attested` counts
them and `consoles` names the console keys, so an auditor sees how much rests on the console.

Pure: events in, problems out; no database, so `verify-ledger` (over the whole log) and
`linetrace verify` (over an evidence bundle's hold and user leaves, `check_statements`) both
use it.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import timedelta

from linetrace.schemas import alert_events as ae
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, parse_time
from linetrace.schemas.errors import SchemaError
from linetrace.schemas.statements import Statement, verify_statement

#: System event type -> the action its statements must sign.
ACTION_OF_TYPE: dict[str, str] = {
    "hold.placed": "hold.place", "hold.approved": "hold.release",
    "hold.released": "hold.release", "hold.disposition": "hold.disposition",
    "user.enrolled": "user.add", "user.changed": "user.role", "user.revoked": "user.revoke",
    "user.removed": "user.remove",
    "alert.acknowledged": "alert.acknowledge", "alert.shelved": "alert.shelve",
    "alert.unshelved": "alert.unshelve", "alert.commented": "alert.comment",
    "alert.outofservice": "alert.out_of_service", "alert.inservice": "alert.return_to_service",
}


#: The plant-signed events that enrol and revoke console keys: replayed in log order so a
#: console attestation is checked against the keys enrolled before it.
CONSOLE_TYPES: frozenset[str] = frozenset({"console.enrolled", "console.revoked"})
#: Every event type `check_statements` reads (a bundle carries these leaves for it).
STATEMENT_TYPES: frozenset[str] = frozenset(ACTION_OF_TYPE) | CONSOLE_TYPES
#: The actions a console may attest for its signed-in user, as `ledger/console_key.py`
#: (CONSOLE_ACTIONS) enforces when recording: holds, dispositions and alerts, never user changes.
CONSOLE_ACTIONS: frozenset[str] = frozenset({
    "hold.place", "hold.release", "hold.disposition",
    "alert.acknowledge", "alert.shelve", "alert.unshelve", "alert.comment",
    "alert.out_of_service", "alert.return_to_service"})

#: Roles that may sign each hold action, as `ledger/hold_actions.py` (PLACE_ROLES,
#: RELEASE_ROLES) and `ledger/dispositions.py` (DISPOSITION_ROLES) enforce when recording.
PLACE_ROLES: dict[str, tuple[str, ...]] = {
    "unit": ("supervisor", "quality", "admin"), "work_order": ("supervisor", "quality", "admin"),
    "station": ("supervisor", "quality", "admin"), "lot": ("quality", "admin"),
    "mpn": ("quality", "admin")}
RELEASE_ROLES: dict[str, tuple[str, ...]] = {
    "operational": ("supervisor", "quality", "admin"), "quality": ("quality",)}
DISPOSITION_ROLES: tuple[str, ...] = ("quality",)
#: Different quality users whose statements release a quality hold.
QUALITY_RELEASE_SIGNERS = 2
#: `placed_by` of the holds linetrace places itself (route holds): they carry no statement.
SYSTEM_PLACER = "linetrace"
#: Roles that may sign each action on an alert, as `ledger/alerts/actions.py` (ALERT_ROLES)
#: enforces when recording (docs/alerts.md "Operator actions").
ALERT_ROLES: dict[str, tuple[str, ...]] = {
    "alert.acknowledge": ("supervisor", "quality", "admin"),
    "alert.shelve": ("supervisor", "quality", "admin"),
    "alert.unshelve": ("supervisor", "quality", "admin"),
    "alert.comment": ("supervisor", "quality", "admin"),
    "alert.out_of_service": ("supervisor", "admin"),
    "alert.return_to_service": ("supervisor", "admin"),
}
#: The longest shelve a statement may sign (`until` - the statement's time), as
#: `ledger/alerts/actions.py` (SHELVE_MAX) enforces.
SHELVE_MAX = timedelta(hours=24)
_ALERT_BODIES = (ae.AlertAcknowledged, ae.AlertShelved, ae.AlertUnshelved, ae.AlertCommented,
                 ae.AlertOutOfService, ae.AlertReturnedToService)


@dataclass
class _Person:
    role: str
    active: bool = True
    keys: dict[str, str] = field(default_factory=dict)  # keyid -> public key, base64
    revoked: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class StatementProblem:
    event_id: str
    event_type: str
    subject: str
    detail: str

    def __str__(self) -> str:
        return f"{self.event_type} {self.subject} event_id={self.event_id}: {self.detail}"


def carried_statements(body: b.Body) -> list[b.SignedStatement]:
    """The people's statements a hold or user event carries (a release: every signer's)."""
    if isinstance(body, b.HoldReleased):
        return list(body.statements)
    st: object = getattr(body, "statement", None)
    return [st] if isinstance(st, b.SignedStatement) else []


def _target(event: Event) -> str:
    body = event.body
    if isinstance(body, b.HoldPlaced):
        return body.target
    if isinstance(body, b.HoldDisposition):
        return body.unit
    if isinstance(body, (b.HoldApproved, b.HoldReleased)):
        return body.hold_id
    if isinstance(body, _ALERT_BODIES):
        return body.alert_id
    return event.subject  # user changes: the user


def _reason(reason: str | None) -> dict[str, str]:
    return {"reason": reason} if reason else {}


def _details(body: b.Body, last: bool = True) -> dict[str, str] | None:
    """What a statement must say for the event that carries it (None: not checked here: the
    approvals a release carries along besides its own, `last`, were checked as the
    `hold.approved` events that recorded them)."""
    if isinstance(body, b.HoldPlaced):
        return {"scope": body.scope, "reason": body.reason}
    if isinstance(body, b.HoldApproved):
        return _reason(body.reason)
    if isinstance(body, b.HoldReleased):
        return _reason(body.reason) if last else None
    if isinstance(body, b.HoldDisposition):
        return {"decision": body.decision, "reason": body.reason, "hold_id": body.hold_id}
    if isinstance(body, b.UserEnrolled):
        return {"role": body.role, "public_key": body.public_key, "keyid": body.keyid}
    if isinstance(body, b.UserRoleChanged):
        return {"role": body.role}
    if isinstance(body, b.UserKeyRevoked):
        return {"keyid": body.keyid}
    if isinstance(body, b.UserRemoved):
        return {}
    return _alert_details(body)


def _alert_details(body: b.Body) -> dict[str, str] | None:
    """What a person's statement on an alert says: what the `alert.*` event records."""
    if isinstance(body, ae.AlertAcknowledged):
        return {"comment": body.comment} if body.comment else {}
    if isinstance(body, ae.AlertShelved):
        return {"until": body.until, "reason": body.reason}
    if isinstance(body, ae.AlertCommented):
        return {"comment": body.comment}
    if isinstance(body, ae.AlertOutOfService):
        return {"reason": body.reason}
    if isinstance(body, (ae.AlertUnshelved, ae.AlertReturnedToService)):
        return _reason(body.reason)
    return None


def shelve_problem(until: str, signed_at: str, recorded_at: str) -> str | None:
    """Why a shelve until `until`, signed at `signed_at` and recorded at `recorded_at` (RFC
    3339), may not stand: it must end after it was signed and recorded, and last at most
    SHELVE_MAX from its signing (ISA-18.2: a shelve is time-limited)."""
    try:
        end, signed, recorded = parse_time(until), parse_time(signed_at), parse_time(recorded_at)
    except ValueError:
        return f"shelved until {until!r}, signed at {signed_at!r}: not RFC 3339 times"
    if end <= signed or end <= recorded:
        return f"shelved until {until}, which had passed when it was signed or recorded"
    if end - signed > SHELVE_MAX:
        return (f"shelved until {until}, {end - signed} after it was signed at {signed_at}; "
                f"a shelve lasts at most {SHELVE_MAX}")
    return None


class _Log:
    """The people as the log has enrolled them so far, and the holds it has placed."""

    def __init__(self) -> None:
        self.people: dict[str, _Person] = {}
        self.holds: dict[str, b.HoldPlaced] = {}
        self.first_admins: list[tuple[str, str]] = []  # (user, keyid), self-signed
        self.consoles: dict[str, tuple[str, str]] = {}  # keyid -> (console name, public key)
        self.console_revoked: set[str] = set()
        self.attested = 0  # console attestations that stood

    def any_admin(self) -> bool:
        return any(p.active and p.role == "admin" and set(p.keys) - p.revoked
                   for p in self.people.values())

    def role(self, user: str) -> str | None:
        person = self.people.get(user)
        return person.role if person is not None and person.active else None

    def hold_roles(self, body: b.Body) -> tuple[str, ...] | str:
        """The roles that may sign this hold action, or why none may."""
        if isinstance(body, b.HoldPlaced):
            return PLACE_ROLES.get(body.scope, ())
        if isinstance(body, b.HoldDisposition):
            return DISPOSITION_ROLES
        assert isinstance(body, (b.HoldApproved, b.HoldReleased))
        hold = self.holds.get(body.hold_id)
        if hold is None:
            return f"releases hold {body.hold_id}, which no hold.placed before it places"
        return RELEASE_ROLES.get(hold.category, ())

    def check(self, event: Event, signed: b.SignedStatement, last: bool = True) -> str | None:
        """Why this statement may not stand at this point of the log (None: it may)."""
        action, body = ACTION_OF_TYPE[event.type], event.body
        person = self.people.get(signed.user)
        first = (isinstance(body, b.UserEnrolled) and not self.any_admin()
                 and body.role == "admin" and signed.user == body.user
                 and signed.keyid == body.keyid)
        if first:
            assert isinstance(body, b.UserEnrolled)
            public = body.public_key
        elif person is None:
            return f"signed by {signed.user}, whom the log never enrolled before it"
        elif not person.active:
            return f"signed by {signed.user}, removed earlier in the log"
        elif signed.keyid in person.keys:
            if signed.keyid in person.revoked:
                return (f"signed with key {signed.keyid} of {signed.user}, revoked earlier in "
                        "the log")
            public = person.keys[signed.keyid]
        elif signed.keyid in self.consoles:
            name, public = self.consoles[signed.keyid]
            if signed.keyid in self.console_revoked:
                return (f"attested for {signed.user} by console {name}'s key {signed.keyid}, "
                        "revoked earlier in the log")
            if action not in CONSOLE_ACTIONS:
                return (f"{action} attested for {signed.user} by console {name}'s key "
                        f"{signed.keyid}: user changes need the admin's own key")
        else:
            return (f"signed with key {signed.keyid}, enrolled neither for {signed.user} nor "
                    "for a console before it")
        try:
            st: Statement = verify_statement(signed, signing.load_public_key(public),
                                             action=action, target=_target(event))
        except (SchemaError, ValueError, binascii.Error) as e:
            return str(e.message if isinstance(e, SchemaError) else e)
        expected = _details(body, last)
        if expected is not None and st.details != expected:
            return f"{st.user} signed {st.details}, the event records {expected}"
        if first:
            assert isinstance(body, b.UserEnrolled)
            self.first_admins.append((body.user, body.keyid))
            return None
        assert person is not None
        if action.startswith("alert."):
            return _alert_check(event, st, person.role)
        if action.startswith("user.") and person.role != "admin":
            return f"{signed.user} signed {action} as {person.role}, not admin"
        if action.startswith("hold.") and person.role == "viewer":
            return f"{signed.user} signed {action} as a viewer (read only)"
        if action.startswith("hold."):
            roles = self.hold_roles(body)
            if isinstance(roles, str):
                return roles
            if person.role not in roles:
                return (f"{signed.user} signed {action} as {person.role}; it needs the "
                        f"{' or '.join(roles)} role")
        return None

    def rules(self, event: Event, stood: bool) -> list[str]:
        """What is wrong with a hold event around its statements (`stood`: they all stood):
        who it names, its category, the two quality users of a quality release."""
        body, out = event.body, []
        if isinstance(body, b.HoldPlaced):
            if body.statement is None:
                if body.placed_by != SYSTEM_PLACER:
                    out.append(f"placed by {body.placed_by} without a statement of theirs")
            else:
                role = self.role(body.statement.user)
                if body.statement.user != body.placed_by:
                    out.append(f"placed_by says {body.placed_by}, the statement is "
                               f"{body.statement.user}'s")
                category = ("quality" if body.scope in ("lot", "mpn") or role == "quality"
                            else "operational")
                if stood and body.category != category:
                    out.append(f"a {body.scope} hold placed by {body.statement.user} ({role}) "
                               f"is {category}; the event records {body.category}")
        elif isinstance(body, b.HoldReleased):
            users = [st.user for st in body.statements]
            hold = self.holds.get(body.hold_id)
            if not users:
                out.append("released without anyone's statement")
            elif body.released_by != users:
                out.append(f"released_by says {body.released_by}, the statements are {users}'s")
            if (hold is not None and hold.category == "quality"
                    and len(set(users)) < QUALITY_RELEASE_SIGNERS):
                out.append(f"hold {body.hold_id} is a quality hold: releasing it takes the "
                           f"statements of {QUALITY_RELEASE_SIGNERS} different quality users, "
                           f"this release carries {len(set(users))} ({', '.join(users)})")
        elif isinstance(body, b.HoldApproved):
            hold = self.holds.get(body.hold_id)
            if hold is not None and hold.category != "quality":
                out.append(f"hold {body.hold_id} is {hold.category}: one signature releases "
                           "it, approvals are recorded only for quality holds")
        elif isinstance(body, b.HoldDisposition) and body.decided_by != body.statement.user:
            out.append(f"decided_by says {body.decided_by}, the statement is "
                       f"{body.statement.user}'s")
        elif isinstance(body, b.UserEnrolled) and body.keyid in self.consoles:
            out.append(f"{body.user} is enrolled with the console's key {body.keyid}: the "
                       "console's key attests people's actions and is nobody's own")
        elif isinstance(body, _ALERT_BODIES):
            if body.user != body.statement.user:
                out.append(f"user says {body.user}, the statement is {body.statement.user}'s")
            if event.subject != body.alert_id:
                out.append(f"about alert {body.alert_id}, keyed as {event.subject}")
        return out

    def apply(self, event: Event) -> None:
        body = event.body
        if isinstance(body, b.ConsoleEnrolled):
            self.consoles.setdefault(body.keyid, (body.name, body.public_key))
        elif isinstance(body, b.ConsoleRevoked):
            self.console_revoked.add(body.keyid)
        elif isinstance(body, b.HoldPlaced):
            self.holds.setdefault(body.hold_id, body)
        elif isinstance(body, b.UserEnrolled):
            person = self.people.setdefault(body.user, _Person(body.role))
            person.role, person.active = body.role, True
            person.keys.setdefault(body.keyid, body.public_key)
        elif isinstance(body, b.UserRoleChanged) and body.user in self.people:
            self.people[body.user].role = body.role
        elif isinstance(body, b.UserKeyRevoked) and body.user in self.people:
            self.people[body.user].revoked.add(body.keyid)
        elif isinstance(body, b.UserRemoved) and body.user in self.people:
            person = self.people[body.user]
            person.active = False
            person.revoked.update(person.keys)


def _alert_check(event: Event, st: Statement, role: str) -> str | None:
    """An action on an alert: the signer's role may take it, and a shelve is time-limited."""
    roles = ALERT_ROLES.get(st.action, ())
    if role not in roles:
        return (f"{st.user} signed {st.action} as {role}; it needs the {' or '.join(roles)} "
                "role")
    body = event.body
    if isinstance(body, ae.AlertShelved):
        return shelve_problem(body.until, st.time, event.envelope.time)
    return None


@dataclass(frozen=True)
class StatementAudit:
    """What `check_statements` found: the problems, how many statements and events it
    checked, who signed, and the self-signed first admins every other enrolment rests on (an
    auditor confirms their key ids with the plant, docs/security.md)."""

    problems: list[StatementProblem]
    events: int
    statements: int
    signers: frozenset[str]
    first_admins: tuple[tuple[str, str], ...]
    #: how many of the statements that stood were console attestations (not own keys)
    attested: int = 0
    #: the console keys the log enrolled: (console name, key id)
    consoles: tuple[tuple[str, str], ...] = ()


def check_statements(events: Iterable[Event]) -> StatementAudit:
    """Every statement in `events` (in log order: the whole log, or the hold and user events
    of an evidence bundle, each person's user events complete) checked; see the module."""
    log, problems = _Log(), []
    count = statements = 0
    signers: set[str] = set()
    for event in events:
        if event.type in CONSOLE_TYPES:
            log.apply(event)
            continue
        if event.type not in ACTION_OF_TYPE:
            continue
        count += 1
        carried = carried_statements(event.body)
        if not carried and event.type.startswith("user."):
            problems.append(StatementProblem(event.id, event.type, event.subject,
                                             "a user change that no admin signed"))
        stood = True
        for i, signed in enumerate(carried):
            statements += 1
            signers.add(signed.user)
            why = log.check(event, signed, last=i == len(carried) - 1)
            if why is not None:
                stood = False
                problems.append(StatementProblem(event.id, event.type, event.subject, why))
            elif signed.keyid in log.consoles:
                log.attested += 1
        problems.extend(StatementProblem(event.id, event.type, event.subject, why)
                        for why in log.rules(event, stood))
        log.apply(event)
    return StatementAudit(problems, count, statements, frozenset(signers),
                          tuple(log.first_admins), log.attested,
                          tuple((name, keyid) for keyid, (name, _) in log.consoles.items()))


def audit_statements(events: Iterable[Event]) -> list[StatementProblem]:
    """Every statement in `events` (the log, in order) that does not stand, and every hold
    event that does not say what its statements say, with why; a user change without a
    statement is one too."""
    return check_statements(events).problems
