"""Errors raised while decoding, validating or verifying events, and `LinetraceError`, the
base class of every error linetrace raises (all rooms).

Every code here is part of the public contract: it travels in the `error.code` header of
dead-letter and quarantine records and in the ledger's `rejected` table. The closed list is
`REJECTION_CODES`; docs/errors.md explains each one.
"""

from __future__ import annotations


class LinetraceError(Exception):
    """Base class of every error linetrace raises on purpose, in every room.

    `code` is stable and machine-readable (branch on it, never on the message); `retriable`
    says whether the same call can succeed later unchanged (a broker or database that is back,
    a full spool that drained). The message says what happened and what to do. Each room
    derives its own base from this one (SchemaError, StationError, LedgerError, StreamsError)
    and the CLI turns any of them into an exit code (docs/errors.md). It lives here because
    `schemas` is the room every other room may import.
    """

    code: str = "linetrace.error"
    retriable: bool = False

    def __init__(self, message: str = "", *, code: str | None = None,
                 retriable: bool | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
        if retriable is not None:
            self.retriable = retriable

    @property
    def message(self) -> str:
        """The message alone, without the code (`str(e)` may add it, as StationError does)."""
        return str(self.args[0]) if self.args else ""


class SchemaError(LinetraceError):
    """Base class of the `schemas` room: decoding, validating or verifying events."""

    code = "schema.error"


class MalformedEvent(SchemaError):
    """The record is not a well-formed, schema-valid event: it goes to `<topic>.dlq`."""

    code = "event.invalid"


class ForgedEvent(SchemaError):
    """Authorship cannot be established: it goes to `line.quarantine`."""

    code = "signature.invalid"


#: Rejections that are malformed input (dead-letter topic), with what each means.
DLQ_CODES: dict[str, str] = {
    "event.not_utf8": "the value is not UTF-8 text",
    "event.not_json": "the value is not a JSON document",
    "event.duplicate_keys": "a JSON object repeats a key",
    "event.invalid": "the envelope or data does not match the JSON Schema of its type",
    "event.unknown_type": "the CloudEvents `type` is not one linetrace knows",
    "event.wrong_topic": "the event type does not belong on the topic it was sent to",
    "event.key_mismatch": "the Kafka key is absent or is not the UTF-8 bytes of the event's `subject`",
    "event.wrong_partition": "the record is not on the partition the murmur2 partitioner assigns its key",
    "seq.ahead_of_time": "`stationseq` runs more than a day ahead of the event's own time in microseconds",
    "headers.too_many": "the record carries more Kafka headers than linetrace reads",
    "headers.too_large": "a Kafka header name or value is longer than linetrace accepts",
    "event.unstorable": "the event passed ingest but the ledger database refused to store it",
}

#: Rejections for input whose authorship or order cannot be trusted (quarantine topic).
QUARANTINE_CODES: dict[str, str] = {
    "signature.missing": "the `linetrace-keyid` or `linetrace-signature` header is absent or unreadable",
    "signature.ambiguous": "the `linetrace-keyid` or `linetrace-signature` header appears more than once",
    "station.unknown": "the `source` station was never enrolled",
    "key.unknown": "the key id is not an enrolled key of the `source` station",
    "signature.invalid": "the Ed25519 signature does not match the exact value bytes",
    "key.revoked": "the key was revoked before this `stationseq`",
    "station.not_permitted": "the station's enrolled type may not send this event type",
    "event.equivocation": "the same (source, id) was already accepted with different bytes",
    "seq.reordered": "`stationseq` is not greater than the last accepted one for that station and topic-partition",
}

REJECTION_CODES: dict[str, str] = {**DLQ_CODES, **QUARANTINE_CODES}
