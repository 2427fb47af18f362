"""The burn-in telemetry commitment: what a `burnin.verdict` says about the raw telemetry.

Raw telemetry is not in the log (CONTRACTS.md: not leaf-bearing) and is pruned after a
retention period (docs/operations.md); each telemetry event's SHA-256 stays in the ledger
forever (`events.digest`). The verdict commits a unit's telemetry as

    commitment = SHA-256(d_1 || d_2 || ... || d_n),  d_i = SHA-256(exact signed bytes of event i)

over the telemetry events of one burn-in run in `stationseq` order (one station, one
partition: the order they were sent and stored in), so anyone holding the digests (or the raw
events, while kept) can recompute it; no database code here. An evidence bundle may carry a
run's raw events (`telemetry_lines`); `check_run_telemetry` checks them against the verdict.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable, Sequence

from linetrace.schemas.bodies import BurninTelemetry, BurninVerdict
from linetrace.schemas.envelope import decode_event

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


def telemetry_lines(values: Sequence[bytes]) -> bytes:
    """An evidence bundle's telemetry file: one event per line, base64 of its exact bytes, in
    `stationseq` order (docs/evidence.md)."""
    return b"".join(base64.b64encode(v) + b"\n" for v in values)


def read_telemetry_lines(data: bytes, what: str) -> list[bytes]:
    """The events of a telemetry file (ProofError naming the line that is not base64)."""
    out = []
    for n, line in enumerate(data.splitlines(), 1):
        try:
            out.append(base64.b64decode(line, validate=True))
        except ValueError:
            raise ProofError(f"{what} line {n} is not base64 of an event") from None
    return out


def check_run_telemetry(values: Sequence[bytes], unit: str, verdict: BurninVerdict,
                        what: str) -> None:
    """The run's telemetry events against its verdict's commitment: each a `burnin.telemetry`
    of the unit, the verdict's run and station, in strictly increasing `stationseq` order,
    as many as the verdict counted, and hashing to its `telemetry_sha256`. ProofError names
    the first difference (an event altered, dropped, added or reordered)."""
    last = -1
    for n, value in enumerate(values, 1):
        try:
            ev = decode_event(value)
        except Exception as e:
            raise ProofError(f"{what} event {n} is not a valid event ({e})") from None
        body = ev.body
        if not isinstance(body, BurninTelemetry) or ev.subject != unit \
                or ev.source != verdict.station or body.run_id != verdict.run_id:
            raise ProofError(f"{what} event {n} is not a burnin.telemetry of unit {unit}, run "
                             f"{verdict.run_id} at {verdict.station}")
        seq = ev.seq if ev.seq is not None else -1
        if seq <= last:
            raise ProofError(f"{what} event {n} is out of stationseq order (events reordered)")
        last = seq
    if len(values) != verdict.telemetry_events:
        raise ProofError(f"{what} holds {len(values)} telemetry events; the verdict committed "
                         f"{verdict.telemetry_events} (an event was dropped or added)")
    got = commitment_of_events(values).hex()
    if got != verdict.telemetry_sha256:
        raise ProofError(f"{what} hashes to {got}; the plant-signed verdict committed "
                         f"{verdict.telemetry_sha256} (a telemetry event was altered)")
