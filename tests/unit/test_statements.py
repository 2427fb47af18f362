"""A person's signed statement: it verifies only over the exact bytes, with the signer's own
key, for the action and target being recorded; and the log alone says whose statements stand
(`ledger.proof.statements`, what `verify-ledger` re-does)."""

from __future__ import annotations

import base64
import json
import uuid

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.proof.statements import audit_statements
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, decode_event, encode_event
from linetrace.schemas.statements import (
    StatementError,
    encode_statement,
    new_statement,
    read_statement,
    sign_statement,
    verify_statement,
)

ALICE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
MALLORY = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
QA = Ed25519PrivateKey.from_private_bytes(bytes(range(2, 34)))
VIEWER = Ed25519PrivateKey.from_private_bytes(bytes(range(3, 35)))


def signed_by(key: Ed25519PrivateKey, user: str = "alice", action: str = "hold.place",
              target: str = "SRV-1", details: dict[str, str] | None = None) -> b.SignedStatement:
    return sign_statement(new_statement(action, target, details or {"reason": "scratch"},
                                        user=user), key)


def test_a_signed_statement_verifies_with_the_signers_key_and_reads_back() -> None:
    signed = signed_by(ALICE)
    st = verify_statement(signed, ALICE.public_key(), action="hold.place", target="SRV-1")
    assert (st.action, st.target, st.user, st.details) == ("hold.place", "SRV-1", "alice",
                                                           {"reason": "scratch"})
    assert signed.keyid == signing.keyid_of(ALICE.public_key())
    assert base64.b64decode(signed.statement) == encode_statement(st)
    uuid.UUID(st.request)
    assert read_statement(signed) == st


def test_altered_bytes_are_refused_as_forged() -> None:
    signed = signed_by(ALICE)
    data = json.loads(base64.b64decode(signed.statement))
    data["target"] = "SRV-2"
    altered = b.SignedStatement(user="alice", keyid=signed.keyid, signature=signed.signature,
                                statement=base64.b64encode(json.dumps(
                                    data, sort_keys=True, separators=(",", ":")).encode()).decode())
    with pytest.raises(StatementError, match="does not verify.*forged"):
        verify_statement(altered, ALICE.public_key())


def test_a_signature_by_another_key_under_the_users_keyid_is_refused() -> None:
    genuine = signed_by(ALICE)
    forged_sig = MALLORY.sign(base64.b64decode(genuine.statement))
    forged = b.SignedStatement(user="alice", keyid=genuine.keyid, statement=genuine.statement,
                               signature=base64.b64encode(forged_sig).decode())
    with pytest.raises(StatementError, match="does not verify"):
        verify_statement(forged, ALICE.public_key())


def test_the_wrong_key_is_refused_by_its_key_id() -> None:
    with pytest.raises(StatementError, match="not by the key given"):
        verify_statement(signed_by(MALLORY), ALICE.public_key())


def test_a_statement_for_another_action_or_target_is_refused() -> None:
    signed = signed_by(ALICE)
    with pytest.raises(StatementError, match="not 'hold.release'"):
        verify_statement(signed, ALICE.public_key(), action="hold.release")
    with pytest.raises(StatementError, match="not 'SRV-2'"):
        verify_statement(signed, ALICE.public_key(), action="hold.place", target="SRV-2")


def test_a_statement_carried_as_another_users_is_refused() -> None:
    signed = signed_by(ALICE)
    moved = b.SignedStatement(user="bob", keyid=signed.keyid, statement=signed.statement,
                              signature=signed.signature)
    with pytest.raises(StatementError, match="names user 'alice'"):
        verify_statement(moved, ALICE.public_key())


def test_bad_names_actions_and_requests_are_refused_when_made() -> None:
    with pytest.raises(StatementError, match="unknown action"):
        new_statement("hold.smash", "X", {}, user="alice")
    with pytest.raises(StatementError, match="not valid"):
        new_statement("hold.place", "X", {}, user="Alice Smith")
    with pytest.raises(StatementError, match="not a UUID"):
        new_statement("hold.place", "X", {}, user="alice", request="42")


# --- the log alone says whose statements stand -------------------------------------------------


def event(etype: str, subject: str, body: b.Body, n: int) -> Event:
    value = encode_event(event_type=etype, source="linetrace", subject=subject, body=body,
                         time=f"2026-03-02T08:{n:02d}:00.000Z",
                         event_id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"{etype}{subject}{n}")))
    return decode_event(value)


def enrol(user: str, role: str, key: Ed25519PrivateKey, by: Ed25519PrivateKey, by_user: str,
          n: int) -> Event:
    pub = signing.public_key_b64(key.public_key())
    kid = signing.keyid_of(key.public_key())
    st = signed_by(by, by_user, "user.add", user, {"role": role, "public_key": pub, "keyid": kid})
    return event("user.enrolled", user, b.UserEnrolled(user=user, role=role,  # type: ignore[arg-type]
                                                       public_key=pub, keyid=kid, statement=st), n)


def placed(key: Ed25519PrivateKey, user: str, n: int, target: str = "SRV-1") -> Event:
    st = signed_by(key, user, "hold.place", target)
    return event("hold.placed", f"HOLD-{n}", b.HoldPlaced(
        hold_id=f"HOLD-{n}", scope="unit", target=target, reason="scratch", category="quality",
        code="hold.manual", placed_by=user, statement=st), n)


def problems(*events: Event) -> list[str]:
    return [p.detail for p in audit_statements(events)]


def test_the_first_admin_self_signed_then_admin_signed_users_and_their_holds_stand() -> None:
    log = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
           enrol("qa1", "quality", QA, ALICE, "alice", 2),
           placed(QA, "qa1", 3)]
    assert problems(*log) == []


def test_a_self_signed_user_after_the_first_admin_does_not_stand() -> None:
    log = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
           enrol("mallory", "admin", MALLORY, MALLORY, "mallory", 2)]
    assert problems(*log) == ["signed by mallory, whom the log never enrolled before it"]


def test_a_viewers_hold_and_a_non_admins_enrolment_do_not_stand() -> None:
    log = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
           enrol("v.ng", "viewer", VIEWER, ALICE, "alice", 2),
           placed(VIEWER, "v.ng", 3),
           enrol("qa1", "quality", QA, VIEWER, "v.ng", 4)]
    assert problems(*log) == ["v.ng signed hold.place as a viewer (read only)",
                              "v.ng signed user.add as viewer, not admin"]


def test_a_statement_by_a_revoked_key_or_a_removed_user_does_not_stand() -> None:
    kid = signing.keyid_of(QA.public_key())
    revoke = event("user.revoked", "qa1", b.UserKeyRevoked(
        user="qa1", keyid=kid, statement=signed_by(ALICE, "alice", "user.revoke", "qa1",
                                                   {"keyid": kid})), 3)
    remove = event("user.removed", "qa1", b.UserRemoved(
        user="qa1", statement=signed_by(ALICE, "alice", "user.remove", "qa1", {})), 5)
    base = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
            enrol("qa1", "quality", QA, ALICE, "alice", 2)]
    assert problems(*base, revoke, placed(QA, "qa1", 4)) == [
        f"signed with key {kid} of qa1, revoked earlier in the log"]
    assert problems(*base, remove, placed(QA, "qa1", 6))[-1] == (
        "signed by qa1, removed earlier in the log")


def test_a_forged_statement_in_a_plant_signed_event_does_not_stand() -> None:
    genuine = signed_by(QA, "qa1")
    forged = b.SignedStatement(user="qa1", keyid=genuine.keyid, statement=genuine.statement,
                               signature=base64.b64encode(MALLORY.sign(
                                   base64.b64decode(genuine.statement))).decode())
    ev = event("hold.placed", "HOLD-9", b.HoldPlaced(
        hold_id="HOLD-9", scope="unit", target="SRV-1", reason="scratch", category="quality",
        code="hold.manual", placed_by="qa1", statement=forged), 9)
    out = problems(enrol("alice", "admin", ALICE, ALICE, "alice", 1),
                   enrol("qa1", "quality", QA, ALICE, "alice", 2), ev)
    assert len(out) == 1 and "does not verify" in out[0]


def test_a_user_change_whose_statement_says_something_else_does_not_stand() -> None:
    pub = signing.public_key_b64(QA.public_key())
    kid = signing.keyid_of(QA.public_key())
    st = signed_by(ALICE, "alice", "user.add", "qa1", {"role": "viewer", "public_key": pub,
                                                       "keyid": kid})
    ev = event("user.enrolled", "qa1", b.UserEnrolled(user="qa1", role="admin", public_key=pub,
                                                      keyid=kid, statement=st), 2)
    out = problems(enrol("alice", "admin", ALICE, ALICE, "alice", 1), ev)
    assert len(out) == 1 and "the event records" in out[0]
