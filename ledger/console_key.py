"""The web console's own key: its enrolment in the log, and its attestations.

The console (`linetrace console`) signs, with its own Ed25519 key (`<data dir>/keys/console.key`,
0600), a `Statement` for each action a signed-in user takes there: the statement names that
user, and the console's key signs it (`attest`). It is recorded like a person's own statement
(`hold_actions`, `alerts.actions`, `dispositions`), carried in the plant-signed event.

The key is enrolled in the log by a plant-signed `console.enrolled` system event on line.holds
(subject = the console's name; `enroll_console_key`, once per key id), and revoked by
`console.revoked`; the projection keeps `console_keys`. `users.verify_user_statement` and the
auditor's `proof.statements` accept a statement signed by an enrolled, not revoked console key
for the user it names, if that user is enrolled, active and has a role that allows the action,
and only for hold and alert actions (`CONSOLE_ACTIONS`): never user administration.

What a console attestation proves is weaker than a person's own signature: the console
vouches that the user it names was signed in (password or API token) and took the action.
Whoever holds the console key (the console's server) could make such a statement for any
user; a person's own key is with the person. So a plant that wants the strong guarantee for
quality releases sets `LINETRACE_QUALITY_RELEASE=user-keys` (`hold_actions.release_hold`'s
`console_attested_quality=False`): then a quality hold is released only with the quality
users' own keys (`linetrace hold release`). docs/security.md "Console attestations".
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import LargeBinary, String, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, deterministic_id
from linetrace.schemas.statements import new_statement, sign_statement

from .db import Ledger
from .errors import LedgerError
from .models import Base, EventRow, StationKey, UserKey

CONSOLE_KEY_FILE = "console.key"
#: The name a console is enrolled under unless told otherwise (the event's subject).
DEFAULT_CONSOLE_NAME = "console"
#: The actions a console may attest for a signed-in user: holds, dispositions and alerts.
#: User administration (`user.*`) always needs an admin's own key.
CONSOLE_ACTIONS: frozenset[str] = frozenset({
    "hold.place", "hold.release", "hold.disposition",
    "alert.acknowledge", "alert.shelve", "alert.unshelve", "alert.comment",
    "alert.out_of_service", "alert.return_to_service"})
#: The event types `project_console_event` keeps `console_keys` for.
CONSOLE_PROJECTIONS: frozenset[str] = frozenset({"console.enrolled", "console.revoked"})


class ConsoleKeyError(LedgerError):
    """A console key that cannot be enrolled or revoked (`console.key`), or an action a
    console may not attest (`console.forbidden`)."""

    code = "console.key"


class ConsoleKey(Base):
    """Every key the log enrolled for a console (`console.*` system events)."""

    __tablename__ = "console_keys"
    keyid: Mapped[str] = mapped_column(String(16), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    enrolled_event: Mapped[str] = mapped_column(String(36))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]


# --- the key file ----------------------------------------------------------------------------


def load_or_create_console_key(keys_dir: Path) -> tuple[Ed25519PrivateKey, bool]:
    """The console's private key (`keys_dir/console.key`), created (0600) if absent; returns
    (key, created). Written whole to a file of this call's own and linked into place, as the
    plant key is (`keys.load_or_create_plant_key`), so two consoles starting at once on a
    fresh data dir end up with one key."""
    from .keys import load_or_create_key  # keys imports the writer, which imports this

    return load_or_create_key(keys_dir, CONSOLE_KEY_FILE.removesuffix(".key"))


# --- enrolment -------------------------------------------------------------------------------


def _public(key: Ed25519PrivateKey | Ed25519PublicKey) -> Ed25519PublicKey:
    return key.public_key() if isinstance(key, Ed25519PrivateKey) else key


def enroll_console_key(ledger: Ledger, plant: Ed25519PrivateKey,
                       key: Ed25519PrivateKey | Ed25519PublicKey, *,
                       name: str = DEFAULT_CONSOLE_NAME, now: datetime | None = None) -> bool:
    """Record a plant-signed `console.enrolled` for this key, once per key id; True when this
    call recorded it. A key already enrolled under another console name, revoked, or enrolled
    for a person or a station is refused (`console.key`)."""
    # Here, not at the top: writer and system_events import projections, which imports this.
    from .system_events import register_plant_key, signed_system_event
    from .writer import record_system_event

    public = _public(key)
    keyid = signing.keyid_of(public)
    now = now or datetime.now(UTC)
    with ledger.transaction() as session:
        known = session.get(ConsoleKey, keyid)
        if known is not None:
            if known.revoked_at is not None:
                raise ConsoleKeyError(f"console key {keyid} was revoked and cannot be enrolled "
                                      f"again; remove keys/{CONSOLE_KEY_FILE} so the console "
                                      "makes a new one")
            if known.name != name:
                raise ConsoleKeyError(f"console key {keyid} is enrolled as console "
                                      f"{known.name!r}, not {name!r}")
            return False
        if session.get(UserKey, keyid) is not None or session.get(StationKey, keyid) is not None:
            raise ConsoleKeyError(f"key {keyid} is enrolled for a person or a station; the "
                                  f"console needs a key of its own (remove keys/"
                                  f"{CONSOLE_KEY_FILE} so the console makes one)")
        event_id = deterministic_id("console.enrolled", name, keyid)
        if session.scalar(select(EventRow.seq).where(EventRow.source == SYSTEM_SOURCE,
                                                     EventRow.event_id == event_id)) is not None:
            return False  # recorded, its projection not yet settled
        register_plant_key(session, plant, now)
        body = b.ConsoleEnrolled(name=name, public_key=signing.public_key_b64(public),
                                 keyid=keyid)
        record_system_event(session, signed_system_event(
            "console.enrolled", name, body, time=now, cause_id=keyid, plant_key=plant))
        return True


def revoke_console_key(ledger: Ledger, plant: Ed25519PrivateKey, keyid: str, *,
                       reason: str | None = None, now: datetime | None = None) -> bool:
    """Record a plant-signed `console.revoked`: statements signed by this console key are
    refused from now on (what it attested before stays valid at its position in the log).
    True when this call recorded it; an unknown key id is refused (`console.key`)."""
    from .system_events import register_plant_key, signed_system_event
    from .writer import record_system_event

    now = now or datetime.now(UTC)
    with ledger.transaction() as session:
        known = session.get(ConsoleKey, keyid)
        if known is None:
            raise ConsoleKeyError(f"no console key {keyid} is enrolled; "
                                  f"{', '.join(sorted(console_keyids(session))) or 'none is'} "
                                  "enrolled")
        if known.revoked_at is not None:
            return False
        register_plant_key(session, plant, now)
        body = b.ConsoleRevoked(name=known.name, keyid=keyid, reason=reason)
        record_system_event(session, signed_system_event(
            "console.revoked", known.name, body, time=now, cause_id=keyid, plant_key=plant))
        return True


# --- reading ---------------------------------------------------------------------------------


def console_keyids(session: Session, *, revoked: bool = False) -> set[str]:
    """The key ids of the enrolled, not revoked console keys (`revoked`: every one ever
    enrolled)."""
    q = select(ConsoleKey.keyid)
    if not revoked:
        q = q.where(ConsoleKey.revoked_at.is_(None))
    return set(session.scalars(q))


#: The name the console issue's plan uses for `console_keyids`.
console_keyid = console_keyids


def console_key_of(session: Session, keyid: str) -> ConsoleKey | None:
    """The console key with this id, revoked or not (None: not a console's key)."""
    return session.get(ConsoleKey, keyid)


def is_console_attested(session: Session, signed: b.SignedStatement) -> bool:
    """Whether `signed` was signed by a console's key (enrolled, revoked or not) rather than by
    a person's own key."""
    return session.get(ConsoleKey, signed.keyid) is not None


# --- attesting -------------------------------------------------------------------------------


def attest(key: Ed25519PrivateKey, action: str, target: str, details: dict[str, str], *,
           user: str, request: str | None = None) -> b.SignedStatement:
    """The console's attestation that signed-in `user` takes `action` on `target` with these
    `details`: a `Statement` naming `user` (request UUID `request`, fresh if None; the wall
    clock), signed by the console's key. The details are what the action records (as for a
    person's own statement: e.g. `{"reason": R}` for a release with a reason, `{"scope": S,
    "reason": R}` for a placement). User administration cannot be attested."""
    if action not in CONSOLE_ACTIONS:
        raise ConsoleKeyError(f"the console cannot attest {action}: it needs the person's own "
                              "key (`linetrace users ...` with LINETRACE_USER_KEY)",
                              code="console.forbidden")
    return sign_statement(new_statement(action, target, details, user=user, request=request),
                          key)


# --- projection (registered in projections.PROJECTIONS) --------------------------------------


def project_console_event(session: Session, event: Event, t: datetime) -> None:
    """Keep `console_keys` as the `console.*` events leave it."""
    body = event.body
    if isinstance(body, b.ConsoleEnrolled):
        if session.get(ConsoleKey, body.keyid) is None:
            session.add(ConsoleKey(keyid=body.keyid, name=body.name,
                                   public_key=signing.raw_public_key(
                                       signing.load_public_key(body.public_key)),
                                   enrolled_event=event.id, enrolled_at=t, revoked_at=None))
    elif isinstance(body, b.ConsoleRevoked):
        row = session.get(ConsoleKey, body.keyid)
        if row is not None and row.revoked_at is None:
            row.revoked_at = t
    session.flush()
