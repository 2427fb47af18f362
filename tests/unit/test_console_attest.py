"""Console attestations checked against the log alone (`ledger.proof.statements`, what
`verify-ledger` and `linetrace verify` re-do): a statement naming a signed-in user and signed by
the console's key stands only if a `console.enrolled` earlier in the log enrolled that key (and
no `console.revoked` revoked it), the user is enrolled and active, their role allows the
action, and the action is not user administration. The person's own keys still work beside it.
"""

from __future__ import annotations

import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger import console_key
from linetrace.ledger.proof import statements as proof
from linetrace.ledger.proof.statements import check_statements
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, decode_event, encode_event

from linetrace.schemas.statements import new_statement, sign_statement

from .test_statements import ALICE, QA, QB, SUP, VIEWER, enrol, event


def signed_by(key: Ed25519PrivateKey, user: str, action: str, target: str,
              details: dict[str, str]) -> b.SignedStatement:
    """A statement signed by `key` (a person's own, or any key at all)."""
    return sign_statement(new_statement(action, target, details, user=user), key)

CONSOLE = Ed25519PrivateKey.from_private_bytes(bytes(range(9, 41)))
OTHER_CONSOLE = Ed25519PrivateKey.from_private_bytes(bytes(range(10, 42)))
HOLD = "HOLD-C1"
PEOPLE = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
          enrol("qa1", "quality", QA, ALICE, "alice", 2),
          enrol("qa2", "quality", QB, ALICE, "alice", 3),
          enrol("sup", "supervisor", SUP, ALICE, "alice", 4),
          enrol("v.ng", "viewer", VIEWER, ALICE, "alice", 5)]


def enrolled(key: Ed25519PrivateKey = CONSOLE, n: int = 6, name: str = "console") -> Event:
    pub = key.public_key()
    return event("console.enrolled", name, b.ConsoleEnrolled(
        name=name, public_key=signing.public_key_b64(pub), keyid=signing.keyid_of(pub)), n)


def revoked(key: Ed25519PrivateKey = CONSOLE, n: int = 7) -> Event:
    return event("console.revoked", "console", b.ConsoleRevoked(
        name="console", keyid=signing.keyid_of(key.public_key())), n)


def attested(user: str, action: str, target: str, details: dict[str, str],
             key: Ed25519PrivateKey = CONSOLE) -> b.SignedStatement:
    st = console_key.attest(key, action, target, details, user=user) if key is CONSOLE else (
        signed_by(key, user, action, target, details))
    assert st.keyid == signing.keyid_of(key.public_key()) and st.user == user
    return st


def placed(user: str, n: int, *, scope: str = "lot", target: str = "LOT-1",
           key: Ed25519PrivateKey = CONSOLE, category: str = "quality") -> Event:
    st = attested(user, "hold.place", target, {"scope": scope, "reason": "suspect lot"}, key)
    return event("hold.placed", HOLD, b.HoldPlaced(
        hold_id=HOLD, scope=scope, target=target, reason="suspect lot",  # type: ignore[arg-type]
        category=category, code="hold.manual", placed_by=user, statement=st), n)  # type: ignore[arg-type]


def approved(st: b.SignedStatement, n: int) -> Event:
    return event("hold.approved", HOLD, b.HoldApproved(hold_id=HOLD, statement=st), n)


def released(sts: list[b.SignedStatement], n: int) -> Event:
    return event("hold.released", HOLD, b.HoldReleased(
        hold_id=HOLD, released_by=[s.user for s in sts], statements=sts), n)


def problems(*events: Event) -> list[str]:
    return [p.detail for p in check_statements(events).problems]


def test_an_enrolled_consoles_attestations_stand_for_two_quality_users() -> None:
    first = attested("qa1", "hold.release", HOLD, {})
    second = attested("qa2", "hold.release", HOLD, {})
    log = [*PEOPLE, enrolled(), placed("qa1", 8), approved(first, 9),
           released([first, second], 10)]
    audit = check_statements(log)
    assert audit.problems == []
    # 5 enrolments (own keys), then the placement, the approval and both release statements
    assert audit.statements == 5 + 4 and audit.attested == 4
    assert audit.consoles == (("console", signing.keyid_of(CONSOLE.public_key())),)


def test_a_console_attestation_and_a_persons_own_key_mix_in_a_quality_release() -> None:
    first = attested("qa1", "hold.release", HOLD, {})
    second = signed_by(QB, "qa2", "hold.release", HOLD, {})  # qa2's own key
    log = [*PEOPLE, enrolled(), placed("qa1", 8, key=QA), approved(first, 9),
           released([first, second], 10)]
    audit = check_statements(log)
    assert audit.problems == [] and audit.attested == 2  # the approval, carried again


def test_a_console_key_not_enrolled_before_the_statement_is_refused() -> None:
    keyid = signing.keyid_of(CONSOLE.public_key())
    assert problems(*PEOPLE, placed("qa1", 8)) == [
        f"signed with key {keyid}, enrolled neither for qa1 nor for a console before it"]
    # Enrolled only after the statement: still refused at the statement's position.
    assert problems(*PEOPLE, placed("qa1", 8), enrolled(n=9)) == [
        f"signed with key {keyid}, enrolled neither for qa1 nor for a console before it"]
    # Another console's key enrolled does not make this one's attestations stand.
    assert len(problems(*PEOPLE, enrolled(OTHER_CONSOLE), placed("qa1", 8))) == 1


def test_a_revoked_console_keys_later_attestations_are_refused_earlier_ones_stand() -> None:
    log = [*PEOPLE, enrolled(), placed("qa1", 7), revoked(n=8),
           approved(attested("qa1", "hold.release", HOLD, {}), 9)]
    keyid = signing.keyid_of(CONSOLE.public_key())
    assert problems(*log) == [
        f"attested for qa1 by console console's key {keyid}, revoked earlier in the log"]


def test_a_console_attestation_for_a_role_that_may_not_act_is_refused() -> None:
    # A supervisor may not place a lot hold, nor approve a quality hold's release; a viewer
    # may not place any hold.
    assert problems(*PEOPLE, enrolled(), placed("sup", 8, category="operational")) == [
        "sup signed hold.place as supervisor; it needs the quality or admin role"]
    assert problems(*PEOPLE, enrolled(), placed("v.ng", 8, scope="unit", target="SRV-1",
                                                 category="operational")) == [
        "v.ng signed hold.place as a viewer (read only)"]
    assert problems(*PEOPLE, enrolled(), placed("qa1", 8),
                    approved(attested("sup", "hold.release", HOLD, {}), 9)) == [
        "sup signed hold.release as supervisor; it needs the quality role"]


def test_a_console_attestation_for_a_removed_or_unknown_user_is_refused() -> None:
    remove = event("user.removed", "qa1", b.UserRemoved(
        user="qa1", statement=signed_by(ALICE, "alice", "user.remove", "qa1", {})), 7)
    assert problems(*PEOPLE, enrolled(), remove, placed("qa1", 8)) == [
        "signed by qa1, removed earlier in the log"]
    assert problems(*PEOPLE, enrolled(), placed("nobody", 8)) == [
        "signed by nobody, whom the log never enrolled before it"]


def test_one_user_attested_twice_does_not_release_a_quality_hold() -> None:
    first = attested("qa1", "hold.release", HOLD, {})
    again = attested("qa1", "hold.release", HOLD, {})
    out = problems(*PEOPLE, enrolled(), placed("qa1", 8), approved(first, 9),
                   released([first, again], 10))
    assert len(out) == 1 and "2 different quality users" in out[0]


def test_the_console_cannot_attest_user_administration() -> None:
    with pytest.raises(console_key.ConsoleKeyError) as refused:
        console_key.attest(CONSOLE, "user.role", "v.ng", {"role": "admin"}, user="alice")
    assert refused.value.code == "console.forbidden"
    # Made anyway (with the console's key, by hand): the auditor refuses it.
    st = signed_by(CONSOLE, "alice", "user.role", "v.ng", {"role": "admin"})
    change = event("user.changed", "v.ng", b.UserRoleChanged(user="v.ng", role="admin",
                                                             statement=st), 8)
    keyid = signing.keyid_of(CONSOLE.public_key())
    assert problems(*PEOPLE, enrolled(), change) == [
        f"user.role attested for alice by console console's key {keyid}: user changes need "
        "the admin's own key"]


def test_an_attestation_altered_after_signing_is_refused() -> None:
    import base64
    import json

    st = attested("qa1", "hold.place", "LOT-1", {"scope": "lot", "reason": "suspect lot"})
    data = json.loads(base64.b64decode(st.statement))
    data["user"] = "qa2"
    moved = b.SignedStatement(user="qa2", keyid=st.keyid, signature=st.signature,
                              statement=base64.b64encode(json.dumps(
                                  data, sort_keys=True, separators=(",", ":")).encode()).decode())
    ev = event("hold.placed", HOLD, b.HoldPlaced(
        hold_id=HOLD, scope="lot", target="LOT-1", reason="suspect lot", category="quality",
        code="hold.manual", placed_by="qa2", statement=moved), 8)
    out = problems(*PEOPLE, enrolled(), ev)
    assert len(out) == 1 and "does not verify" in out[0]


def test_a_log_without_console_events_checks_as_before() -> None:
    log = [*PEOPLE, placed("qa1", 8, key=QA),
           approved(signed_by(QA, "qa1", "hold.release", HOLD, {}), 9)]
    audit = check_statements(log)
    assert audit.problems == [] and audit.attested == 0 and audit.consoles == ()


def test_the_console_actions_are_the_same_in_the_ledger_and_the_auditor() -> None:
    assert proof.CONSOLE_ACTIONS == console_key.CONSOLE_ACTIONS
    assert proof.CONSOLE_TYPES == console_key.CONSOLE_PROJECTIONS
    assert not {a for a in proof.CONSOLE_ACTIONS if a.startswith("user.")}


def test_console_events_are_system_events_on_line_holds_with_schemas() -> None:
    from linetrace.schemas.bodies import BODY_OF_TYPE, SYSTEM_TYPES
    from linetrace.schemas.topics import HOLDS, TOPIC_OF_TYPE

    pub = CONSOLE.public_key()
    value = encode_event(event_type="console.enrolled", source="linetrace", subject="console",
                         body=b.ConsoleEnrolled(name="console",
                                                public_key=signing.public_key_b64(pub),
                                                keyid=signing.keyid_of(pub)),
                         time="2026-03-02T08:00:00.000Z", event_id=str(uuid.uuid4()))
    assert isinstance(decode_event(value).body, b.ConsoleEnrolled)
    for t in ("console.enrolled", "console.revoked"):
        assert t in SYSTEM_TYPES and t in BODY_OF_TYPE and TOPIC_OF_TYPE[t] == HOLDS


def test_a_person_enrolled_with_the_consoles_key_is_a_problem() -> None:
    """The auditor's replay refuses what the ledger refuses when recording: the console's key
    enrolled as somebody's own."""
    mallory = enrol("mallory", "quality", CONSOLE, ALICE, "alice", 7)
    keyid = signing.keyid_of(CONSOLE.public_key())
    assert problems(*PEOPLE, enrolled(), mallory) == [
        f"mallory is enrolled with the console's key {keyid}: the console's key attests "
        "people's actions and is nobody's own"]
