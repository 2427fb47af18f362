"""People, enrolled like stations: their roles and keys, and the check of what they sign.

A person is a user name, a role (`ROLES`) and one or more Ed25519 public keys. Each change is
a plant-signed system event on line.holds (subject = the user) that carries the statement an
admin signed with their own key approving it: `user.enrolled`, `user.changed` (role),
`user.revoked` (one key) and `user.removed` (every key). The CLI records them here, directly
in the ledger, in one transaction (`record_system_event` also queues the outbox copy); the
projections below keep `users` and `user_keys`.

Every action a person takes (holds, releases, dispositions, user administration) reaches the
ledger as a `SignedStatement`; `verify_user_statement` accepts it only if its signer is an
enrolled, not removed user, the key is enrolled for that user and not revoked, the signature
verifies over the exact bytes carried, it is the action on the target being recorded, and the
user's role allows it.

A statement may instead be a *console attestation* (`console_key.attest`): it names the user
signed in to the web console and is signed by the console's own key, enrolled by a plant-signed
`console.enrolled` event and not revoked. It is accepted for that user on the same terms (an
enrolled, active user whose role allows the action), for hold and alert actions only
(`console_key.CONSOLE_ACTIONS`): user administration always needs an admin's own key. It proves
less than the person's own signature: the console vouches that the signed-in user acted, and
whoever holds the console's key could say so for anyone (docs/security.md "Console
attestations"; `hold_actions.release_hold(console_attested_quality=False)` refuses it for
quality releases).

The first admin: while no admin with a valid key exists, `users add` is accepted for the role
admin only, carrying the new user's own self-signed statement (it proves they hold the key
being enrolled); from then on every change needs an admin's statement, and a change that would
leave no admin with a valid key is refused. docs/security.md explains the trust boundary.

The cause of each event is the statement's request UUID (the idempotency key): the same
request again returns the event recorded for it. Its time is the wall clock.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event, deterministic_id
from linetrace.schemas.envelope import format_time
from linetrace.schemas.statements import Statement, StatementError, read_statement
from linetrace.schemas.statements import verify_statement

from .console_key import CONSOLE_ACTIONS, ConsoleKey, console_keyids
from .db import Ledger
from .errors import LedgerError
from .models import EventRow, StationKey, User, UserKey

ROLES: tuple[str, ...] = ("viewer", "supervisor", "quality", "admin")

#: What each action is, in words, for the messages that refuse it.
_DOING = {
    "hold.place": "placing a hold",
    "hold.release": "releasing a hold",
    "hold.disposition": "deciding a disposition",
    "user.add": "enrolling a user",
    "user.role": "changing a user's role",
    "user.revoke": "revoking a user's key",
    "user.remove": "removing a user",
    "alert.acknowledge": "acknowledging an alert",
    "alert.shelve": "shelving an alert",
    "alert.unshelve": "unshelving an alert",
    "alert.comment": "commenting on an alert",
    "alert.out_of_service": "taking an alert out of service",
    "alert.return_to_service": "returning an alert to service",
}


class UserError(LedgerError):
    """A person's statement or a user change that linetrace refuses.

    Codes: `user.unknown` (no such user, or no such key of theirs), `user.forbidden` (their
    role does not allow it, they were removed, or it would leave no admin) and
    `statement.invalid` (the signature does not verify against the user's enrolled key, the
    key was revoked, or the statement is not the action being recorded)."""

    code = "user.unknown"


def _aware(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _either(roles: Collection[str]) -> str:
    ordered = [r for r in ROLES if r in roles] + sorted(set(roles) - set(ROLES))
    return ordered[0] if len(ordered) == 1 else f"{', '.join(ordered[:-1])} or {ordered[-1]}"


# --- reading ---------------------------------------------------------------------------------


def user_role(session: Session, user: str) -> str | None:
    """The role of an enrolled user who was not removed; None otherwise."""
    row = session.get(User, user)
    return row.role if row is not None and row.state == "active" else None


def admins_with_valid_key(session: Session) -> list[str]:
    """Active admins holding at least one key that is not revoked."""
    return list(session.scalars(
        select(User.user_id).join(UserKey, UserKey.user_id == User.user_id)
        .where(User.role == "admin", User.state == "active", UserKey.revoked_at.is_(None))
        .group_by(User.user_id).order_by(User.user_id)))


def list_users(session: Session) -> list[dict[str, object]]:
    """Every user ever enrolled: `{user, role, state, keyids, enrolled, revoked_keyids}`;
    `keyids` are the keys whose statements are accepted (none once removed)."""
    keys: dict[str, list[UserKey]] = {}
    for k in session.scalars(select(UserKey).order_by(UserKey.enrolled_at, UserKey.keyid)):
        keys.setdefault(k.user_id, []).append(k)
    return [{"user": u.user_id, "role": u.role, "state": u.state,
             "keyids": [k.keyid for k in keys.get(u.user_id, []) if k.revoked_at is None],
             "enrolled": format_time(_aware(u.enrolled_at)),
             "revoked_keyids": [k.keyid for k in keys.get(u.user_id, [])
                                if k.revoked_at is not None]}
            for u in session.scalars(select(User).order_by(User.user_id))]


def user_of_key(session: Session, keyid: str) -> str | None:
    """The user a key was enrolled for (revoked or not)."""
    key = session.get(UserKey, keyid)
    return key.user_id if key is not None else None


# --- checking a statement --------------------------------------------------------------------


def _checked(signed: b.SignedStatement, public_key: Ed25519PublicKey, action: str,
             target: str) -> Statement:
    try:
        return verify_statement(signed, public_key, action=action, target=target)
    except StatementError as e:
        if "does not verify" in e.message:
            raise UserError(
                f"the statement carried as {signed.user}'s does not verify against "
                f"{signed.user}'s enrolled key {signed.keyid}: it was altered or signed by "
                "another key (forged); refused", code="statement.invalid") from None
        raise UserError(f"refused: {e.message}", code="statement.invalid") from None


def verify_user_statement(session: Session, signed: b.SignedStatement, *, action: str,
                          target: str, roles: Collection[str]) -> Statement:
    """The statement, if an enrolled, active user signed `action` on `target` with a valid
    key of theirs and their role is one of `roles`; else a `UserError`."""
    user = session.get(User, signed.user)
    if user is None:
        raise UserError(f"user {signed.user} is not enrolled; an admin enrols them with "
                        f"`linetrace users add {signed.user} --role ROLE --public-key FILE`",
                        code="user.unknown")
    if user.state != "active":
        raise UserError(f"user {signed.user} was removed; their statements are refused",
                        code="user.forbidden")
    key = session.get(UserKey, signed.keyid)
    if key is None:
        console = session.get(ConsoleKey, signed.keyid)
        if console is not None:
            return _console_attested(session, signed, console, user, action=action,
                                     target=target, roles=roles)
    if key is None or key.user_id != signed.user:
        raise UserError(f"key {signed.keyid} is not an enrolled key of {signed.user}; "
                        f"`linetrace users list` shows their keys", code="statement.invalid")
    if key.revoked_at is not None:
        raise UserError(f"key {signed.keyid} of {signed.user} was revoked at "
                        f"{format_time(_aware(key.revoked_at))}; statements it signs are "
                        "refused: sign with a current key", code="statement.invalid")
    st = _checked(signed, signing.load_public_key(key.public_key), action, target)
    if user.role not in roles:
        raise UserError(f"{_DOING.get(action, action)} needs the {_either(roles)} role; "
                        f"{user.role} {signed.user} has {user.role}", code="user.forbidden")
    return st


def _console_attested(session: Session, signed: b.SignedStatement, console: ConsoleKey,
                      user: User, *, action: str, target: str, roles: Collection[str]
                      ) -> Statement:
    """A statement the console's key signed for the signed-in `user` (`console_key`): the
    console key is enrolled and not revoked, the action is one a console may attest, the
    signature verifies, and the user's role allows it."""
    if console.revoked_at is not None:
        raise UserError(f"console key {signed.keyid} ({console.name}) was revoked at "
                        f"{format_time(_aware(console.revoked_at))}; statements it signs are "
                        "refused: restart the console so it enrols a new key, or sign with your "
                        "own key", code="statement.invalid")
    if action not in CONSOLE_ACTIONS:
        raise UserError(f"{_DOING.get(action, action)} needs {signed.user}'s own key, not the "
                        f"console's attestation: run the `linetrace users` command with "
                        "LINETRACE_USER_KEY", code="user.forbidden")
    try:
        st = verify_statement(signed, signing.load_public_key(console.public_key),
                              action=action, target=target)
    except StatementError as e:
        raise UserError(f"refused: the console's attestation for {signed.user} does not stand: "
                        f"{e.message}", code="statement.invalid") from None
    if user.role not in roles:
        raise UserError(f"{_DOING.get(action, action)} needs the {_either(roles)} role; "
                        f"{signed.user} has {user.role}", code="user.forbidden")
    return st


# --- recording user changes ------------------------------------------------------------------


@dataclass(frozen=True)
class UserChange:
    """What a user command did: the event recorded for it (None when there was nothing to
    record) and whether this call recorded it."""

    event_type: str
    user: str
    event_id: str | None
    new: bool


def _recorded(session: Session, event_id: str) -> Event | None:
    row = session.execute(select(EventRow.value).where(
        EventRow.source == SYSTEM_SOURCE, EventRow.event_id == event_id)).scalar_one_or_none()
    return decode_stored_event(row) if row is not None else None


def _carried(event: Event) -> b.SignedStatement | None:
    st: object = getattr(event.body, "statement", None)
    return st if isinstance(st, b.SignedStatement) else None


def _check_details(st: Statement, expected: Mapping[str, str]) -> None:
    if st.details != dict(expected):
        raise UserError(f"{st.user}'s statement says {st.details}, not {dict(expected)}: sign "
                        "the change being recorded", code="statement.invalid")


def _record(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
            event_type: str, action: str, user: str, details: Mapping[str, str],
            check: Callable[[Session], bool], body: Callable[[], b.Body],
            verify: Callable[[Session], Statement] | None = None,
            now: datetime | None = None) -> UserChange:
    """Verify an admin's `signed` statement of `action` on `user`, then record `event_type`
    with cause = its request UUID; the same request again returns the recorded event.
    `check` refuses a change that may not happen, or returns False when there is nothing to
    record."""
    # Here, not at the top: writer and system_events import projections, which imports this.
    from .system_events import register_plant_key, signed_system_event
    from .writer import record_system_event

    now = now or datetime.now(UTC)
    request = read_statement(signed).request
    event_id = deterministic_id(event_type, user, request)
    with ledger.transaction() as session:
        done = _recorded(session, event_id)
        if done is not None:
            if _carried(done) != signed:
                raise UserError(f"request {request} was already recorded ({event_type} of "
                                f"{user}) with another statement; sign a new request",
                                code="statement.invalid")
            return UserChange(event_type, user, event_id, False)
        st = (verify(session) if verify is not None else verify_user_statement(
            session, signed, action=action, target=user, roles=("admin",)))
        _check_details(st, details)
        if not check(session):
            return UserChange(event_type, user, None, False)
        register_plant_key(session, plant, now)
        cand = signed_system_event(event_type, user, body(), time=now, cause_id=request,
                                   plant_key=plant)
        record_system_event(session, cand)
        return UserChange(event_type, user, event_id, True)


def _keep_an_admin(session: Session, user: str, after: Callable[[str], bool]) -> None:
    """Refuse a change to `user` that leaves no admin with a valid key (`after(user)`: whether
    `user` still is one after the change)."""
    left = [a for a in admins_with_valid_key(session) if a != user or after(a)]
    if not left:
        raise UserError(f"{user} is the last admin with a valid key; enrol another admin first "
                        "(`linetrace users add NAME --role admin --public-key FILE`)",
                        code="user.forbidden")


def enroll_user(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
                user: str, role: str, public_key: Ed25519PublicKey,
                now: datetime | None = None) -> UserChange:
    """Record `user.enrolled`: `user` with `role` and this key (a further key of a user who has
    one: same role). Approved by an admin's statement, or, while no admin with a valid key
    exists, by the new admin's own statement signed with the key being enrolled."""
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}", code="user.forbidden")
    keyid = signing.keyid_of(public_key)
    pub = signing.public_key_b64(public_key)
    details = {"role": role, "public_key": pub, "keyid": keyid}

    def verify(session: Session) -> Statement:
        if admins_with_valid_key(session):
            return verify_user_statement(session, signed, action="user.add", target=user,
                                         roles=("admin",))
        if role != "admin":  # bootstrap: the first admin enrols themselves
            raise UserError(f"no admin is enrolled yet: enrol the first admin (`linetrace users "
                            f"add NAME --role admin --public-key FILE`, signed with that "
                            f"admin's own key) before a {role}", code="user.forbidden")
        if signed.user != user or signed.keyid != keyid:
            raise UserError(f"no admin is enrolled yet: the first admin's enrolment must be "
                            f"signed by {user}'s own key {keyid} (LINETRACE_USER_KEY), not by "
                            f"{signed.user}'s key {signed.keyid}", code="user.forbidden")
        return _checked(signed, public_key, "user.add", user)

    def check(session: Session) -> bool:
        row = session.get(User, user)
        if row is not None and row.state != "active":
            raise UserError(f"user {user} was removed; enrol the person under a new name",
                            code="user.forbidden")
        if row is not None and row.role != role:
            raise UserError(f"{user} is enrolled as {row.role}; change a role with `linetrace "
                            f"users role {user} --role {role}`", code="user.forbidden")
        if session.get(StationKey, keyid) is not None or keyid in console_keyids(session,
                                                                               revoked=True):
            raise UserError(f"key {keyid} is a station's or the console's key; each person "
                            "generates their own (`linetrace users keygen`)",
                            code="user.forbidden")
        key = session.get(UserKey, keyid)
        if key is not None and key.user_id != user:
            raise UserError(f"key {keyid} is already enrolled for {key.user_id}; each person "
                            "generates their own (`linetrace users keygen`)",
                            code="user.forbidden")
        if key is not None and key.revoked_at is not None:
            raise UserError(f"key {keyid} of {user} was revoked and cannot be enrolled again; "
                            "generate a new one (`linetrace users keygen`)",
                            code="user.forbidden")
        return key is None  # that key already enrolled for this user: nothing to record

    return _record(ledger, plant, signed, event_type="user.enrolled", action="user.add",
                   user=user, details=details, check=check, verify=verify, now=now,
                   body=lambda: b.UserEnrolled(user=user, role=role,  # type: ignore[arg-type]
                                               public_key=pub, keyid=keyid, statement=signed))


def _active(session: Session, user: str) -> User:
    row = session.get(User, user)
    if row is None:
        raise UserError(f"user {user} is not enrolled; `linetrace users list` shows who is",
                        code="user.unknown")
    return row


def change_role(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
                user: str, role: str, now: datetime | None = None) -> UserChange:
    """Record `user.changed`: `user` now has `role` (an admin's statement)."""
    if role not in ROLES:
        raise UserError(f"role {role!r} is not one of {', '.join(ROLES)}", code="user.forbidden")

    def check(session: Session) -> bool:
        row = _active(session, user)
        if row.state != "active":
            raise UserError(f"user {user} was removed; their role cannot change",
                            code="user.forbidden")
        _keep_an_admin(session, user, lambda _: role == "admin")
        return row.role != role

    return _record(ledger, plant, signed, event_type="user.changed", action="user.role",
                   user=user, details={"role": role}, check=check, now=now,
                   body=lambda: b.UserRoleChanged(user=user, role=role,  # type: ignore[arg-type]
                                                  statement=signed))


def revoke_user_key(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
                    user: str, keyid: str, now: datetime | None = None) -> UserChange:
    """Record `user.revoked`: statements signed by `keyid` are refused from now on."""

    def check(session: Session) -> bool:
        _active(session, user)
        key = session.get(UserKey, keyid)
        if key is None or key.user_id != user:
            raise UserError(f"{user} has no enrolled key {keyid}; `linetrace users list` shows "
                            "their keys", code="user.unknown")
        if key.revoked_at is not None:
            return False
        valid = session.scalar(select(func.count()).select_from(UserKey).where(
            UserKey.user_id == user, UserKey.revoked_at.is_(None), UserKey.keyid != keyid))
        _keep_an_admin(session, user, lambda _: bool(valid))
        return True

    return _record(ledger, plant, signed, event_type="user.revoked", action="user.revoke",
                   user=user, details={"keyid": keyid}, check=check, now=now,
                   body=lambda: b.UserKeyRevoked(user=user, keyid=keyid, statement=signed))


def remove_user(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
                user: str, now: datetime | None = None) -> UserChange:
    """Record `user.removed`: the user and every key of theirs are refused from now on."""

    def check(session: Session) -> bool:
        row = _active(session, user)
        if row.state != "active":
            return False
        _keep_an_admin(session, user, lambda _: False)
        return True

    return _record(ledger, plant, signed, event_type="user.removed", action="user.remove",
                   user=user, details={}, check=check, now=now,
                   body=lambda: b.UserRemoved(user=user, statement=signed))


# --- projections (registered in projections.PROJECTIONS) -------------------------------------

#: The event types `project_user_event` keeps `users` and `user_keys` for.
USER_PROJECTIONS: frozenset[str] = frozenset({"user.enrolled", "user.changed", "user.revoked",
                                              "user.removed"})



def project_user_event(session: Session, event: Event, t: datetime) -> None:
    """Keep `users` and `user_keys` as the `user.*` events leave them."""
    body = event.body
    if isinstance(body, b.UserEnrolled):
        row = session.get(User, body.user)
        if row is None:
            session.add(User(user_id=body.user, role=body.role, state="active",
                             enrolled_event=event.id, enrolled_at=t, updated=t))
        else:
            row.role, row.state, row.updated = body.role, "active", t
        if session.get(UserKey, body.keyid) is None:
            session.add(UserKey(keyid=body.keyid, user_id=body.user,
                                public_key=signing.raw_public_key(
                                    signing.load_public_key(body.public_key)),
                                enrolled_event=event.id, enrolled_at=t, revoked_at=None))
    elif isinstance(body, b.UserRoleChanged):
        row = session.get(User, body.user)
        if row is not None:
            row.role, row.updated = body.role, t
    elif isinstance(body, b.UserKeyRevoked):
        key = session.get(UserKey, body.keyid)
        if key is not None and key.revoked_at is None:
            key.revoked_at = t
    elif isinstance(body, b.UserRemoved):
        row = session.get(User, body.user)
        if row is not None:
            row.state, row.updated = "removed", t
        for key in session.scalars(select(UserKey).where(UserKey.user_id == body.user,
                                                         UserKey.revoked_at.is_(None))):
            key.revoked_at = t
    session.flush()
