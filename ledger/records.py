"""Plain data passed between ingest (streams) and the ledger writer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from linetrace.schemas.envelope import Event

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True)
class SourceRecord:
    """Where a record came from, with its exact key, value and headers."""

    topic: str
    partition: int | None
    offset: int | None
    key: bytes | None
    value: bytes | None
    headers: Headers = field(default_factory=list)


@dataclass(frozen=True)
class Candidate:
    """A record that passed ingest rules 1 and 2 (well-formed, authentic)."""

    record: SourceRecord
    event: Event
    keyid: str
    signature: bytes
    cause: str | None = None
    #: The stored form of the value (`telemetry_store.stored_columns`), when screening
    #: computed it already (it compresses telemetry, off the writer thread); None: the
    #: writer computes it.
    columns: dict[str, Any] | None = None


@dataclass(frozen=True)
class Rejection:
    """A refused record: where it goes (`<topic>.dlq` or `line.quarantine`) and why."""

    record: SourceRecord
    destination: str
    code: str
    message: str
    stage: str
    source: str | None = None
    event_id: str | None = None


@dataclass
class BatchOutcome:
    stored: list[Candidate] = field(default_factory=list)
    duplicates: int = 0
    rejections: list[Rejection] = field(default_factory=list)
    system: list[Candidate] = field(default_factory=list)  # recorded system events to publish
