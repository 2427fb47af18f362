"""System events linetrace derives from accepted events, recorded in the same transaction."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy.orm import Session

from .records import Candidate


@dataclass(frozen=True)
class SystemContext:
    """What the writer needs to author system events: the plant key (and later, AVL data)."""

    plant_key: Ed25519PrivateKey


def derive(session: Session, stored: Sequence[Candidate], ctx: SystemContext | None) -> list[Candidate]:
    """System events caused by `stored` (e.g. material.checked, unit.sealed); none yet."""
    return []
