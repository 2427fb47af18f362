"""The console's sign-in material (ledger/console_auth.py) on both engines: argon2id password
hashes, sign-in, the throttle (per user and per client, doubling locks that expire), session
idle and absolute expiry, a removed user's sessions and tokens, password changes, one-time
passwords, API tokens and the audit. Time moves through the functions' `now=` parameters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from argon2 import PasswordHasher
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from linetrace.ledger import console_auth as ca
from linetrace.ledger.console_auth import (
    ApiToken, AuthError, ConsolePassword, ConsoleSession, Throttled, audit, change_password,
    create_token, list_audit, list_tokens, revoke_token, session_principal, set_password,
    sign_in, sign_out, token_principal,
)
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.users import change_role, remove_user
from linetrace.schemas.statements import new_statement, sign_statement
from tests.console.conftest import enrol_people, password_of

T0 = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)


@pytest.fixture
def people(ledger: Ledger, tmp_path) -> tuple[Ed25519PrivateKey, dict[str, Ed25519PrivateKey]]:  # type: ignore[no-untyped-def]
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    return plant, enrol_people(ledger, plant)


def admin_statement(keys: dict[str, Ed25519PrivateKey], action: str, target: str,
                    details: dict[str, str]):  # type: ignore[no-untyped-def]
    return sign_statement(new_statement(action, target, details, user="ada"), keys["ada"])


def sign(ledger: Ledger, user: str, password: str | None = None, *, client: str = "10.0.0.1",
         at: datetime = T0) -> tuple[str, ca.Principal]:
    return sign_in(ledger, user, password_of(user) if password is None else password,
                   client=client, now=at)


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


# --- passwords -------------------------------------------------------------------------------


def test_passwords_are_stored_as_argon2id_hashes(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    with ledger.reader() as session:
        rows = list(session.scalars(select(ConsolePassword)))
    assert {r.user_id for r in rows} == {"ada", "sam", "quinn", "rae", "vic"}
    for row in rows:
        assert row.hash.startswith("$argon2id$"), row.hash
        assert password_of(row.user_id) not in row.hash
        assert PasswordHasher().verify(row.hash, password_of(row.user_id))
    assert len({r.hash for r in rows}) == len(rows)  # salted


def test_sign_in_with_the_right_password_opens_a_session(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    token, who = sign(ledger, "sam")
    assert (who.user, who.role, who.via, who.must_change) == ("sam", "supervisor", "session",
                                                              False)
    assert who.csrf and who.expires == T0 + ca.SESSION_MAX
    again = session_principal(ledger, token, now=T0 + s(1))
    assert again is not None and (again.user, again.role, again.csrf) == ("sam", "supervisor",
                                                                         who.csrf)
    with ledger.reader() as session:
        stored = list(session.scalars(select(ConsoleSession)))
    assert len(stored) == 1 and token not in (stored[0].token_hash, stored[0].csrf)
    sign_out(ledger, token)
    assert session_principal(ledger, token, now=T0 + s(2)) is None


def test_a_wrong_password_or_unknown_user_is_refused_alike(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as wrong:
        sign(ledger, "sam", "sam-wrong-horse-1")
    with pytest.raises(AuthError) as nobody:
        sign(ledger, "nobody", "whatever-password", client="10.0.0.2")
    assert wrong.type is nobody.type is AuthError
    assert wrong.value.code == nobody.value.code == "auth.failed"
    assert str(wrong.value) == str(nobody.value)
    with pytest.raises(AuthError):
        sign(ledger, "sam", password_of("sam").upper(), client="10.0.0.3")
    assert session_principal(ledger, "not-a-session") is None


# --- the throttle ------------------------------------------------------------------------------


def test_five_failures_then_a_lock_that_doubles_and_expires(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    t = T0
    for i in range(ca.THROTTLE_FAILURES):
        with pytest.raises(AuthError) as e:
            sign(ledger, "sam", f"guess-number-{i}", at=t + s(i))
        assert not isinstance(e.value, Throttled), f"locked after {i + 1} failures"
    t = T0 + s(10)
    with pytest.raises(Throttled) as locked:
        sign(ledger, "sam", "guess-number-6", at=t)
    assert 30 <= locked.value.retry_after <= 31 and locked.value.code == "auth.throttled"
    # locked: even the right password is refused, and the lock says how long is left
    with pytest.raises(Throttled) as still:
        sign(ledger, "sam", at=t + s(20))
    assert 10 <= still.value.retry_after <= 11
    # the next failure after the lock locks twice as long, then four times
    t += s(31)
    with pytest.raises(Throttled) as twice:
        sign(ledger, "sam", "guess-number-7", at=t)
    assert 60 <= twice.value.retry_after <= 61
    t += s(61)
    with pytest.raises(Throttled) as four:
        sign(ledger, "sam", "guess-number-8", at=t)
    assert 120 <= four.value.retry_after <= 121
    # the lock expires: the right password works again
    _, who = sign(ledger, "sam", at=t + s(121))
    assert who.user == "sam"


def test_locks_are_capped(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    t = T0
    waits = []
    for i in range(12):
        try:
            sign(ledger, "vic", f"guess-{i}", at=t)
        except Throttled as e:
            waits.append(e.retry_after)
            t += s(e.retry_after)
        except AuthError:
            t += s(1)
    assert waits[:3] == [31, 61, 121] and max(waits) <= ca.THROTTLE_MAX.total_seconds() + 1


def test_the_user_is_locked_whatever_the_client(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    for i in range(ca.THROTTLE_FAILURES):
        with pytest.raises(AuthError):
            sign(ledger, "quinn", "not-it-at-all", client=f"10.1.0.{i}")
    with pytest.raises(Throttled):
        sign(ledger, "quinn", "not-it-at-all", client="10.1.0.99")
    with pytest.raises(Throttled):
        sign(ledger, "quinn", client="10.1.0.100")  # right password, new client: still locked
    _, who = sign(ledger, "rae", client="10.1.0.100")  # someone else is not
    assert who.user == "rae"
    with pytest.raises(Throttled):
        sign(ledger, "QUINN", "not-it-at-all", client="10.1.0.101")  # the name's case


def test_the_client_is_locked_whatever_the_user(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    # A password sprayed over many names from one address: the address gets more tries than
    # a name (a floor behind NAT shares it), then it is locked.
    names = ["ada", "sam", "nobody", "rae", "vic"]
    for i in range(ca.THROTTLE_CLIENT_FAILURES):
        with pytest.raises(AuthError) as e:
            sign(ledger, f"{names[i % len(names)]}{i}", "spray-password-1", client="192.0.2.7")
        assert not isinstance(e.value, Throttled)
    with pytest.raises(Throttled):
        sign(ledger, "quinn", "spray-password-1", client="192.0.2.7")
    with pytest.raises(Throttled):
        sign(ledger, "ada", client="192.0.2.7")  # the right password from that client
    _, who = sign(ledger, "ada", client="192.0.2.8")  # from elsewhere: fine
    assert who.user == "ada"


def test_a_sign_in_clears_the_users_failures(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    for i in range(ca.THROTTLE_FAILURES - 1):
        with pytest.raises(AuthError):
            sign(ledger, "sam", "typo-typo-typo", client=f"10.2.0.{i}")
    sign(ledger, "sam", client="10.2.1.1")
    for i in range(ca.THROTTLE_FAILURES):
        with pytest.raises(AuthError) as e:
            sign(ledger, "sam", "typo-typo-typo", client=f"10.2.2.{i}")
        assert not isinstance(e.value, Throttled)


def test_failures_older_than_the_window_are_forgotten(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    for i in range(ca.THROTTLE_FAILURES):
        with pytest.raises(AuthError):
            sign(ledger, "rae", "typo-typo-typo", at=T0 + s(i))
    later = T0 + ca.THROTTLE_WINDOW + s(10)
    with pytest.raises(AuthError) as e:
        sign(ledger, "rae", "typo-typo-typo", at=later)
    assert not isinstance(e.value, Throttled)


# --- sessions ----------------------------------------------------------------------------------


def test_a_session_ends_after_its_idle_time(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    token, _ = sign(ledger, "sam")
    assert ca.SESSION_IDLE / 2 + ca.SESSION_IDLE < ca.SESSION_MAX + ca.SESSION_IDLE / 2
    touched = T0 + ca.SESSION_IDLE / 2
    assert session_principal(ledger, token, now=touched) is not None
    # idle time counts from the last request, not from the sign-in
    later = touched + ca.SESSION_IDLE - s(60)
    assert later > T0 + ca.SESSION_IDLE and later < T0 + ca.SESSION_MAX
    assert session_principal(ledger, token, now=later) is not None
    other, _ = sign(ledger, "vic")
    assert session_principal(ledger, other, now=T0 + ca.SESSION_IDLE + s(1)) is None
    assert session_principal(ledger, other, now=T0 + s(5)) is None  # gone for good


def test_a_used_session_still_ends_at_its_absolute_lifetime(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    token, who = sign(ledger, "sam")
    t = T0
    step = ca.SESSION_IDLE / 2
    while t + step < T0 + ca.SESSION_MAX:
        t += step
        assert session_principal(ledger, token, now=t) is not None, t - T0
    assert session_principal(ledger, token, now=T0 + ca.SESSION_MAX + s(1)) is None
    assert who.expires == T0 + ca.SESSION_MAX


def test_a_removed_users_sessions_and_tokens_die(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    plant, keys = people
    session, _ = sign(ledger, "vic")
    secret, _ = create_token(ledger, "vic", "vic's script", by="vic")
    assert session_principal(ledger, session, now=T0 + s(1)) is not None and token_principal(ledger, secret)
    remove_user(ledger, plant, admin_statement(keys, "user.remove", "vic", {}), user="vic")
    assert session_principal(ledger, session, now=T0 + s(1)) is None
    assert token_principal(ledger, secret) is None
    with pytest.raises(AuthError):
        sign(ledger, "vic", client="10.3.0.1")
    with pytest.raises(AuthError):
        create_token(ledger, "vic", "another", by="ada")


def test_sessions_and_tokens_act_with_the_users_role_now(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    plant, keys = people
    session, _ = sign(ledger, "sam")
    secret, _ = create_token(ledger, "sam", "sam's script", by="sam")
    change_role(ledger, plant, admin_statement(keys, "user.role", "sam", {"role": "viewer"}),
                user="sam", role="viewer")
    assert session_principal(ledger, session, now=T0 + s(1)).role == "viewer"  # type: ignore[union-attr]
    assert token_principal(ledger, secret).role == "viewer"  # type: ignore[union-attr]


# --- password changes --------------------------------------------------------------------------


def test_a_password_change_needs_the_current_password(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as e:
        change_password(ledger, "sam", "not-the-current-one", "a-brand-new-password")
    assert e.value.code == "auth.failed"
    sign(ledger, "sam")  # unchanged
    with pytest.raises(AuthError):
        sign(ledger, "sam", "a-brand-new-password", client="10.4.0.1")


def test_a_password_change_ends_the_other_sessions(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    mine, _ = sign(ledger, "sam", client="10.4.1.1")
    other, _ = sign(ledger, "sam", client="10.4.1.2")
    someone, _ = sign(ledger, "vic", client="10.4.1.3")
    change_password(ledger, "sam", password_of("sam"), "a-brand-new-password", keep_session=mine)
    assert session_principal(ledger, mine, now=T0 + s(1)) is not None
    assert session_principal(ledger, other, now=T0 + s(1)) is None
    assert session_principal(ledger, someone, now=T0 + s(1)) is not None
    with pytest.raises(AuthError):
        sign(ledger, "sam", client="10.4.1.4")
    _, who = sign(ledger, "sam", "a-brand-new-password", client="10.4.1.5")
    assert who.user == "sam"


@pytest.mark.parametrize("new", ["short-pw", "sam", "SAM       ", "sam-correct-horse-1"])
def test_weak_or_unchanged_passwords_are_refused(ledger: Ledger, people, new: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as e:
        change_password(ledger, "sam", password_of("sam"), new)
    assert e.value.code == "auth.weak_password"
    with pytest.raises(AuthError) as e:
        set_password(ledger, "sam", new if new != password_of("sam") else "x", by="ada",
                     one_time=False)
    assert e.value.code == "auth.weak_password"


def test_a_one_time_password_must_be_changed(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    before, _ = sign(ledger, "vic", client="10.5.0.1")
    one_time = ca.new_one_time_password()
    set_password(ledger, "vic", one_time, by="ada", one_time=True)
    assert session_principal(ledger, before, now=T0 + s(1)) is None  # a reset ends the user's sessions
    with pytest.raises(AuthError):
        sign(ledger, "vic", client="10.5.0.2")  # the old password is gone
    token, who = sign(ledger, "vic", one_time, client="10.5.0.3")
    assert who.must_change
    assert session_principal(ledger, token, now=T0 + s(1)).must_change  # type: ignore[union-attr]
    change_password(ledger, "vic", one_time, "vics-own-password", keep_session=token)
    assert not session_principal(ledger, token, now=T0 + s(1)).must_change  # type: ignore[union-attr]
    _, who = sign(ledger, "vic", "vics-own-password", client="10.5.0.4")
    assert not who.must_change


def test_a_password_is_set_only_for_an_enrolled_active_user(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as e:
        set_password(ledger, "nobody", "a-long-enough-password", by="ada", one_time=True)
    assert e.value.code == "user.unknown"


# --- API tokens --------------------------------------------------------------------------------


def test_tokens_are_shown_once_and_stored_hashed(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    secret, doc = create_token(ledger, "sam", "ict-31 interlock", by="sam")
    assert secret.startswith(f"lt_{doc['id']}_")
    with ledger.reader() as session:
        listed = list_tokens(session, "sam")
        rows = list(session.scalars(select(ApiToken)))
    assert listed == [doc] and "token" not in doc
    assert all(secret.split("_", 2)[2] not in str(v) for v in vars(rows[0]).values())
    who = token_principal(ledger, secret)
    assert who is not None and (who.user, who.role, who.via, who.csrf) == (
        "sam", "supervisor", f"token:{doc['id']}", None)
    assert token_principal(ledger, secret[:-1] + ("A" if secret[-1] != "A" else "B")) is None
    assert token_principal(ledger, f"lt_{doc['id']}_") is None
    assert token_principal(ledger, "lt_nope_nope") is None


def test_a_revoked_token_stops_and_only_its_owner_or_an_admin_revokes(
        ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    secret, doc = create_token(ledger, "sam", "sam's script", by="sam")
    with pytest.raises(AuthError) as e:
        revoke_token(ledger, doc["id"], by="vic", admin=False)
    assert e.value.code == "token.unknown"
    assert token_principal(ledger, secret) is not None
    revoked = revoke_token(ledger, doc["id"], by="sam", admin=False)
    assert revoked["revoked"] is not None
    assert token_principal(ledger, secret) is None
    again = revoke_token(ledger, doc["id"], by="sam", admin=False)  # harmless
    assert again["revoked"] == revoked["revoked"]
    other, doc2 = create_token(ledger, "vic", "vic's", by="ada")
    revoke_token(ledger, doc2["id"], by="ada", admin=True)
    assert token_principal(ledger, other) is None


def test_a_token_needs_a_name(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(AuthError) as e:
        create_token(ledger, "sam", "   ", by="sam")
    assert e.value.code == "token.invalid"


# --- the audit ---------------------------------------------------------------------------------


def test_audit_entries_newest_first_by_user(ledger: Ledger, people) -> None:  # type: ignore[no-untyped-def]
    audit(ledger, user=None, via="anonymous", method="POST", path="/api/v1/holds", status=401,
          client="10.6.0.1", detail={"code": "auth.required"}, now=T0)
    audit(ledger, user="vic", via="session", method="POST", path="/api/v1/holds", status=403,
          client="10.6.0.1", detail={"code": "role.forbidden"}, now=T0 + s(1))
    audit(ledger, user="sam", via="token:abc", method="POST", path="/api/v1/holds", status=201,
          client="10.6.0.2", now=T0 + s(2))
    with ledger.reader() as session:
        entries = list_audit(session)
        vic = list_audit(session, user="vic")
        older = list_audit(session, before=entries[0]["id"], limit=1)
    assert [(e["user"], e["via"], e["status"]) for e in entries] == [
        ("sam", "token:abc", 201), ("vic", "session", 403), (None, "anonymous", 401)]
    assert entries[1]["detail"] == {"code": "role.forbidden"}
    assert entries[0]["time"].endswith("Z")
    assert [e["user"] for e in vic] == ["vic"]
    assert [e["user"] for e in older] == ["vic"]
