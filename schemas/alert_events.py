"""What people do with alerts, as plant-signed system events on line.alerts (key = alert id).

ISA-18.2 / IEC 62682 gives an operator a few actions on an alarm: acknowledge it, shelve it
for a while (with an expiry), unshelve it, comment on it, and, under a supervisor's authority,
take it out of service and return it. In linetrace each is a person's decision: the event
carries the acting user's own signed statement (`SignedStatement`, `schemas.statements`) with
the alert id as its target, so an auditor checks who acknowledged or shelved what against that
person's enrolled key, exactly as for holds (`ledger.proof.statements`). `user` names the
signer; the other fields say what the statement says (a shelve's `until` and `reason`, a
comment's text), so the event records nothing the person did not sign.

The bodies build on `bodies.Body` and `bodies.SignedStatement`; importing this module
registers them in `bodies.BODY_OF_TYPE` (bodies.py imports it at its end, so either import
order leaves the registry complete; `bodies.SYSTEM_TYPES` names the types). Event types match
`[a-z]+.[a-z]+` (the envelope's rule): out of service is `alert.outofservice`, the return to
service `alert.inservice`.
"""

from __future__ import annotations

from typing import Annotated

from msgspec import Meta

from .bodies import BODY_OF_TYPE, TEXT_PATTERN, Body, SignedStatement, Text, UserId

#: An alert's id: `AL-` + 12 hex digits of SHA-256(condition NUL subject)
#: (`linetrace.ledger.alerts.conditions.alert_id`).
AlertId = Annotated[str, Meta(pattern=r"^AL-[0-9a-f]{12}\Z")]
#: A reason or comment a person gives: required, so never empty, and free text otherwise.
Reason = Annotated[str, Meta(min_length=1, max_length=4096, pattern=TEXT_PATTERN)]
#: RFC 3339 UTC, as every linetrace time (`envelope.RFC3339_UTC`, not imported: envelope
#: imports bodies).
Rfc3339 = Annotated[
    str, Meta(pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z\Z")
]


class AlertAcknowledged(Body, kw_only=True):
    """System event on line.alerts (subject = `alert_id`): `user` acknowledged the alert
    (ISA-18.2: the operator has seen it and answers for it), with an optional comment."""

    alert_id: AlertId
    user: UserId
    comment: Text | None = None
    statement: SignedStatement


class AlertShelved(Body, kw_only=True):
    """System event on line.alerts: `user` shelved the alert until `until` (RFC 3339 UTC) for
    `reason`. A shelved alert is not announced; at `until` it returns to its active or normal
    state by itself (the shelve is time-limited, docs/alerts.md)."""

    alert_id: AlertId
    user: UserId
    until: Rfc3339
    reason: Reason
    statement: SignedStatement


class AlertUnshelved(Body, kw_only=True):
    """System event on line.alerts: `user` ended a shelve before its expiry."""

    alert_id: AlertId
    user: UserId
    reason: Text | None = None
    statement: SignedStatement


class AlertCommented(Body, kw_only=True):
    """System event on line.alerts: `user` added a comment to the alert's record (its state
    does not change)."""

    alert_id: AlertId
    user: UserId
    comment: Reason
    statement: SignedStatement


class AlertOutOfService(Body, kw_only=True):
    """System event on line.alerts: `user` (a supervisor or admin) took the alert out of
    service for `reason` (maintenance, a known-bad instrument): it raises nothing until it is
    returned to service."""

    alert_id: AlertId
    user: UserId
    reason: Reason
    statement: SignedStatement


class AlertReturnedToService(Body, kw_only=True):
    """System event on line.alerts: `user` (a supervisor or admin) returned an out-of-service
    alert to service."""

    alert_id: AlertId
    user: UserId
    reason: Text | None = None
    statement: SignedStatement


#: Event type -> body model of the alert actions (registered in `bodies.BODY_OF_TYPE`).
ALERT_BODIES: dict[str, type[Body]] = {
    "alert.acknowledged": AlertAcknowledged,
    "alert.shelved": AlertShelved,
    "alert.unshelved": AlertUnshelved,
    "alert.commented": AlertCommented,
    "alert.outofservice": AlertOutOfService,
    "alert.inservice": AlertReturnedToService,
}
#: The bodies that carry a person's statement on an alert.
AlertActionBody = (AlertAcknowledged | AlertShelved | AlertUnshelved | AlertCommented
                   | AlertOutOfService | AlertReturnedToService)

BODY_OF_TYPE.update(ALERT_BODIES)
