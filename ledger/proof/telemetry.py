"""The burn-in telemetry commitment: what a `burnin.verdict` says about the raw telemetry.

Raw telemetry is not in the log (CONTRACTS.md: not leaf-bearing) and is pruned after a
retention period (docs/operations.md); each telemetry event's SHA-256 stays in the ledger
forever (`events.digest`). The verdict commits a unit's telemetry as

    commitment = SHA-256(d_1 || d_2 || ... || d_n),  d_i = SHA-256(exact signed bytes of event i)

over the unit's telemetry events in ledger order (`events.seq`), so anyone holding the
digests (or the raw events, while kept) can recompute it; no database code here.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from .errors import ProofError

DIGEST_SIZE = 32


def event_digest(value: bytes) -> bytes:
    """SHA-256 of one event's exact signed bytes (the Kafka value as the station sent it)."""
    return hashlib.sha256(value).digest()


def commitment(digests: Sequence[bytes]) -> bytes:
    """SHA-256 over the ordered per-event digests (32 bytes each; none is refused)."""
    h = hashlib.sha256()
    for i, d in enumerate(digests):
        if len(d) != DIGEST_SIZE:
            raise ProofError(f"telemetry digest {i} is {len(d)} bytes, not {DIGEST_SIZE}")
        h.update(d)
    return h.digest()


def commitment_of_events(values: Iterable[bytes]) -> bytes:
    """The same commitment computed from the raw events themselves, in order."""
    return commitment([event_digest(v) for v in values])
