"""The acting person's key (LINETRACE_USER_KEY) and the statements the CLI signs with it.

Every command a person answers for (holds, releases, dispositions, user administration)
signs a statement with that person's own Ed25519 key where they are, here; the ledger checks
it against the key enrolled for them (`linetrace.ledger.users.verify_user_statement`).
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.db import Ledger
from linetrace.ledger.users import UserError, user_of_key
from linetrace.schemas import signing
from linetrace.schemas.bodies import SignedStatement
from linetrace.schemas.statements import new_statement, sign_statement

from .settings import ConfigurationError, Settings


def read_user_key(path: Path) -> Ed25519PrivateKey:
    """An Ed25519 private key (PEM) from `path`, or a ConfigurationError naming the setting."""
    try:
        return signing.load_private_key_pem(path.read_bytes())
    except OSError as e:
        raise ConfigurationError(f"cannot read LINETRACE_USER_KEY {path}: {e.strerror or e}; "
                                 "point it at your private key (PEM)") from None
    except (ValueError, TypeError) as e:
        raise ConfigurationError(f"LINETRACE_USER_KEY {path} is not an Ed25519 private key in "
                                 f"PEM ({e}); `linetrace users keygen --out FILE` makes one"
                                 ) from None


def acting_user_key(settings: Settings) -> Ed25519PrivateKey:
    """The private key of the person running the command (LINETRACE_USER_KEY)."""
    if settings.user_key is None:
        raise ConfigurationError(
            "LINETRACE_USER_KEY is not set: this command is signed by the person who runs it; "
            "set LINETRACE_USER_KEY to your private key (PEM) (`linetrace users keygen --out "
            "FILE` makes one, an admin enrols its FILE.pub)")
    return read_user_key(settings.user_key)


def sign_as(settings: Settings, ledger: Ledger, action: str, target: str,
            details: dict[str, str], request: str | None = None) -> SignedStatement:
    """A statement of `action` on `target`, signed with LINETRACE_USER_KEY by the user that key
    is enrolled for (a revoked key still signs: the ledger refuses it, saying so)."""
    key = acting_user_key(settings)
    keyid = signing.keyid_of(key.public_key())
    with ledger.reader() as session:
        user = user_of_key(session, keyid)
    if user is None:
        raise UserError(f"the key in LINETRACE_USER_KEY ({settings.user_key}, key id {keyid}) "
                        "is not enrolled for any user; an admin enrols it with `linetrace "
                        "users add NAME --role ROLE --public-key FILE.pub`", code="user.unknown")
    return sign_statement(new_statement(action, target, details, user=user, request=request),
                          key)
