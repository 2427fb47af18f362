"""People's actions on alerts checked from the log alone (`ledger.proof.statements`, what
`verify-ledger` and `linetrace verify` re-do): each `alert.*` event must carry a statement that
verifies with the signer's enrolled key, says the action, alert and details the event records,
names its signer, and comes from a role that may take it; a shelve is time-limited. Plus the
pure parts of recording them (details, durations, the role tables)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.cli.alert_action_cmds import parse_duration
from linetrace.cli.settings import ConfigurationError
from linetrace.ledger.alerts import actions
from linetrace.ledger.alerts.views import AlertError
from linetrace.ledger.proof import statements as proof
from linetrace.schemas import alert_events as ae
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, decode_event, encode_event, parse_time
from linetrace.schemas.examples import example_event
from linetrace.schemas.statements import new_statement, sign_statement

ADMIN = Ed25519PrivateKey.from_private_bytes(bytes(range(10, 42)))
SUP = Ed25519PrivateKey.from_private_bytes(bytes(range(11, 43)))
QA = Ed25519PrivateKey.from_private_bytes(bytes(range(12, 44)))
VIEW = Ed25519PrivateKey.from_private_bytes(bytes(range(13, 45)))
AID = "AL-0123456789ab"


def at(n: int) -> str:
    return f"2026-03-02T08:{n:02d}:00.000Z"


def signed(key: Ed25519PrivateKey, user: str, action: str, target: str, details: dict[str, str],
           n: int) -> b.SignedStatement:
    return sign_statement(new_statement(action, target, details, user=user,
                                        time=parse_time(at(n))), key)


def event(etype: str, subject: str, body: b.Body, n: int) -> Event:
    value = encode_event(event_type=etype, source="linetrace", subject=subject, body=body,
                         time=at(n), event_id=str(uuid.uuid5(uuid.NAMESPACE_URL,
                                                             f"{etype}{subject}{n}")))
    return decode_event(value)


def enrol(user: str, role: str, key: Ed25519PrivateKey, n: int) -> Event:
    pub = signing.public_key_b64(key.public_key())
    kid = signing.keyid_of(key.public_key())
    st = signed(ADMIN, "admin", "user.add", user, {"role": role, "public_key": pub,
                                                     "keyid": kid}, n)
    return event("user.enrolled", user, b.UserEnrolled(user=user, role=role,  # type: ignore[arg-type]
                                                       public_key=pub, keyid=kid, statement=st), n)


def people() -> list[Event]:
    return [enrol("admin", "admin", ADMIN, 0), enrol("sam", "supervisor", SUP, 1),
            enrol("quinn", "quality", QA, 2), enrol("vic", "viewer", VIEW, 3)]


def ack(key: Ed25519PrivateKey, user: str, n: int, comment: str | None = "seen",
        recorded: dict[str, str] | None = None) -> Event:
    st = signed(key, user, "alert.acknowledge", AID, {"comment": comment} if comment else {}, n)
    body = ae.AlertAcknowledged(alert_id=AID, user=user, comment=comment, statement=st)
    for k, v in (recorded or {}).items():
        setattr(body, k, v)
    return event("alert.acknowledged", AID, body, n)


def shelve(key: Ed25519PrivateKey, user: str, n: int, hours: float = 2.0) -> Event:
    until = (parse_time(at(n)) + timedelta(hours=hours)).strftime("%Y-%m-%dT%H:%M:%S.000Z")
    st = signed(key, user, "alert.shelve", AID, {"until": until, "reason": "door open"}, n)
    return event("alert.shelved", AID, ae.AlertShelved(alert_id=AID, user=user, until=until,
                                                       reason="door open", statement=st), n)


def oos(key: Ed25519PrivateKey, user: str, n: int) -> Event:
    st = signed(key, user, "alert.out_of_service", AID, {"reason": "sensor swap"}, n)
    return event("alert.outofservice", AID, ae.AlertOutOfService(
        alert_id=AID, user=user, reason="sensor swap", statement=st), n)


def problems(events: list[Event]) -> list[str]:
    return [p.detail for p in proof.check_statements(events).problems]


def test_every_action_by_a_role_that_may_take_it_stands() -> None:
    log = people()
    log.append(ack(SUP, "sam", 10))
    log.append(ack(QA, "quinn", 11, comment=None))
    log.append(shelve(QA, "quinn", 12))
    st = signed(SUP, "sam", "alert.unshelve", AID, {}, 13)
    log.append(event("alert.unshelved", AID, ae.AlertUnshelved(alert_id=AID, user="sam",
                                                               statement=st), 13))
    st = signed(QA, "quinn", "alert.comment", AID, {"comment": "lot X again"}, 14)
    log.append(event("alert.commented", AID, ae.AlertCommented(
        alert_id=AID, user="quinn", comment="lot X again", statement=st), 14))
    log.append(oos(SUP, "sam", 15))
    st = signed(ADMIN, "admin", "alert.return_to_service", AID, {"reason": "fixed"}, 16)
    log.append(event("alert.inservice", AID, ae.AlertReturnedToService(
        alert_id=AID, user="admin", reason="fixed", statement=st), 16))
    audit = proof.check_statements(log)
    assert audit.problems == []
    assert audit.events == 4 + 7 and audit.statements == 4 + 7
    assert {"sam", "quinn", "admin"} <= audit.signers


def test_a_viewer_may_not_acknowledge_and_quality_may_not_take_out_of_service() -> None:
    assert problems([*people(), ack(VIEW, "vic", 10), oos(QA, "quinn", 11)]) == [
        "vic signed alert.acknowledge as viewer; it needs the supervisor or quality or admin "
        "role",
        "quinn signed alert.out_of_service as quality; it needs the supervisor or admin role"]


def test_an_event_that_records_another_comment_or_user_than_signed_is_reported() -> None:
    out = problems([*people(), ack(SUP, "sam", 10, recorded={"comment": "all fine"}),
                    ack(SUP, "sam", 11, recorded={"user": "quinn"})])
    assert out == ["sam signed {'comment': 'seen'}, the event records {'comment': 'all fine'}",
                   "user says quinn, the statement is sam's"]


def test_a_statement_for_another_alert_or_by_someone_never_enrolled_is_reported() -> None:
    st = signed(SUP, "sam", "alert.acknowledge", "AL-ffffffffffff", {}, 10)
    moved = event("alert.acknowledged", AID, ae.AlertAcknowledged(alert_id=AID, user="sam",
                                                                  statement=st), 10)
    assert problems([*people(), moved, ack(SUP, "sam", 11)]) == ["sam signed alert.acknowledge of 'AL-ffffffffffff', not 'AL-0123456789ab'"]
    assert problems([enrol("admin", "admin", ADMIN, 0), ack(SUP, "sam", 10)]) == [
        "signed by sam, whom the log never enrolled before it"]


def test_a_revoked_key_no_longer_signs_alert_actions() -> None:
    kid = signing.keyid_of(SUP.public_key())
    st = signed(ADMIN, "admin", "user.revoke", "sam", {"keyid": kid}, 5)
    revoke = event("user.revoked", "sam", b.UserKeyRevoked(user="sam", keyid=kid, statement=st),
                   5)
    assert problems([*people(), ack(SUP, "sam", 4), revoke, ack(SUP, "sam", 10)]) == [
        f"signed with key {kid} of sam, revoked earlier in the log"]


def test_a_shelve_is_time_limited() -> None:
    assert problems([*people(), shelve(SUP, "sam", 10, hours=24)]) == []
    out = problems([*people(), shelve(SUP, "sam", 10, hours=25), shelve(SUP, "sam", 11,
                                                                          hours=-1)])
    assert "a shelve lasts at most 1 day, 0:00:00" in out[0]
    assert "had passed when it was signed or recorded" in out[1]


def test_the_role_tables_of_recording_and_auditing_agree() -> None:
    assert actions.ALERT_ROLES == proof.ALERT_ROLES
    assert actions.SHELVE_MAX == proof.SHELVE_MAX
    assert set(actions.STATEMENT_ACTION.values()) == set(actions.ALERT_ROLES)
    assert {proof.ACTION_OF_TYPE[t] for t in actions.EVENT_TYPE.values()} == set(
        actions.ALERT_ROLES)
    assert set(actions.EVENT_TYPE.values()) == set(ae.ALERT_BODIES) <= b.SYSTEM_TYPES
    for role in ("viewer",):
        assert all(role not in roles for roles in actions.ALERT_ROLES.values())


def test_the_published_examples_carry_statements_that_say_what_they_record() -> None:
    from linetrace.schemas.examples import EXAMPLE_USER_KEYS

    log = [enrol("admin.lee", "admin", ADMIN, 0)]
    log[0] = event("user.enrolled", "admin.lee", b.UserEnrolled(
        user="admin.lee", role="admin",
        public_key=signing.public_key_b64(EXAMPLE_USER_KEYS["admin.lee"].public_key()),
        keyid=signing.keyid_of(EXAMPLE_USER_KEYS["admin.lee"].public_key()),
        statement=signed(EXAMPLE_USER_KEYS["admin.lee"], "admin.lee", "user.add", "admin.lee", {
            "role": "admin",
            "public_key": signing.public_key_b64(EXAMPLE_USER_KEYS["admin.lee"].public_key()),
            "keyid": signing.keyid_of(EXAMPLE_USER_KEYS["admin.lee"].public_key())}, 0)), 0)
    for n, user in enumerate(("q.meyer", "q.okafor"), 1):
        key = EXAMPLE_USER_KEYS[user]
        pub, kid = signing.public_key_b64(key.public_key()), signing.keyid_of(key.public_key())
        log.append(event("user.enrolled", user, b.UserEnrolled(
            user=user, role="quality", public_key=pub, keyid=kid, statement=signed(
                EXAMPLE_USER_KEYS["admin.lee"], "admin.lee", "user.add", user,
                {"role": "quality", "public_key": pub, "keyid": kid}, n)), n))
    examples = [decode_event(example_event(t)) for t in ae.ALERT_BODIES]
    assert problems(log + examples) == []


def test_what_a_person_signs_for_each_action() -> None:
    assert actions.statement_details("acknowledge") == {}
    assert actions.statement_details("acknowledge", comment="ok") == {"comment": "ok"}
    assert actions.statement_details("shelve", reason="door", until=at(1)) == {
        "until": at(1), "reason": "door"}
    assert actions.statement_details("unshelve") == {}
    assert actions.statement_details("return_to_service", reason="done") == {"reason": "done"}
    for action, kw in (("comment", {}), ("out_of_service", {"reason": " "}),
                       ("shelve", {"until": at(1)}), ("shelve", {"reason": "r"}),
                       ("comment", {"comment": "x\x00y"})):
        with pytest.raises(AlertError) as e:
            actions.statement_details(action, **kw)  # type: ignore[arg-type]
        assert e.value.code == "alert.invalid"


def test_shelve_durations_and_their_limits() -> None:
    assert parse_duration("30m") == timedelta(minutes=30)
    assert parse_duration("2h") == timedelta(hours=2)
    assert parse_duration("1h30m") == timedelta(minutes=90)
    assert parse_duration("1d") == timedelta(days=1)
    for bad in ("", "2", "2 hours", "-1h", "1.5h", "h"):
        with pytest.raises(ConfigurationError, match="not a duration"):
            parse_duration(bad)
    now = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
    assert actions.shelve_until(timedelta(hours=2), now) == "2026-03-02T10:00:00.000Z"
    assert actions.shelve_until(timedelta(hours=24), now) == "2026-03-03T08:00:00.000Z"
    for bad_d in (timedelta(hours=24, seconds=1), timedelta(seconds=30)):
        with pytest.raises(AlertError, match="time-limited"):
            actions.shelve_until(bad_d, now)
