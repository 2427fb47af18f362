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
    st = signed_by(key, user, "hold.place", target, {"scope": "unit", "reason": "scratch"})
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


# --- hold events say what their statements say; a quality release takes two quality users ----

SUP = Ed25519PrivateKey.from_private_bytes(bytes(range(4, 36)))
QB = Ed25519PrivateKey.from_private_bytes(bytes(range(5, 37)))
PEOPLE = [enrol("alice", "admin", ALICE, ALICE, "alice", 1),
          enrol("qa1", "quality", QA, ALICE, "alice", 2),
          enrol("qa2", "quality", QB, ALICE, "alice", 3),
          enrol("sup", "supervisor", SUP, ALICE, "alice", 4)]


def lot_hold(n: int = 10, by: tuple[Ed25519PrivateKey, str] = (QA, "qa1"),
             category: str = "quality") -> Event:
    st = signed_by(by[0], by[1], "hold.place", "LOT-1", {"scope": "lot", "reason": "recall"})
    return event("hold.placed", "HOLD-L", b.HoldPlaced(
        hold_id="HOLD-L", scope="lot", target="LOT-1", reason="recall",
        category=category, code="hold.manual", placed_by=by[1], statement=st), n)  # type: ignore[arg-type]


def approval(key: Ed25519PrivateKey, user: str, reason: str | None = None) -> b.SignedStatement:
    return sign_statement(new_statement("hold.release", "HOLD-L",
                                        {"reason": reason} if reason else {}, user=user), key)


def approved(st: b.SignedStatement, n: int, reason: str | None = None) -> Event:
    return event("hold.approved", "HOLD-L", b.HoldApproved(hold_id="HOLD-L", reason=reason,
                                                           statement=st), n)


def released(statements: list[b.SignedStatement], n: int, reason: str | None = None,
             by: list[str] | None = None) -> Event:
    return event("hold.released", "HOLD-L", b.HoldReleased(
        hold_id="HOLD-L", reason=reason, released_by=by or [s.user for s in statements],
        statements=statements), n)


def test_a_quality_hold_released_by_two_quality_users_stands() -> None:
    first, second = approval(QA, "qa1", "retest passed"), approval(QB, "qa2")
    assert problems(*PEOPLE, lot_hold(), approved(first, 11, "retest passed"),
                    released([first, second], 12)) == []


def test_one_quality_users_approval_turned_into_a_release_does_not_stand() -> None:
    first = approval(QA, "qa1")
    out = problems(*PEOPLE, lot_hold(), approved(first, 11), released([first], 12))
    assert out == ["hold HOLD-L is a quality hold: releasing it takes the statements of 2 "
                   "different quality users, this release carries 1 (qa1)"]
    twice = problems(*PEOPLE, lot_hold(), released([first, first], 12))
    assert len(twice) == 1 and "carries 1 (qa1, qa1)" in twice[0]


def test_a_release_naming_others_than_its_signers_or_signed_by_a_supervisor_does_not_stand(
        ) -> None:
    first, second = approval(QA, "qa1"), approval(QB, "qa2")
    assert problems(*PEOPLE, lot_hold(), released([first, second], 12, by=["qa1", "sup"])) == [
        "released_by says ['qa1', 'sup'], the statements are ['qa1', 'qa2']'s"]
    out = problems(*PEOPLE, lot_hold(), released([first, approval(SUP, "sup")], 12))
    assert out == ["sup signed hold.release as supervisor; it needs the quality role"]
    assert problems(*PEOPLE, released([first, second], 12)) == [
        "releases hold HOLD-L, which no hold.placed before it places"] * 2


def test_a_release_whose_reason_differs_from_the_signed_one_does_not_stand() -> None:
    first, second = approval(QA, "qa1"), approval(QB, "qa2", "retest passed")
    out = problems(*PEOPLE, lot_hold(), released([first, second], 12, reason="other reason"))
    assert out == ["qa2 signed {'reason': 'retest passed'}, the event records "
                   "{'reason': 'other reason'}"]


def test_a_hold_placed_beyond_the_signers_role_or_in_the_wrong_category_does_not_stand() -> None:
    assert problems(*PEOPLE, lot_hold(by=(SUP, "sup"), category="operational")) == [
        "sup signed hold.place as supervisor; it needs the quality or admin role"]
    assert problems(*PEOPLE, lot_hold(category="operational")) == [
        "a lot hold placed by qa1 (quality) is quality; the event records operational"]
    unsigned = event("hold.placed", "HOLD-U", b.HoldPlaced(
        hold_id="HOLD-U", scope="unit", target="SRV-1", reason="x", category="operational",
        code="hold.manual", placed_by="qa1"), 10)
    assert problems(*PEOPLE, unsigned) == ["placed by qa1 without a statement of theirs"]
    route = event("hold.placed", "HOLD-R", b.HoldPlaced(
        hold_id="HOLD-R", scope="unit", target="SRV-1", reason="skipped step 80",
        category="quality", code="route.missing_step", placed_by="linetrace"), 10)
    assert problems(*PEOPLE, route) == []  # linetrace's own route hold needs no person


def test_a_disposition_recorded_with_another_decision_than_signed_does_not_stand() -> None:
    st = signed_by(QA, "qa1", "hold.disposition", "SRV-1", {
        "decision": "scrap", "reason": "burnt", "hold_id": "HOLD-R"})
    route = event("hold.placed", "HOLD-R", b.HoldPlaced(
        hold_id="HOLD-R", scope="unit", target="SRV-1", reason="failed twice",
        category="quality", code="route.max_loops", placed_by="linetrace"), 10)

    def disposed(decision: str, by: str = "qa1") -> Event:
        return event("hold.disposition", "HOLD-R", b.HoldDisposition(
            hold_id="HOLD-R", unit="SRV-1", decision=decision, reason="burnt",  # type: ignore[arg-type]
            decided_by=by, statement=st), 11)

    assert problems(*PEOPLE, route, disposed("scrap")) == []
    assert problems(*PEOPLE, route, disposed("use-as-is")) == [
        "qa1 signed {'decision': 'scrap', 'hold_id': 'HOLD-R', 'reason': 'burnt'}, the event "
        "records {'decision': 'use-as-is', 'reason': 'burnt', 'hold_id': 'HOLD-R'}"]
    assert problems(*PEOPLE, route, disposed("scrap", by="qa2")) == [
        "decided_by says qa2, the statement is qa1's"]


def test_the_roles_checked_from_the_log_are_those_enforced_when_recording() -> None:
    from linetrace.ledger import dispositions, hold_actions
    from linetrace.ledger.proof import statements

    assert statements.PLACE_ROLES == hold_actions.PLACE_ROLES
    assert statements.RELEASE_ROLES == hold_actions.RELEASE_ROLES
    assert statements.DISPOSITION_ROLES == dispositions.DISPOSITION_ROLES
