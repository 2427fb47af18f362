"""People's statements checked against the log alone: what an auditor re-does.

Every hold, release, disposition and user change is a plant-signed system event carrying the
acting person's signed statement. The plant key (and the database) could make such an event;
only the person's key makes the statement. So an auditor does not trust the `users` table:
replaying the log in order, each statement must verify against a key the log enrolled for its
user before it (and did not revoke, nor remove the user, before it), say the action the event
records on its target, and come from a role that may take it at that point of the log: an
admin for user changes (or, while the log holds no admin with a valid key, the first admin's
own self-signed enrolment), anyone but a viewer for holds.

Pure: events in, problems out; no database, so `verify-ledger` and an offline verifier can
both use it.
"""

from __future__ import annotations

import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event
from linetrace.schemas.errors import SchemaError
from linetrace.schemas.statements import Statement, verify_statement

#: System event type -> the action its statements must sign.
ACTION_OF_TYPE: dict[str, str] = {
    "hold.placed": "hold.place", "hold.approved": "hold.release",
    "hold.released": "hold.release", "hold.disposition": "hold.disposition",
    "user.enrolled": "user.add", "user.changed": "user.role", "user.revoked": "user.revoke",
    "user.removed": "user.remove",
}


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


def _carried(body: b.Body) -> list[b.SignedStatement]:
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
    return event.subject  # user changes: the user


def _details(body: b.Body) -> dict[str, str] | None:
    """What a user change's statement must say (None: holds, checked by their own rules)."""
    if isinstance(body, b.UserEnrolled):
        return {"role": body.role, "public_key": body.public_key, "keyid": body.keyid}
    if isinstance(body, b.UserRoleChanged):
        return {"role": body.role}
    if isinstance(body, b.UserKeyRevoked):
        return {"keyid": body.keyid}
    if isinstance(body, b.UserRemoved):
        return {}
    return None


class _Log:
    """The people as the log has enrolled them so far."""

    def __init__(self) -> None:
        self.people: dict[str, _Person] = {}

    def any_admin(self) -> bool:
        return any(p.active and p.role == "admin" and set(p.keys) - p.revoked
                   for p in self.people.values())

    def check(self, event: Event, signed: b.SignedStatement) -> str | None:
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
        elif signed.keyid not in person.keys:
            return f"signed with key {signed.keyid}, not enrolled for {signed.user} before it"
        elif signed.keyid in person.revoked:
            return f"signed with key {signed.keyid} of {signed.user}, revoked earlier in the log"
        else:
            public = person.keys[signed.keyid]
        try:
            st: Statement = verify_statement(signed, signing.load_public_key(public),
                                             action=action, target=_target(event))
        except (SchemaError, ValueError, binascii.Error) as e:
            return str(e.message if isinstance(e, SchemaError) else e)
        expected = _details(body)
        if expected is not None and st.details != expected:
            return f"{st.user} signed {st.details}, the event records {expected}"
        if first:
            return None
        assert person is not None
        if action.startswith("user.") and person.role != "admin":
            return f"{signed.user} signed {action} as {person.role}, not admin"
        if action.startswith("hold.") and person.role == "viewer":
            return f"{signed.user} signed {action} as a viewer (read only)"
        return None

    def apply(self, event: Event) -> None:
        body = event.body
        if isinstance(body, b.UserEnrolled):
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


def audit_statements(events: Iterable[Event]) -> list[StatementProblem]:
    """Every statement in `events` (the log, in order) that does not stand, with why; a user
    change without a statement is one too."""
    log, problems = _Log(), []
    for event in events:
        if event.type not in ACTION_OF_TYPE:
            continue
        carried = _carried(event.body)
        if not carried and event.type.startswith("user."):
            problems.append(StatementProblem(event.id, event.type, event.subject,
                                             "a user change that no admin signed"))
        for signed in carried:
            why = log.check(event, signed)
            if why is not None:
                problems.append(StatementProblem(event.id, event.type, event.subject, why))
        log.apply(event)
    return problems
