"""How burn-in telemetry's bytes are stored: compressed, with their SHA-256 kept forever.

A unit's 72 h burn-in at 1 Hz with 8 GPUs is ~650 MB of raw events. Telemetry rows
(`line.telemetry`: burnin.telemetry, burnin.xid, burnin.run) stay rows of `events` (seq,
de-duplication by (source, id), the line clock and flags keep working), but their `value`
holds a compressed form and `digest` the SHA-256 of the exact signed bytes. Raw telemetry is
kept for a retention period (`linetrace telemetry prune`), after which `value` becomes a short
marker and the digest alone remains: the burn-in verdict commits the unit's telemetry as
`linetrace.ledger.proof.telemetry.commitment` over those digests, checkable forever.

Stored forms of `value` (the first byte tells them apart; a JSON event starts with `{`, or
with whitespace, never with NUL):

- raw: the event bytes themselves (every other topic, and telemetry written before this);
- `COMPRESSED` + raw DEFLATE (zlib level 6, preset dictionary `ZDICT_V1`) of the bytes;
- `PRUNED`: the bytes were dropped under the retention policy; `digest` remains.

Compression is deterministic for a given zlib build: the same event always gives the same
stored bytes. The format is versioned by its prefix, so a later dictionary gets a new prefix
and old rows still decode.
"""

from __future__ import annotations

import zlib
from typing import Any

from sqlalchemy import Dialect, LargeBinary
from sqlalchemy.types import TypeDecorator

from linetrace.schemas.topics import TELEMETRY

from .errors import LedgerError
from .proof.telemetry import event_digest

COMPRESSED = b"\x00LTz1"
PRUNED = b"\x00LTpruned"

#: A burn-in telemetry event with every field a sample may carry, in the encoder's order,
#: preceded by the keys of burnin.run and burnin.xid: the preset dictionary of format v1.
#: Frozen forever (rows compressed with it need it to decode); a new one needs a new prefix.
ZDICT_V1 = (
    b'{"phase":"start","sku":"inventory":[{"serial":"uuid":"board_pn":"driver":"vbios":'
    b'"thresholds":{"slowdown_c":"shutdown_c":"max_operating_c":"power_limit_w":'
    b'"xid":79,"recovery_action":"raw":"type":"burnin.run","type":"burnin.xid",'
    b'{"specversion":"1.0","id":"00000000-0000-0000-0000-000000000000","source":"burnin-01",'
    b'"type":"burnin.telemetry","time":"2026-05-04T08:00:00.000Z","subject":"SRV-000000",'
    b'"datacontenttype":"application/json",'
    b'"dataschema":"urn:linetrace:schema:burnin.telemetry:v1","stationseq":"1777881600000000",'
    b'"data":{"run_id":"00000000-0000-0000-0000-000000000001","samples":[{"gpu_index":0,'
    b'"gpu_serial":"1654123456789","gpu_uuid":"GPU-9a2c1f3e-7b4d-4e8a-b1c2-3d4e5f607182",'
    b'"temp_c":61.5,"mem_temp_c":72.5,"temp_margin_c":21.5,"power_w":652.5,'
    b'"sm_clock_mhz":1980.0,"mem_clock_mhz":2619.0,"util_pct":99.0,"clocks_event_reasons":1,'
    b'"ecc_sbe_vol":1,"ecc_dbe_vol":1,"remap_unc":1,"remap_pending":1,"remap_failed":1,'
    b'"pcie_replay":1,"pcie_gen":5,"pcie_width":16,"nvlink_crc":1,"nvlink_recovery":1,'
    b'"nvlink_links_up":18}]}}'
)
_LEVEL = 6
_WBITS = -15  # raw DEFLATE: no zlib header or Adler-32 (the digest is the integrity check)


class TelemetryPruned(LedgerError):
    """The raw bytes of a telemetry event were dropped under the retention policy."""

    code = "telemetry.pruned"


def digest(value: bytes) -> bytes:
    """SHA-256 of the exact signed event bytes (32 bytes): `proof.telemetry.event_digest`."""
    return event_digest(value)


def compress(value: bytes) -> bytes:
    c = zlib.compressobj(_LEVEL, zlib.DEFLATED, _WBITS, 9, zlib.Z_DEFAULT_STRATEGY, ZDICT_V1)
    return COMPRESSED + c.compress(value) + c.flush()


def decode(stored: bytes) -> bytes:
    """The event bytes of a stored value: raw and compressed rows give the exact original
    bytes; a pruned row gives `PRUNED` back (see `is_pruned`), never an exception."""
    if not stored.startswith(COMPRESSED):
        return stored
    d = zlib.decompressobj(_WBITS, ZDICT_V1)
    out = d.decompress(stored[len(COMPRESSED):]) + d.flush()
    if not d.eof:
        raise ValueError("truncated compressed telemetry value")
    return out


def is_pruned(value: bytes | None) -> bool:
    return value == PRUNED


def stored_columns(topic: str, value: bytes) -> dict[str, Any]:
    """The `value` and `digest` columns of an event row: compressed + SHA-256 for
    `line.telemetry`, the bytes themselves and no digest for every other topic."""
    if topic != TELEMETRY:
        return {"value": value, "digest": None}
    return {"value": compress(value), "digest": digest(value)}


def same_bytes(prior_value: bytes, prior_digest: bytes | None, incoming: bytes) -> bool:
    """Is `incoming` byte-identical to the stored event (ingest rule 3)? `prior_value` may be
    raw, compressed (as read through `EventValue`, or not) or pruned; where the row has a
    digest, the digest decides (it outlives pruning)."""
    if prior_digest is not None:
        return digest(incoming) == prior_digest
    return not is_pruned(prior_value) and decode(prior_value) == incoming


def require_bytes(value: bytes, what: str, stored_digest: bytes | None = None) -> bytes:
    """`value` (already decoded), or TelemetryPruned naming the retention policy."""
    if not is_pruned(value):
        return value
    tail = f"; its SHA-256 {stored_digest.hex()} remains" if stored_digest else ""
    raise TelemetryPruned(
        f"{what}: raw telemetry was pruned under the retention policy "
        f"(`linetrace telemetry prune`, docs/operations.md){tail}")


def digest_problem(value: bytes, stored_digest: bytes | None) -> str | None:
    """What is wrong with a row's bytes against its digest (`linetrace verify-ledger`), or
    None: no digest (not telemetry, or written before digests), or pruned, or matching."""
    if stored_digest is None:
        return "telemetry bytes were pruned but no digest was kept" if is_pruned(value) else None
    if is_pruned(value) or digest(value) == stored_digest:
        return None
    return "event bytes differ from their SHA-256 digest (events.digest)"


class EventValue(TypeDecorator[bytes]):
    """`events.value`: reads give the exact event bytes whatever the stored form (a pruned
    row reads as `PRUNED`); binds pass through unchanged (the writer compresses explicitly
    via `stored_columns`). A compressed value that no longer inflates (an edited row) reads
    as its stored bytes, which are never a valid event: readers fail on it as on any edited
    row, and `linetrace verify-ledger` reports it against its digest."""

    impl = LargeBinary
    cache_ok = True

    def process_result_value(self, value: Any, dialect: Dialect) -> bytes | None:
        if value is None:
            return None
        stored = bytes(value)
        try:
            return decode(stored)
        except (zlib.error, ValueError):
            return stored
