"""The plant's Merkle log in SQL (LEDGER.md). Being written: see issue 5."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from .records import Candidate


def append_events(session: Session, stored: Sequence[Candidate]) -> None:
    """Append the leaf-bearing events among `stored` to the log, under the head lock."""
