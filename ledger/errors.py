"""The ledger room's error base. `LedgerError` is defined in `linetrace.ledger.proof.errors`
(proof code may import nothing of the ledger outside its own package) and re-exported here for
the rest of the room; the errors of the Merkle math, notes and checkpoints live beside it.
Every other ledger error is defined next to the code that raises it, under `LedgerError`.
"""

from __future__ import annotations

from .proof.errors import LedgerError

__all__ = ["LedgerError"]
