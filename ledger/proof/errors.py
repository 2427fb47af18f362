"""Errors of the ledger room: its base `LedgerError`, and those of the Merkle math, signed notes
and checkpoints.

Each class carries a stable, machine-readable `code`: `linetrace verify` prints it next to the
failed check and exits non-zero, and the console returns it in HTTP error bodies, so auditors'
scripts can branch on it. Codes are part of the public contract; add new ones, never rename.
Each error is its own class so a caller can catch exactly the failure it can handle, and catch
`LedgerError` (or `NoteError`) for all of them.

`LedgerError` is defined here, in the proof package, because proof code may import nothing of
the ledger outside `linetrace.ledger.proof` (an import-linter contract); `linetrace.ledger.errors`
re-exports it for the rest of the room.
"""

from __future__ import annotations

from linetrace.schemas.errors import LinetraceError


class LedgerError(LinetraceError):
    """Base class of every error the `ledger` room raises on purpose."""

    code = "ledger.error"


# --- Merkle tree -------------------------------------------------------------------------------


class ProofError(LedgerError):
    """An inclusion or consistency proof does not prove what it claims: treat as tampering."""

    code = "proof.invalid"


class ProofRangeError(LedgerError):
    """A proof was requested for a leaf or tree size the tree does not have (a caller error)."""

    code = "proof.out_of_range"


class SubtreeMissing(LedgerError):
    """The store lacks a complete-subtree row it must have: it is incomplete or was edited."""

    code = "ledger.subtree_missing"


# --- Signed notes and checkpoints --------------------------------------------------------------


class NoteError(LedgerError):
    """Base class for signed-note failures; catching it covers checkpoints too."""

    code = "note.error"


class NoteMalformed(NoteError):
    """The text is not a well-formed C2SP signed note."""

    code = "note.malformed"


class VerifierKeyMalformed(NoteError):
    """A verifier key string is not `name+hex(keyid)+base64(0x01 || pubkey)`."""

    code = "note.bad_key"


class NoteUnknownKey(NoteError):
    """No signature on the note is by any key the verifier was given."""

    code = "note.unknown_key"


class NoteBadSignature(NoteError):
    """A signature names a known key but does not verify: the note was altered."""

    code = "note.bad_signature"


class CheckpointError(NoteError):
    """Base class for checkpoint failures after (or instead of) the note itself verifying."""

    code = "checkpoint.error"


class CheckpointMalformed(CheckpointError):
    """The note text is not a C2SP tlog-checkpoint body."""

    code = "checkpoint.malformed"


class CheckpointWrongOrigin(CheckpointError):
    """The checkpoint's origin line is not the name of the key it was verified with."""

    code = "checkpoint.wrong_origin"
