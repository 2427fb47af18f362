"""C2SP signed notes (c2sp.org/signed-note) and tlog checkpoints (c2sp.org/tlog-checkpoint).

Checkpoints use the format Certificate Transparency's successors, Go's sumdb and Sigstore
already read, so a customer's auditor or a third-party witness can check ours with existing
tools, and cosign them. Only Ed25519 keys (signature type 0x01) are supported.

A note is its text (UTF-8, newline-terminated), a blank line, then one line per signature:
`— <key name> <base64(4-byte key id || signature)>`. Signatures by keys the verifier does not
know are skipped, as C2SP requires (witness cosignatures ride along that way); a note with no
signature by any given key is rejected. The key name of a log's key is the log's origin, so
`open_checkpoint` also rejects a checkpoint whose origin line names another log.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import NamedTuple

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import (
    CheckpointMalformed,
    CheckpointWrongOrigin,
    NoteBadSignature,
    NoteMalformed,
    NoteUnknownKey,
    VerifierKeyMalformed,
)
from .merkle import HASH_SIZE

ALG_ED25519 = 0x01
SIGNATURE_PREFIX = "\u2014 "  # em dash + space
MAX_SIGNATURES = 100
"""More signature lines than this are rejected as malformed (same bound as Go's `note`)."""

_CONTROL = re.compile(r"[\x00-\x09\x0b-\x1f]")  # C0 controls other than newline
_SIZE = re.compile(r"0|[1-9][0-9]{0,19}")
_HEX8 = re.compile(r"[0-9a-fA-F]{8}")


def _valid_name(name: str) -> bool:
    """Key names: non-empty, no Unicode whitespace, no '+' (it separates the key string)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name) and (
        _CONTROL.search(name) is None
    )


def _b64decode(text: str, *, canonical: bool = True) -> bytes | None:
    """Padded standard base64, or None.

    Roots and keys must be canonical so a checkpoint has one spelling; signature lines are
    decoded as leniently as Go's `note` package does, so others' cosignatures never break ours.
    """
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        return None
    if canonical and base64.b64encode(raw).decode("ascii") != text:
        return None
    return raw


def key_id(name: str, public_key: bytes) -> bytes:
    """SHA-256(name || 0x0A || 0x01 || public key)[:4]: binds the name into the key id."""
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public_key).digest()[:4]


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass(frozen=True)
class VerifierKey:
    """A named Ed25519 public key, written `name+hex(keyid)+base64(0x01 || pubkey)`."""

    name: str
    key_id: bytes
    public_key: bytes

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise VerifierKeyMalformed(
                f"key name {self.name!r} is empty or contains '+' or whitespace; "
                "use the log's origin, e.g. plant.example/linetrace/v1"
            )
        if len(self.public_key) != 32:
            raise VerifierKeyMalformed("an Ed25519 public key is 32 bytes")
        if self.key_id != key_id(self.name, self.public_key):
            raise VerifierKeyMalformed(
                f"key id {self.key_id.hex()} does not match name {self.name!r} and its public "
                "key; the verifier key was mistyped or altered"
            )

    @classmethod
    def from_public_key(cls, name: str, public_key: Ed25519PublicKey | bytes) -> VerifierKey:
        raw = public_key if isinstance(public_key, bytes) else _raw_public(public_key)
        if len(raw) != 32:
            raise VerifierKeyMalformed("an Ed25519 public key is 32 bytes")
        return cls(name, key_id(name, raw), raw)

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse `name+hex(keyid)+base64(0x01 || pubkey)` (what `--key` takes)."""
        # The name cannot contain "+", the base64 key often does: split at the first two only.
        parts = text.strip().split("+", 2)
        if len(parts) != 3 or not _HEX8.fullmatch(parts[1]):
            raise VerifierKeyMalformed(
                "a verifier key looks like name+8 hex digits+base64, e.g. "
                "plant.example/linetrace/v1+c503d33e+ARNu...; copy it whole from the plant"
            )
        name, hex_id, b64 = parts
        raw = _b64decode(b64)
        if raw is None or len(raw) != 33 or raw[0] != ALG_ED25519:
            raise VerifierKeyMalformed(
                f"verifier key {name!r} does not carry a 0x01-prefixed 32-byte Ed25519 key; "
                "only Ed25519 keys are supported"
            )
        return cls(name, bytes.fromhex(hex_id), raw[1:])

    def __str__(self) -> str:
        key = base64.b64encode(bytes([ALG_ED25519]) + self.public_key).decode("ascii")
        return f"{self.name}+{self.key_id.hex()}+{key}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            return False
        return True


@dataclass(frozen=True)
class Signer:
    """A named Ed25519 private key. Never printed: the key is excluded from `repr`."""

    name: str
    private_key: Ed25519PrivateKey = field(repr=False)

    def __post_init__(self) -> None:
        if not _valid_name(self.name):
            raise VerifierKeyMalformed(
                f"key name {self.name!r} is empty or contains '+' or whitespace; "
                "use the log's origin, e.g. plant.example/linetrace/v1"
            )

    @property
    def verifier(self) -> VerifierKey:
        return VerifierKey.from_public_key(self.name, self.private_key.public_key())

    def sign(self, message: bytes) -> bytes:
        return self.private_key.sign(message)


def signer_from_seed(seed: bytes, name: str) -> Signer:
    """The signer for a 32-byte Ed25519 private seed (Ed25519 signing is deterministic)."""
    if len(seed) != 32:
        raise ValueError("an Ed25519 private seed is 32 bytes")
    return Signer(name, Ed25519PrivateKey.from_private_bytes(seed))


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteMalformed("note text must end with a newline")
    if _CONTROL.search(text):
        raise NoteMalformed("note text must not contain control characters other than newline")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise NoteMalformed("note text is not valid UTF-8") from None


def sign_note(text: str, signer: Signer) -> str:
    """The signed note: `text`, a blank line, and one signature line by `signer`."""
    _check_text(text)
    sig = signer.sign(text.encode("utf-8"))
    blob = base64.b64encode(signer.verifier.key_id + sig).decode("ascii")
    return f"{text}\n{SIGNATURE_PREFIX}{signer.name} {blob}\n"


class OpenedNote(NamedTuple):
    """A verified note: its text and the names of the given keys that signed it."""

    text: str
    signers: list[str]


def open_note(note: str | bytes, verifiers: Iterable[VerifierKey]) -> OpenedNote:
    """Verify `note` against `verifiers`; raise a `NoteError` subclass unless one has signed it.

    Every signature by a known key must verify (an altered note fails, whatever else signed
    it); signatures by unknown keys are ignored.
    """
    if isinstance(note, bytes):
        try:
            note = note.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteMalformed("signed note is not valid UTF-8") from None
    split = note.rfind("\n\n")
    if split < 0:
        raise NoteMalformed("signed note has no blank line before its signatures")
    text, block = note[: split + 1], note[split + 2 :]
    _check_text(text)
    if not block.endswith("\n"):
        raise NoteMalformed("signed note must end with a newline after its last signature")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteMalformed(f"signed note has more than {MAX_SIGNATURES} signatures")
    known = {(v.name, v.key_id): v for v in verifiers}
    message = text.encode("utf-8")
    signers: list[str] = []
    seen: set[tuple[str, bytes]] = set()
    for line in lines:
        if not line.startswith(SIGNATURE_PREFIX):
            raise NoteMalformed(
                f"signature line {line[:40]!r} does not start with an em dash and a space"
            )
        name, _, b64 = line[len(SIGNATURE_PREFIX) :].partition(" ")
        blob = _b64decode(b64, canonical=False)
        if not _valid_name(name) or blob is None or len(blob) < 5:
            raise NoteMalformed(f"signature line {line[:40]!r} is not `— name base64`")
        verifier = known.get((name, blob[:4]))
        if verifier is None or (name, blob[:4]) in seen:
            continue  # unknown keys are skipped (C2SP); a repeated signature adds nothing
        seen.add((name, blob[:4]))
        if not verifier.verify(message, blob[4:]):
            raise NoteBadSignature(
                f"the signature by {name} does not match the note text: the note was altered "
                "after signing (or signed by another key with the same name and key id)"
            )
        signers.append(name)
    if not signers:
        wanted = ", ".join(sorted(str(v) for v in known.values())) or "(none given)"
        raise NoteUnknownKey(
            f"the note carries no signature by the expected key {wanted}; check that --key "
            "is this log's verifier key"
        )
    return OpenedNote(text, signers)


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: origin (the log's name), tree size and root hash, plus extension lines."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin or _CONTROL.search(self.origin):
            raise CheckpointMalformed("checkpoint origin must be one non-empty line")
        if not 0 <= self.size < 1 << 64:
            raise CheckpointMalformed(f"checkpoint tree size {self.size} is out of range")
        if len(self.root) != HASH_SIZE:
            raise CheckpointMalformed(f"checkpoint root must be {HASH_SIZE} bytes")
        for ext in self.extensions:
            if not ext or "\n" in ext or _CONTROL.search(ext):
                raise CheckpointMalformed("checkpoint extension lines must be non-empty lines")

    def body(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each newline-ended."""
        root64 = base64.b64encode(self.root).decode("ascii")
        lines = (self.origin, str(self.size), root64, *self.extensions)
        return "".join(f"{line}\n" for line in lines)

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise CheckpointMalformed("checkpoint body must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise CheckpointMalformed("checkpoint body needs origin, tree size and root lines")
        origin, size, root64, *extensions = lines
        if not _SIZE.fullmatch(size):
            raise CheckpointMalformed(f"checkpoint tree size {size[:30]!r} is not a decimal number")
        root = _b64decode(root64)
        if root is None:
            raise CheckpointMalformed("checkpoint root line is not base64")
        return cls(origin, int(size), root, tuple(extensions))


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> str:
    """The signed checkpoint note. The key name must be the origin, so verifiers can match them."""
    if checkpoint.origin != signer.name:
        raise CheckpointWrongOrigin(
            f"checkpoint origin {checkpoint.origin!r} differs from the key name {signer.name!r}; "
            "sign each log's checkpoints with a key named after its origin"
        )
    return sign_note(checkpoint.body(), signer)


def open_checkpoint(note: str | bytes, verifier: VerifierKey) -> Checkpoint:
    """The checkpoint in `note`, if `verifier` signed it and it is for the verifier's log."""
    checkpoint = Checkpoint.parse(open_note(note, [verifier]).text)
    if checkpoint.origin != verifier.name:
        raise CheckpointWrongOrigin(
            f"checkpoint is for log {checkpoint.origin!r} but the key given is for "
            f"{verifier.name!r}; use that log's own verifier key"
        )
    return checkpoint
