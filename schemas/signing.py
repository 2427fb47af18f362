"""Ed25519 signatures over the exact value bytes, carried in Kafka headers (CONTRACTS.md)."""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from .errors import ForgedEvent, MalformedEvent

KEYID_HEADER = "linetrace-keyid"
SIGNATURE_HEADER = "linetrace-signature"
TRACEPARENT_HEADER = "traceparent"
CONTENT_TYPE_HEADER = "content-type"

Headers = list[tuple[str, bytes]]

#: Bounds on a record's Kafka headers (names are case-sensitive: `Linetrace-Signature` is not
#: `linetrace-signature`). Generous for tracing (W3C `baggage` may take 8 KiB) and for the
#: headers Kafka tooling adds; a record beyond them is dead-lettered, not read.
MAX_HEADERS = 64
MAX_HEADER_NAME_BYTES = 256
MAX_HEADER_VALUE_BYTES = 8192


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def keyid_of(public_key: bytes | Ed25519PublicKey) -> str:
    """Hex of the first 8 bytes of SHA-256 of the 32-byte raw public key."""
    raw = public_key if isinstance(public_key, bytes) else raw_public_key(public_key)
    if len(raw) != 32:
        raise ValueError("an Ed25519 public key is 32 bytes")
    return hashlib.sha256(raw).digest()[:8].hex()


def public_key_b64(key: Ed25519PublicKey) -> str:
    return base64.b64encode(raw_public_key(key)).decode()


def load_public_key(raw_or_b64: bytes | str) -> Ed25519PublicKey:
    raw = base64.b64decode(raw_or_b64, validate=True) if isinstance(raw_or_b64, str) else raw_or_b64
    return Ed25519PublicKey.from_public_bytes(raw)


def sign_value(value: bytes, key: Ed25519PrivateKey) -> Headers:
    """The signature headers for one value (what a station adds to its Kafka record)."""
    sig = key.sign(value)
    return [
        (KEYID_HEADER, keyid_of(key.public_key()).encode()),
        (SIGNATURE_HEADER, base64.b64encode(sig)),
    ]


def header(headers: Iterable[tuple[str, bytes]] | None, name: str) -> bytes | None:
    for k, v in headers or ():
        if k == name:
            return v
    return None


def check_headers(headers: Sequence[tuple[str, bytes]] | None) -> None:
    """MalformedEvent (`headers.too_many` / `headers.too_large`) beyond the header bounds."""
    items = headers or ()
    if len(items) > MAX_HEADERS:
        raise MalformedEvent(
            f"record carries {len(items)} headers; linetrace reads at most {MAX_HEADERS} "
            f"(it needs {KEYID_HEADER}, {SIGNATURE_HEADER}, {CONTENT_TYPE_HEADER} and optionally "
            f"{TRACEPARENT_HEADER})", code="headers.too_many")
    for name, value in items:
        size = len(name.encode("utf-8", "surrogateescape"))
        if size > MAX_HEADER_NAME_BYTES or len(value or b"") > MAX_HEADER_VALUE_BYTES:
            raise MalformedEvent(
                f"header {name[:64]!r} has a {size}-byte name and a {len(value or b'')}-byte "
                f"value; at most {MAX_HEADER_NAME_BYTES} and {MAX_HEADER_VALUE_BYTES} bytes",
                code="headers.too_large")


def read_signature(headers: Sequence[tuple[str, bytes]] | None) -> tuple[str, bytes]:
    """The (key id, signature) a record carries; ForgedEvent if absent, repeated or
    unreadable. Header names are matched exactly (case-sensitive)."""
    for name in (KEYID_HEADER, SIGNATURE_HEADER):
        count = sum(1 for k, _ in headers or () if k == name)
        if count > 1:
            raise ForgedEvent(
                f"record carries {count} {name} headers; exactly one of each signature header "
                "is allowed (which one signs would be ambiguous)", code="signature.ambiguous")
    kid = header(headers, KEYID_HEADER)
    sig = header(headers, SIGNATURE_HEADER)
    if kid is None or sig is None:
        raise ForgedEvent(
            f"record has no {KEYID_HEADER}/{SIGNATURE_HEADER} headers; sign the value bytes "
            "with the station's enrolled Ed25519 key (schemas/README.md)",
            code="signature.missing",
        )
    try:
        keyid = kid.decode("ascii")
        signature = base64.b64decode(sig, validate=True)
    except (UnicodeDecodeError, binascii.Error):
        raise ForgedEvent("signature headers are not hex / base64", code="signature.missing") from None
    if len(signature) != 64 or len(keyid) != 16:
        raise ForgedEvent("signature must be 64 bytes and key id 16 hex digits", code="signature.missing")
    return keyid, signature


def verify_value(value: bytes, signature: bytes, key: Ed25519PublicKey) -> None:
    try:
        key.verify(signature, value)
    except InvalidSignature:
        raise ForgedEvent(
            "Ed25519 signature does not match the value bytes (was the value re-serialised "
            "after signing?)",
            code="signature.invalid",
        ) from None


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key_pem(data: bytes) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(data, password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key")
    return key


def load_public_key_file(data: bytes) -> Ed25519PublicKey:
    """A public key as PEM, or as base64 of the 32 raw bytes (what `stations keygen` prints)."""
    text = data.strip()
    if text.startswith(b"-----BEGIN"):
        key = serialization.load_pem_public_key(text)
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return load_public_key(text.decode("ascii"))
