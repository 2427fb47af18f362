"""Sign-in, sessions, password changes, API tokens and the audit, through the console's HTTP
API (the ledger functions' own tests: tests/unit/test_console_auth.py). The ones where the
database matters run on SQLite and PostgreSQL (`db_url`)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from linetrace.console.auth import CSRF_HEADER, SESSION_COOKIE
from linetrace.ledger import console_auth as ca
from linetrace.ledger.console_auth import ConsolePassword, set_password
from linetrace.ledger.users import remove_user
from linetrace.schemas.statements import new_statement, sign_statement

from .conftest import Console, make_console, password_of


@pytest.fixture
def any_console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """The console on each engine."""
    c = make_console(db_url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


def sign_in(console: Console, user: str, password: str | None = None, **kw: Any):  # type: ignore[no-untyped-def]
    client = console.anon()
    r = client.post("/api/v1/session", json={"user": user, "password": password
                                             if password is not None else password_of(user)},
                    **kw)
    return client, r


def audit_of(console: Console, **query: Any) -> list[dict[str, Any]]:
    r = console.as_("sam").get("/api/v1/audit", params=query)
    assert r.status_code == 200, r.text
    entries: list[dict[str, Any]] = r.json()
    return [e for e in entries if e["path"] != "/api/v1/session" or e["method"] != "POST"
            or e["user"] != "sam" or e["status"] != 200]  # less the reader's own sign-in


# --- sign-in -----------------------------------------------------------------------------------


def test_sign_in_sets_an_httponly_strict_cookie(any_console: Console) -> None:
    client, r = sign_in(any_console, "sam")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert (doc["user"], doc["role"], doc["via"], doc["must_change"]) == (
        "sam", "supervisor", "session", False)
    cookie = r.headers["set-cookie"]
    parts = [p.strip().lower() for p in cookie.split(";")]
    assert parts[0].startswith(SESSION_COOKIE + "=")
    assert "httponly" in parts and "samesite=strict" in parts and "path=/" in parts
    token = parts[0].split("=", 1)[1]
    assert token not in r.text  # the session token travels only in the cookie
    me = client.get("/api/v1/session")
    assert me.status_code == 200 and me.json()["csrf"] == doc["csrf"]


def test_the_cookie_lives_as_long_as_the_session_may(console: Console) -> None:
    """A session used all shift long lasts `SESSION_MAX`: the browser must not drop its cookie
    before (it did at the idle time, 8 h after sign-in however busy)."""
    _, r = sign_in(console, "sam")
    max_age = next(int(p.split("=", 1)[1]) for p in r.headers["set-cookie"].split("; ")
                   if p.lower().startswith("max-age="))
    assert max_age >= ca.SESSION_MAX.total_seconds()


def test_a_wrong_password_is_refused_without_a_session(any_console: Console) -> None:
    client, r = sign_in(any_console, "sam", "not-sams-password")
    assert r.status_code == 401
    assert r.json() == {"code": "auth.failed", "message": "user name or password is wrong"}
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    assert client.get("/api/v1/session").status_code == 401
    _, nobody = sign_in(any_console, "nobody", "not-sams-password")
    assert nobody.json() == r.json()  # an unknown user looks the same


def test_sign_in_throttle_answers_429_with_retry_after(any_console: Console) -> None:
    for _ in range(ca.THROTTLE_FAILURES):
        _, r = sign_in(any_console, "quinn", "guessing-quinns-pw")
        assert r.status_code == 401, r.text
    _, r = sign_in(any_console, "quinn", "guessing-quinns-pw")
    assert r.status_code == 429 and r.json()["code"] == "auth.throttled"
    assert 1 <= int(r.headers["retry-after"]) <= 31
    assert "try again in" in r.json()["message"]
    _, right = sign_in(any_console, "quinn")
    assert right.status_code == 429  # the right password while locked
    assert SESSION_COOKIE not in right.headers.get("set-cookie", "")


def test_a_sign_in_from_another_site_is_refused(console: Console) -> None:
    _, r = sign_in(console, "sam", headers={"Origin": "https://attacker.example"})
    assert r.status_code == 403 and r.json()["code"] == "csrf.origin"
    assert SESSION_COOKIE not in r.headers.get("set-cookie", "")
    _, ok = sign_in(console, "sam", headers={"Origin": "http://testserver"})
    assert ok.status_code == 200


def test_a_one_time_password_says_it_must_change(console: Console) -> None:
    set_password(console.ledger, "vic", "a-one-time-pass-1", by="ada", one_time=True)
    client, r = sign_in(console, "vic", "a-one-time-pass-1")
    assert r.status_code == 200 and r.json()["must_change"] is True
    client.headers[CSRF_HEADER] = r.json()["csrf"]
    assert client.get("/api/v1/session").json()["must_change"] is True
    changed = client.post("/api/v1/session/password",
                          json={"current": "a-one-time-pass-1", "new": "vics-own-password"})
    assert changed.status_code == 204, changed.text
    assert client.get("/api/v1/session").json()["must_change"] is False


# --- sessions ----------------------------------------------------------------------------------


def test_sign_out_ends_the_session_on_the_server(console: Console) -> None:
    client = console.as_("sam")
    cookie = client.cookies[SESSION_COOKIE]
    assert client.delete("/api/v1/session").status_code == 204
    assert client.get("/api/v1/session").status_code == 401
    replay = console.anon()
    replay.cookies.set(SESSION_COOKIE, cookie)
    assert replay.get("/api/v1/session").status_code == 401


def test_a_removed_users_session_and_token_die(any_console: Console) -> None:
    c = any_console
    session = c.as_("vic")
    token = c.token("vic")
    bearer = c.anon()
    bearer.headers["Authorization"] = f"Bearer {token}"
    assert session.get("/api/v1/session").status_code == 200
    assert bearer.get("/api/v1/tokens").status_code == 200
    st = sign_statement(new_statement("user.remove", "vic", {}, user="ada"), c.keys["ada"])
    remove_user(c.ledger, c.plant, st, user="vic")
    assert session.get("/api/v1/session").status_code == 401
    assert bearer.get("/api/v1/tokens").status_code == 401
    assert sign_in(c, "vic")[1].status_code == 401


def test_an_expired_session_is_refused(console: Console) -> None:
    """The server's clock decides: a session whose last request is older than the idle time
    is gone (time moved by ageing the stored session)."""
    client = console.as_("sam")
    with console.ledger.transaction() as s:
        row = s.scalars(select(ca.ConsoleSession).where(ca.ConsoleSession.user_id == "sam")).one()
        row.last_seen = row.last_seen - ca.SESSION_IDLE - timedelta(seconds=5)
        row.created = row.created - ca.SESSION_IDLE - timedelta(seconds=5)
    r = client.get("/api/v1/session")
    assert r.status_code == 401 and r.json()["code"] == "auth.required"
    assert console.anon().get("/", follow_redirects=False).status_code == 303


# --- password change ---------------------------------------------------------------------------


def test_a_password_change_needs_the_current_password(any_console: Console) -> None:
    c = any_console
    mine, other = c.as_("sam"), c.as_("sam")
    r = mine.post("/api/v1/session/password",
                  json={"current": "not-the-current", "new": "sams-new-password"})
    assert r.status_code == 403 and r.json()["code"] == "auth.failed"
    assert r.json()["field"] == "body.current"
    weak = mine.post("/api/v1/session/password",
                     json={"current": password_of("sam"), "new": "short"})
    assert weak.status_code == 422 and weak.json()["field"] == "body.new"
    ok = mine.post("/api/v1/session/password",
                   json={"current": password_of("sam"), "new": "sams-new-password"})
    assert ok.status_code == 204, ok.text
    assert mine.get("/api/v1/session").status_code == 200  # this session goes on
    assert other.get("/api/v1/session").status_code == 401  # the others end
    assert sign_in(c, "sam")[1].status_code == 401
    assert sign_in(c, "sam", "sams-new-password")[1].status_code == 200
    with c.ledger.reader() as s:
        stored = s.get(ConsolePassword, "sam")
    assert stored is not None and stored.hash.startswith("$argon2id$")
    assert "sams-new-password" not in stored.hash
    assert PasswordHasher().verify(stored.hash, "sams-new-password")


def test_guessing_the_current_password_is_throttled(console: Console) -> None:
    """A stolen session or API token must not let anyone guess the password without limit:
    the change's wrong guesses count as failed sign-ins."""
    token = console.token("sam")
    client = console.anon()
    client.headers["Authorization"] = f"Bearer {token}"
    answers = [client.post("/api/v1/session/password",
                           json={"current": f"guess-number-{i}", "new": "sams-new-password"})
               for i in range(ca.THROTTLE_FAILURES + 1)]
    assert [a.status_code for a in answers[:-1]] == [403] * ca.THROTTLE_FAILURES
    assert answers[-1].status_code == 429 and answers[-1].json()["code"] == "auth.throttled"
    assert int(answers[-1].headers["retry-after"]) >= 1
    right = client.post("/api/v1/session/password",
                        json={"current": password_of("sam"), "new": "sams-new-password"})
    assert right.status_code == 429  # locked: even the right one
    assert sign_in(console, "sam")[1].status_code == 429  # and the sign-in with it


# --- API tokens --------------------------------------------------------------------------------


def test_a_token_is_shown_once_and_acts_as_its_user(any_console: Console) -> None:
    c = any_console
    sam = c.as_("sam")
    made = sam.post("/api/v1/tokens", json={"name": "ict-31 interlock"})
    assert made.status_code == 201, made.text
    secret = made.json()["token"]
    listed = sam.get("/api/v1/tokens")
    assert listed.status_code == 200
    assert secret not in listed.text and secret.split("_", 2)[2] not in listed.text
    assert all("token" not in t for t in listed.json())
    bearer = c.anon()
    bearer.headers["Authorization"] = f"Bearer {secret}"
    me = bearer.get("/api/v1/session").json()
    assert (me["user"], me["role"], me["via"]) == ("sam", "supervisor",
                                                   f"token:{made.json()['id']}")
    assert "csrf" not in me
    assert bearer.get("/api/v1/audit").status_code == 200  # a supervisor may
    # an admin's token for a viewer acts as the viewer
    ada = c.as_("ada")
    for_vic = ada.post("/api/v1/tokens", json={"name": "station", "user": "vic"})
    assert for_vic.status_code == 201 and for_vic.json()["user"] == "vic"
    station = c.anon()
    station.headers["Authorization"] = f"Bearer {for_vic.json()['token']}"
    assert station.get("/api/v1/audit").json()["code"] == "role.forbidden"
    # not a supervisor's to make for someone else
    r = sam.post("/api/v1/tokens", json={"name": "x", "user": "vic"})
    assert r.status_code == 403 and r.json()["code"] == "role.forbidden"
    assert r.json()["field"] == "body.user"
    r = ada.post("/api/v1/tokens", json={"name": "x", "user": "nobody"})
    assert r.status_code == 404 and r.json()["field"] == "body.user"
    # nor an admin's for someone who may act: the console attests a token's actions as its
    # user's statements (two quality users' tokens would be a two-person release by one)
    for who in ("sam", "quinn"):
        r = ada.post("/api/v1/tokens", json={"name": "x", "user": who})
        assert r.status_code == 403 and r.json()["code"] == "token.forbidden", r.text
        assert r.json()["field"] == "body.user"


def test_a_revoked_token_answers_401_and_only_owner_or_admin_revoke(
        any_console: Console) -> None:
    c = any_console
    sam = c.as_("sam")
    made = sam.post("/api/v1/tokens", json={"name": "script"}).json()
    bearer = c.anon()
    bearer.headers["Authorization"] = f"Bearer {made['token']}"
    assert bearer.get("/api/v1/tokens").status_code == 200
    theirs = c.as_("vic").delete(f"/api/v1/tokens/{made['id']}")
    assert theirs.status_code == 404 and theirs.json()["code"] == "token.unknown"
    quinn_token = c.anon()
    quinn_token.headers["Authorization"] = f"Bearer {c.token('quinn')}"
    assert quinn_token.delete(f"/api/v1/tokens/{made['id']}").status_code == 404
    assert bearer.get("/api/v1/tokens").status_code == 200  # still works
    assert c.as_("vic").get("/api/v1/tokens").json() == []  # nor listed to others
    revoked = sam.delete(f"/api/v1/tokens/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked"]
    r = bearer.get("/api/v1/tokens")
    assert r.status_code == 401 and r.json()["code"] == "auth.required"
    # an admin revokes anyone's
    other = c.as_("vic").post("/api/v1/tokens", json={"name": "vic's"}).json()
    assert c.as_("ada").delete(f"/api/v1/tokens/{other['id']}").status_code == 200
    gone = c.anon()
    gone.headers["Authorization"] = f"Bearer {other['token']}"
    assert gone.get("/api/v1/session").status_code == 401


# --- the audit ---------------------------------------------------------------------------------


def test_every_change_is_audited_refusals_included(any_console: Console) -> None:
    c = any_console
    anon = c.anon()
    assert anon.post("/api/v1/tokens", json={"name": "x"}).status_code == 401
    vic = c.as_("vic")
    assert vic.post("/api/v1/tokens", json={"name": "x", "user": "sam"}).status_code == 403
    no_csrf = c.as_("vic", csrf=False)
    assert no_csrf.post("/api/v1/tokens", json={"name": "y"}).json()["code"] == "csrf.missing"
    assert vic.post("/api/v1/tokens", json={"name": ""}).status_code == 422
    token = c.token("quinn", "quinn's script")
    bearer = c.anon()
    bearer.headers["Authorization"] = f"Bearer {token}"
    assert bearer.delete("/api/v1/tokens/000000000000").status_code == 404
    assert sign_in(c, "rae", "rae-wrong-password")[1].status_code == 401
    vic.get("/api/v1/tokens")  # a read: not audited
    entries = audit_of(c)
    seen = [(e["user"], e["via"], e["method"], e["path"], e["status"], e["detail"].get("code"))
            for e in reversed(entries)]
    token_id = token.split("_")[1]
    wanted = [
        (None, "anonymous", "POST", "/api/v1/tokens", 401, "auth.required"),
        ("vic", "session", "POST", "/api/v1/session", 200, None),
        ("vic", "session", "POST", "/api/v1/tokens", 403, "role.forbidden"),
        ("vic", "session", "POST", "/api/v1/session", 200, None),
        ("vic", "session", "POST", "/api/v1/tokens", 403, "csrf.missing"),
        ("vic", "session", "POST", "/api/v1/tokens", 422, "request.invalid"),
        ("quinn", "session", "POST", "/api/v1/session", 200, None),
        ("quinn", "session", "POST", "/api/v1/tokens", 201, None),
        ("quinn", f"token:{token_id}", "DELETE", "/api/v1/tokens/000000000000", 404,
         "token.unknown"),
        (None, "anonymous", "POST", "/api/v1/session", 401, "auth.failed"),
    ]
    assert seen[-len(wanted):] == wanted
    assert all(e["method"] != "GET" for e in entries)
    failed = entries[0]
    assert failed["detail"]["user"] == "rae" and failed["client"]
    text = str(entries)
    for user in ("rae", "vic", "quinn", "sam"):
        assert password_of(user) not in text
    assert "rae-wrong-password" not in text and token.split("_", 2)[2] not in text
    assert [e["user"] for e in audit_of(c, user="quinn")] == ["quinn"] * 3


def test_the_audit_is_for_supervisors_quality_and_admins(console: Console) -> None:
    r = console.as_("vic").get("/api/v1/audit")
    assert r.status_code == 403 and r.json()["code"] == "role.forbidden"
    for user in ("sam", "quinn", "ada"):
        assert console.as_(user).get("/api/v1/audit").status_code == 200
    assert console.anon().get("/api/v1/audit").status_code == 401


# --- reads do not wait for the worker's write lock ------------------------------------------------


def test_a_signed_in_read_does_not_wait_for_the_write_lock(console: Console) -> None:
    """On SQLite the worker holds the write lock while it stores a batch: checking a session
    or a token must not queue behind it (it took a write transaction on every request)."""
    import sqlite3
    import threading

    session = console.as_("sam")
    bearer = console.anon()
    bearer.headers["Authorization"] = f"Bearer {console.token('sam')}"
    assert bearer.get("/api/v1/session").status_code == 200  # first use recorded
    path = console.ledger.url.split("sqlite:///", 1)[1]
    worker = sqlite3.connect(path, isolation_level=None, timeout=60)
    worker.execute("BEGIN IMMEDIATE")  # the worker's batch, in progress
    answers: list[int] = []
    try:
        def ask() -> None:
            answers.append(session.get("/api/v1/session").status_code)
            answers.append(bearer.get("/api/v1/tokens").status_code)

        asking = threading.Thread(target=ask, daemon=True)
        asking.start()
        asking.join(timeout=20)
        waited = asking.is_alive()
    finally:
        worker.execute("ROLLBACK")
        worker.close()
    asking.join(timeout=70)
    assert not waited, "a signed-in GET waited for the write lock"
    assert answers == [200, 200]


def test_the_configured_idle_time_ends_sessions(tmp_path: Path) -> None:
    """`ConsoleConfig.session_idle` is the plant's choice: the server ends sessions by it (it
    ended them only at the built-in 8 h)."""
    c = make_console(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path,
                     session_idle=timedelta(minutes=10))
    try:
        client = c.as_("sam")
        fresh = c.as_("vic")
        with c.ledger.transaction() as s:
            row = s.scalars(select(ca.ConsoleSession)
                            .where(ca.ConsoleSession.user_id == "sam")).one()
            row.last_seen = row.last_seen - timedelta(minutes=11)
        assert client.get("/api/v1/session").status_code == 401
        assert fresh.get("/api/v1/session").status_code == 200
        assert client.get("/", follow_redirects=False).status_code == 303
    finally:
        c.close()
        c.ledger.close()


def test_a_one_time_password_allows_nothing_but_choosing_your_own(console: Console) -> None:
    set_password(console.ledger, "vic", "one-time-pass-123", by="ada", one_time=True)
    c = console.anon()
    r = c.post("/api/v1/session", json={"user": "vic", "password": "one-time-pass-123"})
    assert r.status_code == 200 and r.json()["must_change"] is True
    c.headers["X-CSRF-Token"] = r.json()["csrf"]
    assert c.get("/api/v1/session").status_code == 200
    refused = c.get("/api/v1/alerts")
    assert refused.status_code == 403, refused.text
    assert refused.json()["code"] == "auth.password_change_required"
    assert "/api/v1/session/password" in refused.json()["message"]
    r = c.post("/api/v1/session/password",
               json={"current": "one-time-pass-123", "new": "vics-own-password-1"})
    assert r.status_code == 204, r.text
    assert c.get("/api/v1/alerts").status_code == 200
