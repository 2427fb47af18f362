"""The raw burn-in telemetry an evidence bundle may carry (`linetrace evidence --telemetry`).

For each `burnin.verdict` leaf in the bundle, the run's `burnin.telemetry` events (their exact
signed bytes, in `stationseq` order) as one file, `telemetry/<run id>.jsonl`; `linetrace
verify` hashes them and compares with the commitment the plant-signed verdict states
(`proof.telemetry.check_run_telemetry`). Telemetry pruned under the retention policy cannot be
carried: the command says so (its digests remain, and the verdict stays checkable against
them in `linetrace verify-ledger`).
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_stored_event
from linetrace.schemas.topics import TELEMETRY

from .models import EventRow
from .proof.telemetry import telemetry_lines
from .telemetry_store import require_bytes


def run_values(session: Session, unit: str, verdict: b.BurninVerdict) -> list[bytes]:
    """The exact bytes of the run's `burnin.telemetry` events, in `stationseq` order."""
    found: list[tuple[int, bytes]] = []
    for row in session.scalars(select(EventRow).where(
            EventRow.subject == unit, EventRow.topic == TELEMETRY,
            EventRow.type == "burnin.telemetry", EventRow.source == verdict.station)):
        value = require_bytes(row.value, f"telemetry event {row.source}/{row.event_id} of "
                              f"burn-in run {verdict.run_id}", row.digest)
        ev = decode_stored_event(value)
        if isinstance(ev.body, b.BurninTelemetry) and ev.body.run_id == verdict.run_id:
            found.append((ev.seq or 0, value))
    return [v for _, v in sorted(found, key=lambda sv: sv[0])]


def telemetry_files(session: Session, unit: str, events: Sequence[Event]) -> dict[str, bytes]:
    """Run id -> telemetry file content, for every `burnin.verdict` of the unit in `events`."""
    out: dict[str, bytes] = {}
    for ev in events:
        body = ev.body
        if isinstance(body, b.BurninVerdict) and ev.subject == unit:
            out[body.run_id] = telemetry_lines(run_values(session, unit, body))
    return out
