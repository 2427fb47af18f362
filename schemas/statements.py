"""A person's signed statement: what a user approves, signed by the user's own Ed25519 key.

Holds, releases, dispositions, user administration and the operator's actions on alerts
(acknowledge, shelve, comment, out of service) are decided by people. linetrace
records each as a plant-signed system event (line.holds), and inside it carries the acting
user's statement: the exact bytes the user signed and the signature (`bodies.SignedStatement`).
So an auditor checks a person's approval against the person's enrolled public key, and not
even whoever holds the plant key and the database can forge it.

The statement is a small JSON object (`Statement`): the action, its target, the details that
matter (scope, reason, decision, role, ...), the client's request UUID (the idempotency key:
the system event's cause) and the wall-clock time. It is signed exactly as encoded here
(sorted keys, no whitespace); verification never re-encodes: it checks the signature over the
bytes carried, then decodes them.

The web console signs the same `Statement` for its signed-in user with its own key (a console
attestation, `linetrace.ledger.console_key.attest`): the bytes are the same, only the key
differs, and the ledger knows the key as a console's (`console.enrolled`), not the person's.

Pure: no database, no files. Who may sign what (roles, revoked keys, console keys) is the
ledger's business (`linetrace.ledger.users`).
"""

from __future__ import annotations

import base64
import binascii
import re
import uuid
from datetime import UTC, datetime
from typing import Annotated, Literal

import msgspec
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from msgspec import Meta

from .bodies import SignedStatement
from .envelope import format_time
from .errors import SchemaError
from .signing import keyid_of

#: Every action a person can sign.
Action = Literal[
    "hold.place", "hold.release", "hold.disposition",
    "user.add", "user.role", "user.revoke", "user.remove",
    "alert.acknowledge", "alert.shelve", "alert.unshelve", "alert.comment",
    "alert.out_of_service", "alert.return_to_service",
]
ACTIONS: tuple[str, ...] = ("hold.place", "hold.release", "hold.disposition", "user.add",
                            "user.role", "user.revoke", "user.remove",
                            "alert.acknowledge", "alert.shelve", "alert.unshelve",
                            "alert.comment", "alert.out_of_service", "alert.return_to_service")
_USER = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\Z")


class Statement(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True):
    """What a user signs.

    - `action`: one of `ACTIONS`;
    - `target`: what it acts on (the hold id for a release, the held thing for a placement,
      the unit for a disposition, the user for user administration);
    - `details`: the decision's content, strings only (`scope`, `reason`, `decision`, `role`,
      `keyid`, `public_key`, ...), so the bytes say everything the system event records;
    - `request`: the client's request UUID, the idempotency key (the system event's cause);
    - `user`: who signs; `time`: when (RFC 3339 UTC, the signer's wall clock).
    """

    action: Action
    target: Annotated[str, Meta(min_length=1, max_length=128)]
    details: dict[str, str]
    request: str
    user: str
    time: str


class StatementError(SchemaError):
    """A statement that is not what it claims (bad bytes, bad signature, wrong signer)."""

    code = "statement.invalid"


def encode_statement(statement: Statement) -> bytes:
    """The exact bytes a user signs: compact JSON, keys sorted."""
    return msgspec.json.encode(statement, order="sorted")


def new_statement(action: str, target: str, details: dict[str, str], *, user: str,
                  request: str | None = None, time: datetime | None = None) -> Statement:
    """A statement for `user`, with a fresh request UUID and the wall clock unless given."""
    if action not in ACTIONS:
        raise StatementError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
    if not _USER.match(user):
        raise StatementError(f"user name {user!r} is not valid: 1-64 of a-z 0-9 . _ -")
    req = request or str(uuid.uuid4())
    try:
        uuid.UUID(req)
    except ValueError:
        raise StatementError(f"request {req!r} is not a UUID") from None
    return Statement(action=action, target=target, details=dict(sorted(details.items())),  # type: ignore[arg-type]
                     request=req, user=user, time=format_time(time or datetime.now(UTC)))


def sign_statement(statement: Statement, key: Ed25519PrivateKey) -> SignedStatement:
    """Sign `statement` with the user's own key (where the user is: the CLI, the console)."""
    data = encode_statement(statement)
    return SignedStatement(user=statement.user, keyid=keyid_of(key.public_key()),
                           statement=base64.b64encode(data).decode(),
                           signature=base64.b64encode(key.sign(data)).decode())


def statement_bytes(signed: SignedStatement) -> bytes:
    try:
        return base64.b64decode(signed.statement, validate=True)
    except (binascii.Error, ValueError):
        raise StatementError(f"statement of {signed.user} is not valid base64") from None


def read_statement(signed: SignedStatement) -> Statement:
    """Decode the signed bytes (no signature check: see `verify_statement`)."""
    try:
        st = msgspec.json.decode(statement_bytes(signed), type=Statement)
    except msgspec.ValidationError as e:
        raise StatementError(f"statement of {signed.user} is not a valid statement: {e}") from None
    except msgspec.DecodeError:
        raise StatementError(f"statement of {signed.user} is not JSON") from None
    if st.user != signed.user:
        raise StatementError(f"statement names user {st.user!r} but is carried as "
                             f"{signed.user!r}'s")
    return st


def verify_statement(signed: SignedStatement, public_key: Ed25519PublicKey, *,
                     action: str | None = None, target: str | None = None) -> Statement:
    """Check the signature with the user's enrolled `public_key`, and that the statement is
    the `action` on `target` the caller is about to record; returns the statement."""
    if keyid_of(public_key) != signed.keyid:
        raise StatementError(f"statement of {signed.user} is signed by key {signed.keyid}, not "
                             f"by the key given ({keyid_of(public_key)})")
    try:
        sig = base64.b64decode(signed.signature, validate=True)
        public_key.verify(sig, statement_bytes(signed))
    except (binascii.Error, ValueError, InvalidSignature):
        raise StatementError(f"the signature of {signed.user} (key {signed.keyid}) does not "
                             "verify: the statement was altered or signed by another key "
                             "(forged)") from None
    st = read_statement(signed)
    if action is not None and st.action != action:
        raise StatementError(f"{signed.user} signed {st.action!r}, not {action!r}")
    if target is not None and st.target != target:
        raise StatementError(f"{signed.user} signed {st.action} of {st.target!r}, not "
                             f"{target!r}")
    return st
