"""The leaf format of the plant's Merkle log (LEDGER.md), shared by the log and the verifier.

A leaf is the RFC 8785 (JCS) encoding of
`{v: 1, value: base64(exact event bytes), keyid, signature: base64, unit_prev, src}` where
`unit_prev` is the hex leaf hash of the previous leaf of the same chain (same subject on the
same topic, e.g. one unit's events on line.events), or null for the first, and `src` is
`{topic, partition, offset}` for station events or `{cause: <id>}` for system events.
Keeping the station's exact signed bytes lets an auditor check who authored each event.
No database here: the offline verifier imports it.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import rfc8785

from linetrace.schemas.envelope import Event
from linetrace.schemas.topics import TOPIC_OF_TYPE

from .errors import LedgerError
from .merkle import HASH_SIZE

LEAF_VERSION = 1


class LeafMalformed(LedgerError):
    code = "leaf.malformed"


Src = Mapping[str, str | int | None]


@dataclass(frozen=True)
class Leaf:
    value: bytes
    keyid: str
    signature: bytes
    unit_prev: bytes | None
    src: Src

    def encode(self) -> bytes:
        """RFC 8785 bytes. Leaves hold only ASCII strings, integers and null, so the JCS form
        is written directly (5x faster than the general encoder, which the rare leaf with
        other characters still goes through; a test keeps the two identical)."""
        src = dict(self.src)
        doc: dict[str, Any] = {
            "keyid": self.keyid,
            "signature": base64.b64encode(self.signature).decode("ascii"),
            "src": src,
            "unit_prev": self.unit_prev.hex() if self.unit_prev is not None else None,
            "v": LEAF_VERSION,
            "value": base64.b64encode(self.value).decode("ascii"),
        }
        if not all(_plain(v) for v in (*doc.values(), *src.values())):
            return rfc8785.dumps(doc)
        inner = ",".join(f'"{k}":{_scalar(src[k])}' for k in sorted(src))
        return ("{" + ",".join(f'"{k}":' + ("{" + inner + "}" if k == "src" else _scalar(v))
                               for k, v in doc.items()) + "}").encode("ascii")


_PLAIN = re.compile(r"[\x20\x21\x23-\x5b\x5d-\x7e]*")  # printable ASCII, no quote or backslash


def _plain(v: object) -> bool:
    if isinstance(v, str):
        return _PLAIN.fullmatch(v) is not None
    if isinstance(v, bool):
        return False
    if isinstance(v, int):
        return abs(v) < 2**53  # JCS numbers are IEEE doubles
    return v is None or isinstance(v, dict)


def _scalar(v: object) -> str:
    return "null" if v is None else f'"{v}"' if isinstance(v, str) else str(v)


def station_src(topic: str, partition: int | None, offset: int | None) -> Src:
    return {"topic": topic, "partition": partition, "offset": offset}


def cause_src(cause: str) -> Src:
    return {"cause": cause}


def _b64(text: Any, what: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, TypeError, ValueError):
        raise LeafMalformed(f"leaf {what} is not base64") from None


def parse_leaf(data: bytes) -> Leaf:
    """Parse leaf bytes; they must be exactly the JCS encoding of a version-1 leaf."""
    try:
        doc = json.loads(data)
    except ValueError:
        raise LeafMalformed("leaf is not JSON") from None
    if not isinstance(doc, dict) or doc.get("v") != LEAF_VERSION or set(doc) != {
            "v", "value", "keyid", "signature", "unit_prev", "src"}:
        raise LeafMalformed("leaf does not have exactly the fields of a version-1 leaf")
    prev = doc["unit_prev"]
    try:
        unit_prev = bytes.fromhex(prev) if prev is not None else None
    except (TypeError, ValueError):
        unit_prev = b""
    if unit_prev is not None and len(unit_prev) != HASH_SIZE:
        raise LeafMalformed("leaf unit_prev is not null or a 64-digit hex hash")
    src = doc["src"]
    if not isinstance(src, dict) or set(src) not in ({"cause"}, {"topic", "partition", "offset"}):
        raise LeafMalformed("leaf src is neither {topic, partition, offset} nor {cause}")
    if not isinstance(doc["keyid"], str):
        raise LeafMalformed("leaf keyid is not a string")
    leaf = Leaf(_b64(doc["value"], "value"), doc["keyid"], _b64(doc["signature"], "signature"),
                unit_prev, src)
    if leaf.encode() != data:
        raise LeafMalformed("leaf bytes are not the canonical (RFC 8785) encoding of the leaf")
    return leaf


#: The chain of a unit's `burnin.verdict` leaves. A verdict is caused from `line.telemetry` (its
#: run's end), so where it would fall among the unit's `line.events` leaves depends on how far
#: each partition had been read; chained among themselves instead, verdicts never move another
#: leaf's `unit_prev`, and a seal over the unit's chain stays a function of its cause.
VERDICT_CHAIN = "line.events/burnin.verdict"


def chain_of(event: Event) -> tuple[str, str]:
    """The chain an event belongs to: (topic of its type, subject); a unit's burn-in
    verdicts form a chain of their own (`VERDICT_CHAIN`, subject)."""
    if event.type == "burnin.verdict":
        return VERDICT_CHAIN, event.subject
    return TOPIC_OF_TYPE.get(event.type, ""), event.subject
