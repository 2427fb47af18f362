"""The console's sign-in material: passwords, sessions, API tokens, the sign-in throttle and the
audit of every state-changing request (issue 13; docs/console.md).

These are operational secrets, not facts about the line, so they live in tables of the ledger
database and never in the Merkle log. What people *decide* in the console (acknowledge, shelve,
place or release a hold) is recorded in the log as before, as a statement attested by the
console's key (`linetrace.ledger.console_key`).

- Passwords are argon2id hashes (argon2-cffi's defaults, re-hashed on sign-in when those
  change). A password set by an admin or by `linetrace up` is one-time: shown once, and the
  console asks for a new one at the first sign-in (`must_change`).
- Sessions: a random 256-bit token in an HttpOnly cookie; only its SHA-256 is stored, with a
  CSRF token, an idle timeout and an absolute lifetime. A removed user's sessions die with them.
- API tokens (`lt_<id>_<secret>`) act as the user they were made for, with that user's role at
  the time of each request; only their SHA-256 is stored; shown once; revocable. People make
  their own; an admin makes them for `viewer` users only (machines: stations, ERP), since what
  a token does is attested as its user's statement (one admin holding two quality users'
  tokens could otherwise release a quality hold alone).
- The throttle: failures are counted per user name and per client address in a sliding
  window; past `THROTTLE_FAILURES` for a name (`THROTTLE_CLIENT_FAILURES` for an address,
  which may be a whole floor behind NAT) each further failure locks that key for twice as
  long (30 s, 60 s, ... up to 15 min). A locked key is refused before its password is checked, so a
  guesser learns nothing while locked.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import Boolean, DateTime, Integer, String, Text, delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column

from .db import Ledger
from .errors import LedgerError
from .models import Base, User

SESSION_IDLE = timedelta(hours=8)  # a shift without a request ends the session
SESSION_MAX = timedelta(hours=12)  # and none lives longer than this
THROTTLE_WINDOW = timedelta(minutes=15)
THROTTLE_FAILURES = 5  # failures in the window before each further one locks the key
# One address may be a whole floor behind NAT or a proxy: it gets more tries than one name.
THROTTLE_CLIENT_FAILURES = 20
THROTTLE_BASE = timedelta(seconds=30)
THROTTLE_MAX = timedelta(minutes=15)
MIN_PASSWORD = 10
TOKEN_PREFIX = "lt_"

_argon2: Any = None  # argon2.PasswordHasher, made on first use (below)
_dummy: str | None = None


def _hasher() -> Any:
    """argon2-cffi's PasswordHasher, imported on first use: argon2-cffi is the `[console]`
    extra's, and this module's tables are part of every ledger (the worker and the auditor's
    base install import it without ever hashing a password)."""
    global _argon2
    if _argon2 is None:
        from argon2 import PasswordHasher

        _argon2 = PasswordHasher()
    return _argon2


def _dummy_hash() -> str:
    """A hash to verify against when the user has no password, so a wrong user name costs
    the same as a wrong password."""
    global _dummy
    if _dummy is None:
        _dummy = str(_hasher().hash(secrets.token_urlsafe(16)))
    return _dummy


class AuthError(LedgerError):
    """Sign-in refused, or a credential that is not (or no longer) valid."""

    code = "auth.failed"


class Throttled(AuthError):
    code = "auth.throttled"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConsolePassword(Base):
    __tablename__ = "console_passwords"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hash: Mapped[str] = mapped_column(String(256))
    must_change: Mapped[bool] = mapped_column(Boolean)
    set_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    set_by: Mapped[str] = mapped_column(String(64))


class ConsoleSession(Base):
    __tablename__ = "console_sessions"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    csrf: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    last_seen: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    client: Mapped[str] = mapped_column(String(128))


class ApiToken(Base):
    __tablename__ = "console_tokens"
    token_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), index=True)
    name: Mapped[str] = mapped_column(String(128))
    secret_hash: Mapped[str] = mapped_column(String(64))
    created: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    created_by: Mapped[str] = mapped_column(String(64))
    last_used: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    revoked_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SigninFailures(Base):
    __tablename__ = "console_signin_failures"
    key: Mapped[str] = mapped_column(String(200), primary_key=True)  # "user:NAME" / "client:ADDR"
    failures: Mapped[int] = mapped_column(Integer)
    first: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    locked_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class AuditEntry(Base):
    __tablename__ = "console_audit"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    time: Mapped[datetime] = mapped_column(DateTime(timezone=True), index=True)
    user_id: Mapped[str | None] = mapped_column(String(64), index=True)
    via: Mapped[str] = mapped_column(String(32))  # session, token:<id>, anonymous
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(512))
    status: Mapped[int] = mapped_column(Integer)
    client: Mapped[str] = mapped_column(String(128))
    detail: Mapped[str] = mapped_column(Text)  # JSON: the error code, the outcome's message


@dataclass(frozen=True)
class Principal:
    """Who is making a request: the user, their role now, and how they proved it."""

    user: str
    role: str
    via: str  # "session" or "token:<id>"
    csrf: str | None = None  # the session's CSRF token (None for API tokens)
    must_change: bool = False  # signed in with a one-time password not yet changed
    expires: datetime | None = None  # when the session ends at the latest

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"user": self.user, "role": self.role, "via": self.via,
                               "must_change": self.must_change}
        if self.csrf is not None:
            out["csrf"] = self.csrf
        if self.expires is not None:
            out["expires"] = _iso(self.expires)
        return out


def _now(now: datetime | None) -> datetime:
    return now or datetime.now(UTC)


def _aware(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t


def _iso(t: datetime) -> str:
    return _aware(t).astimezone(UTC).isoformat().replace("+00:00", "Z")


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _active_role(session: Session, user: str) -> str | None:
    u = session.get(User, user)
    return u.role if u is not None and u.state == "active" else None


def check_new_password(password: str, user: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"a password needs at least {MIN_PASSWORD} characters",
                        code="auth.weak_password")
    if password.strip().lower() == user.lower():
        raise AuthError("a password may not be the user name", code="auth.weak_password")


def new_one_time_password() -> str:
    """A password to show once (about 96 bits, no look-alike characters)."""
    alphabet = "abcdefghjkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    raw = "".join(secrets.choice(alphabet) for _ in range(16))
    return "-".join(raw[i:i + 4] for i in range(0, 16, 4))


def set_password(ledger: Ledger, user: str, password: str, *, by: str, one_time: bool,
                 now: datetime | None = None) -> None:
    """Set `user`'s console password (an enrolled, active user). `one_time`: the console
    asks for a new one at the first sign-in. Ends the user's sessions when set by someone
    else (a reset)."""
    check_new_password(password, user)
    digest = str(_hasher().hash(password))  # before the write transaction: it takes ~50 ms
    with ledger.transaction() as s:
        if _active_role(s, user) is None:
            raise AuthError(f"{user} is not an enrolled, active user: enrol them with "
                            "`linetrace users add` first", code="user.unknown")
        row = s.get(ConsolePassword, user)
        t = _now(now)
        if row is None:
            s.add(ConsolePassword(user_id=user, hash=digest, must_change=one_time, set_at=t,
                                  set_by=by))
        else:
            row.hash, row.must_change, row.set_at, row.set_by = digest, one_time, t, by
        if by != user:
            s.execute(delete(ConsoleSession).where(ConsoleSession.user_id == user))


def has_password(session: Session, user: str) -> bool:
    return session.get(ConsolePassword, user) is not None


def _locked(s: Session, keys: list[str], t: datetime) -> int:
    """Seconds until every key in `keys` is unlocked (0 = none locked)."""
    wait = 0
    for row in s.scalars(select(SigninFailures).where(SigninFailures.key.in_(keys))):
        if row.locked_until is not None and _aware(row.locked_until) > t:
            wait = max(wait, int((_aware(row.locked_until) - t).total_seconds()) + 1)
    return wait


def _fail(s: Session, keys: list[str], t: datetime) -> None:
    for key in keys:
        row = s.get(SigninFailures, key)
        if row is None or t - _aware(row.first) > THROTTLE_WINDOW:
            if row is not None:
                s.delete(row)
                s.flush()
            s.add(SigninFailures(key=key, failures=1, first=t, locked_until=None))
            continue
        row.failures += 1
        over = row.failures - (THROTTLE_CLIENT_FAILURES if key.startswith("client:")
                               else THROTTLE_FAILURES)
        if over > 0:
            lock = min(THROTTLE_BASE * (2 ** (over - 1)), THROTTLE_MAX)
            row.locked_until = t + lock


def _verify(digest: str | None, password: str) -> bool:
    """argon2id verify (~50 ms, on purpose): outside any write transaction, so a stream of
    sign-in attempts never holds the ledger's write lock (SQLite: the worker's batches)."""
    from argon2.exceptions import InvalidHashError, VerificationError

    try:
        return bool(_hasher().verify(digest if digest is not None else _dummy_hash(), password))
    except (VerificationError, InvalidHashError):  # VerifyMismatchError is a VerificationError
        return False


def _record_failure(ledger: Ledger, keys: list[str], t: datetime) -> int:
    """Count a failure against `keys`; seconds until they unlock (0: not locked). Two first
    failures at once (PostgreSQL) collide on the new row: the loser counts again."""
    for attempt in range(3):
        try:
            with ledger.transaction() as s:
                _fail(s, keys, t)
                return _locked(s, keys, t)
        except IntegrityError:
            if attempt == 2:
                raise
    return 0


def sign_in(ledger: Ledger, user: str, password: str, *, client: str,
            now: datetime | None = None) -> tuple[str, Principal]:
    """Check `user`'s password and open a session: returns the session token (for the cookie;
    never stored) and the principal. Refuses (`AuthError`, `Throttled`) saying why, without
    saying whether the user exists."""
    t = _now(now)
    keys = [f"user:{user.lower()[:64]}", f"client:{client[:120]}"]
    with ledger.reader() as s:
        wait = _locked(s, keys, t)
        row = s.get(ConsolePassword, user)
        digest = row.hash if row is not None else None
        role = _active_role(s, user)
    if wait:
        raise Throttled(f"too many failed sign-ins: try again in {wait} s (or ask an admin "
                        "to reset the password)", wait)
    if not _verify(digest, password) or digest is None or role is None:
        refused = _record_failure(ledger, keys, t)
        if refused > 0:
            raise Throttled(f"too many failed sign-ins: try again in {refused} s", refused)
        raise AuthError("user name or password is wrong")
    rehash = str(_hasher().hash(password)) if _hasher().check_needs_rehash(digest) else None
    with ledger.transaction() as s:
        row = s.get(ConsolePassword, user)
        role = _active_role(s, user)
        if row is None or role is None or row.hash != digest:  # changed meanwhile
            raise AuthError("user name or password is wrong")
        if rehash is not None:
            row.hash = rehash
        s.execute(delete(SigninFailures).where(SigninFailures.key == keys[0]))
        token = secrets.token_urlsafe(32)
        csrf = secrets.token_urlsafe(24)
        s.add(ConsoleSession(token_hash=_sha(token), user_id=user, csrf=csrf, created=t,
                             last_seen=t, client=client[:128]))
        return token, Principal(user, role, "session", csrf, row.must_change, t + SESSION_MAX)


def session_principal(ledger: Ledger, token: str, *, now: datetime | None = None,
                      idle: timedelta = SESSION_IDLE) -> Principal | None:
    """The principal of a live session, or None (unknown, `idle` too long, too old, or its
    user removed); touches the session."""
    t = _now(now)
    touch = min(30.0, idle.total_seconds() / 10)  # seconds between writes of last_seen
    # Most requests only read: no write transaction (on SQLite, the worker's write lock).
    with ledger.reader() as s:
        row = s.get(ConsoleSession, _sha(token))
        if row is None:
            return None
        role = _active_role(s, row.user_id)
        if (role is not None and t - _aware(row.created) <= SESSION_MAX
                and (t - _aware(row.last_seen)).total_seconds() <= touch):
            pw = s.get(ConsolePassword, row.user_id)
            return Principal(row.user_id, role, "session", row.csrf,
                             pw is not None and pw.must_change, _aware(row.created) + SESSION_MAX)
    with ledger.transaction() as s:
        row = s.get(ConsoleSession, _sha(token))
        if row is None:
            return None
        role = _active_role(s, row.user_id)
        expired = (t - _aware(row.last_seen) > idle
                   or t - _aware(row.created) > SESSION_MAX)
        if role is None or expired:
            s.delete(row)
            return None
        if (t - _aware(row.last_seen)).total_seconds() > touch:  # not a write per request
            row.last_seen = t
        pw = s.get(ConsolePassword, row.user_id)
        return Principal(row.user_id, role, "session", row.csrf,
                         pw is not None and pw.must_change, _aware(row.created) + SESSION_MAX)


def sign_out(ledger: Ledger, token: str) -> None:
    with ledger.transaction() as s:
        s.execute(delete(ConsoleSession).where(ConsoleSession.token_hash == _sha(token)))


def change_password(ledger: Ledger, user: str, current: str, new: str, *,
                    keep_session: str | None = None, now: datetime | None = None) -> None:
    """The user's own change: the current password must verify (a wrong one counts against
    the user in the sign-in throttle, so a stolen session or token cannot guess it without
    limit). Ends the user's other sessions (keeps `keep_session`, the one that asked)."""
    check_new_password(new, user)
    if hmac.compare_digest(current, new):
        raise AuthError("the new password must differ from the current one",
                        code="auth.weak_password")
    t = _now(now)
    keys = [f"user:{user.lower()[:64]}"]  # wrong guesses here count as failed sign-ins
    with ledger.reader() as s:
        wait = _locked(s, keys, t)
        row = s.get(ConsolePassword, user)
        digest = row.hash if row is not None else None
    if wait:
        raise Throttled(f"too many wrong passwords: try again in {wait} s", wait)
    if digest is None or not _verify(digest, current):
        refused = _record_failure(ledger, keys, t)
        if refused > 0:
            raise Throttled(f"too many wrong passwords: try again in {refused} s", refused)
        raise AuthError("the current password is wrong", code="auth.failed")
    new_digest = str(_hasher().hash(new))
    with ledger.transaction() as s:
        row = s.get(ConsolePassword, user)
        if row is None or row.hash != digest:
            raise AuthError("the password changed meanwhile: sign in again",
                            code="auth.failed")
        row.hash, row.must_change, row.set_at, row.set_by = new_digest, False, t, user
        q = delete(ConsoleSession).where(ConsoleSession.user_id == user)
        if keep_session is not None:
            q = q.where(ConsoleSession.token_hash != _sha(keep_session))
        s.execute(q)


def create_token(ledger: Ledger, user: str, name: str, *, by: str,
                 now: datetime | None = None) -> tuple[str, dict[str, Any]]:
    """A new API token acting as `user`: returns the secret (shown once, never stored) and
    the token's description."""
    name = name.strip()
    if not name or len(name) > 128:
        raise AuthError("a token needs a name of 1-128 characters (say what uses it)",
                        code="token.invalid")
    t = _now(now)
    with ledger.transaction() as s:
        role = _active_role(s, user)
        if role is None:
            raise AuthError(f"{user} is not an enrolled, active user", code="user.unknown")
        if by != user and role != "viewer":
            raise AuthError(f"{by} may not make a token that acts as {user} ({role}): the "
                            f"console attests what a token does as its user's statement, so "
                            f"{user} makes their own; an admin makes tokens only for viewer "
                            "(machine) users", code="token.forbidden")
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)
        row = ApiToken(token_id=token_id, user_id=user, name=name,
                       secret_hash=_sha(secret), created=t, created_by=by, last_used=None,
                       revoked_at=None)
        s.add(row)
        s.flush()
        return f"{TOKEN_PREFIX}{token_id}_{secret}", _token_json(row)


def _token_json(row: ApiToken) -> dict[str, Any]:
    return {"id": row.token_id, "user": row.user_id, "name": row.name,
            "created": _iso(row.created), "created_by": row.created_by,
            "last_used": _iso(row.last_used) if row.last_used else None,
            "revoked": _iso(row.revoked_at) if row.revoked_at else None}


def token_principal(ledger: Ledger, token: str, *, now: datetime | None = None
                    ) -> Principal | None:
    if not token.startswith(TOKEN_PREFIX):
        return None
    token_id, _, secret = token[len(TOKEN_PREFIX):].partition("_")
    if not token_id or not secret:
        return None
    t = _now(now)
    with ledger.reader() as s:  # most uses only read (see session_principal)
        row = s.get(ApiToken, token_id)
        if (row is None or row.revoked_at is not None
                or not hmac.compare_digest(row.secret_hash, _sha(secret))):
            return None
        role = _active_role(s, row.user_id)
        if role is None:
            return None
        if row.last_used is not None and (t - _aware(row.last_used)).total_seconds() <= 60:
            return Principal(row.user_id, role, f"token:{token_id}")
    with ledger.transaction() as s:
        row = s.get(ApiToken, token_id)
        if (row is None or row.revoked_at is not None
                or not hmac.compare_digest(row.secret_hash, _sha(secret))):
            return None
        role = _active_role(s, row.user_id)
        if role is None:
            return None
        if row.last_used is None or (t - _aware(row.last_used)).total_seconds() > 60:
            row.last_used = t
        return Principal(row.user_id, role, f"token:{token_id}")


def list_tokens(session: Session, user: str | None = None) -> list[dict[str, Any]]:
    q = select(ApiToken).order_by(ApiToken.created, ApiToken.token_id)
    if user is not None:
        q = q.where(ApiToken.user_id == user)
    return [_token_json(r) for r in session.scalars(q)]


def revoke_token(ledger: Ledger, token_id: str, *, by: str, admin: bool,
                 now: datetime | None = None) -> dict[str, Any]:
    """Revoke a token (its owner, or an admin); revoking twice is harmless."""
    with ledger.transaction() as s:
        row = s.get(ApiToken, token_id)
        if row is None or (not admin and row.user_id != by):
            raise AuthError(f"no token {token_id} of yours: `GET /api/v1/tokens` lists them",
                            code="token.unknown")
        if row.revoked_at is None:
            row.revoked_at = _now(now)
        return _token_json(row)


def audit(ledger: Ledger, *, user: str | None, via: str, method: str, path: str, status: int,
          client: str, detail: dict[str, Any] | None = None, now: datetime | None = None
          ) -> None:
    with ledger.transaction() as s:
        s.add(AuditEntry(time=_now(now), user_id=user, via=via[:32], method=method[:8],
                         path=path[:512], status=status, client=client[:128],
                         detail=json.dumps(detail or {}, sort_keys=True)))


def list_audit(session: Session, *, limit: int = 200, user: str | None = None,
               before: int | None = None) -> list[dict[str, Any]]:
    """The newest audit entries first."""
    q = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(max(1, min(limit, 1000)))
    if user is not None:
        q = q.where(AuditEntry.user_id == user)
    if before is not None:
        q = q.where(AuditEntry.id < before)
    return [{"id": r.id, "time": _iso(r.time), "user": r.user_id, "via": r.via,
             "method": r.method, "path": r.path, "status": r.status, "client": r.client,
             "detail": json.loads(r.detail)} for r in session.scalars(q)]


def users_with_password(session: Session) -> int:
    return int(session.scalar(select(func.count()).select_from(ConsolePassword)) or 0)
