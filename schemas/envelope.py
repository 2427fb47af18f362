"""The CloudEvents 1.0 envelope: building, encoding and strict decoding of event values.

What is signed is what was sent: `encode_event` produces the value bytes once, and ingest
keeps those exact bytes. Decoding is strict (closed envelope, duplicate JSON keys refused) and
uses the msgspec models of `bodies.py`; the published JSON Schemas say the same thing.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta

from .bodies import BODY_OF_TYPE, ID_PATTERN, STATION_ID_PATTERN, SYSTEM_TYPES, Body
from .errors import MalformedEvent
from .lenient import lenient_decoder

SYSTEM_SOURCE = "linetrace"
SPECVERSION = "1.0"
DATACONTENTTYPE = "application/json"
CONTENT_TYPE = "application/cloudevents+json"
RFC3339_UTC = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?Z\Z"
STATIONSEQ = r"^[0-9]{16}\Z"
SOURCE = STATION_ID_PATTERN
#: How far a `stationseq` may run ahead of its own event's time, read as microseconds since the
#: epoch (times before 1970 count as 0): one day. A counter (1, 2, 3, ...) and the
#: `max(last + 1, microseconds now)` scheme both stay far below it; a number pushed to
#: 9999999999999999 by a bug cannot be accepted and then block the station forever.
STATIONSEQ_LEAD_US = 86_400 * 10**6
#: JSON nested deeper than this (arrays and objects) is refused before any model sees it.
MAX_JSON_DEPTH = 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: Current schema version of each type. A new version only adds optional fields.
SCHEMA_VERSIONS: dict[str, int] = dict.fromkeys(BODY_OF_TYPE, 1)

_UUID_NS = uuid.UUID("6f1d1c1e-3c1a-5b7e-9a51-6c696e657472")  # fixed namespace of linetrace


def dataschema_of(event_type: str, version: int | None = None) -> str:
    return f"urn:linetrace:schema:{event_type}:v{version or SCHEMA_VERSIONS[event_type]}"


class Envelope(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """A decoded event. `data` stays raw until the body model for `type` decodes it."""

    specversion: Literal["1.0"]
    id: Annotated[
        str, Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
    ]
    source: Annotated[str, Meta(pattern=SOURCE)]
    type: Annotated[str, Meta(pattern=r"^[a-z]+\.[a-z]+\Z")]
    time: Annotated[str, Meta(pattern=RFC3339_UTC)]
    subject: Annotated[str, Meta(min_length=1, max_length=128, pattern=ID_PATTERN)]
    datacontenttype: Literal["application/json"]
    dataschema: Annotated[str, Meta(pattern=r"^urn:linetrace:schema:[a-z]+\.[a-z]+:v[0-9]+\Z")]
    stationseq: Annotated[str, Meta(pattern=STATIONSEQ)] | msgspec.UnsetType = msgspec.UNSET
    data: msgspec.Raw


class Event(msgspec.Struct, frozen=True):
    """An event decoded from its exact value bytes."""

    envelope: Envelope
    body: Body
    value: bytes

    @property
    def id(self) -> str:
        return self.envelope.id

    @property
    def type(self) -> str:
        return self.envelope.type

    @property
    def source(self) -> str:
        return self.envelope.source

    @property
    def subject(self) -> str:
        return self.envelope.subject

    @property
    def seq(self) -> int | None:
        s = self.envelope.stationseq
        return int(s) if isinstance(s, str) else None


class _OutEnvelope(msgspec.Struct, kw_only=True, omit_defaults=True):
    specversion: str
    id: str
    source: str
    type: str
    time: str
    subject: str
    datacontenttype: str
    dataschema: str
    stationseq: str | None = None
    data: Body


_encoder = msgspec.json.Encoder()
_envelope_decoder = msgspec.json.Decoder(Envelope)
_body_decoders = {t: msgspec.json.Decoder(b) for t, b in BODY_OF_TYPE.items()}


def format_time(t: datetime) -> str:
    """RFC 3339 UTC with millisecond precision, the form every linetrace producer writes."""
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_time(s: str) -> datetime:
    return datetime.fromisoformat(s.replace("Z", "+00:00"))


def format_seq(seq: int) -> str:
    if not 0 <= seq < 10**16:
        raise ValueError(f"stationseq {seq} is outside 0..9999999999999999")
    return f"{seq:016d}"


def deterministic_id(event_type: str, subject: str, cause_id: str) -> str:
    """UUIDv5 of (type, subject, cause): a redone system event is byte-identical."""
    return str(uuid.uuid5(_UUID_NS, f"{event_type}\x00{subject}\x00{cause_id}"))


def encode_event(
    *,
    event_type: str,
    source: str,
    subject: str,
    body: Body,
    time: str | datetime,
    event_id: str | None = None,
    stationseq: int | None = None,
) -> bytes:
    """The one canonical encoder of event values (what gets signed and sent)."""
    if event_type not in BODY_OF_TYPE:
        raise MalformedEvent(f"unknown event type {event_type!r}", code="event.unknown_type")
    if not isinstance(body, BODY_OF_TYPE[event_type]):
        raise TypeError(f"{event_type} needs a {BODY_OF_TYPE[event_type].__name__} body")
    out = _OutEnvelope(
        specversion=SPECVERSION,
        id=event_id or str(uuid.uuid4()),
        source=source,
        type=event_type,
        time=format_time(time) if isinstance(time, datetime) else time,
        subject=subject,
        datacontenttype=DATACONTENTTYPE,
        dataschema=dataschema_of(event_type),
        stationseq=format_seq(stationseq) if stationseq is not None else None,
        data=body,
    )
    value = _encoder.encode(out)
    decode_event(value)  # a producer never sends what ingest would dead-letter
    return value


def _refuse_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    seen: dict[str, Any] = {}
    for k, v in pairs:
        if k in seen:
            raise MalformedEvent(f"JSON key {k!r} appears twice", code="event.duplicate_keys")
        seen[k] = v
    return seen


def _refuse_constant(name: str) -> Any:
    raise MalformedEvent(f"{name} is not a JSON number", code="event.not_json")


def _depth(doc: Any) -> int:
    """How deeply arrays and objects nest in a parsed document (a scalar is 0)."""
    deepest, stack = 0, [(doc, 1)]
    while stack:
        node, level = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, level)
        stack.extend((c, level + 1) for c in children if isinstance(c, (dict, list)))
    return deepest


def check_json(value: bytes) -> None:
    """Reject bytes that are not UTF-8 JSON, that nest deeper than MAX_JSON_DEPTH, or that
    repeat an object key anywhere. Ordinary bad input: always a MalformedEvent, never a crash."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError as e:
        raise MalformedEvent(f"value is not UTF-8 ({e})", code="event.not_utf8") from None
    try:
        doc = json.loads(text, object_pairs_hook=_refuse_duplicates,
                         parse_constant=_refuse_constant)
    except json.JSONDecodeError as e:
        raise MalformedEvent(f"value is not JSON: {e}", code="event.not_json") from None
    except RecursionError:  # deeper than the parser's own limit: the same verdict as below
        raise _too_deep() from None
    if value.count(b"[") + value.count(b"{") > MAX_JSON_DEPTH and _depth(doc) > MAX_JSON_DEPTH:
        raise _too_deep()


def _too_deep() -> MalformedEvent:
    return MalformedEvent(f"value is JSON nested deeper than {MAX_JSON_DEPTH} levels "
                          "(linetrace's limit); events nest a few levels", code="event.not_json")


def stationseq_limit(time: datetime) -> int:
    """The largest `stationseq` an event with this time may carry (STATIONSEQ_LEAD_US)."""
    micros = (time - _EPOCH) // timedelta(microseconds=1)
    return max(micros, 0) + STATIONSEQ_LEAD_US


def decode_event(value: bytes) -> Event:
    """Strictly decode and validate an event value (ingest rule 1): what admission applies.

    Raises MalformedEvent with a code from `errors.DLQ_CODES` naming what is wrong. Events the
    ledger already holds are read with `decode_stored_event`, which never re-judges them.
    """
    check_json(value)
    try:
        env = _envelope_decoder.decode(value)
    except msgspec.ValidationError as e:
        raise MalformedEvent(f"envelope: {e}", code="event.invalid") from None
    except msgspec.DecodeError as e:
        raise MalformedEvent(f"value is not JSON: {e}", code="event.not_json") from None
    try:
        time = parse_time(env.time)
    except ValueError as e:
        raise MalformedEvent(f"time {env.time!r}: {e}", code="event.invalid") from None
    decoder = _body_decoders.get(env.type)
    if decoder is None:
        raise MalformedEvent(
            f"unknown event type {env.type!r}; known types: {', '.join(sorted(BODY_OF_TYPE))}",
            code="event.unknown_type",
        )
    if env.dataschema != dataschema_of(env.type):
        raise MalformedEvent(
            f"dataschema {env.dataschema!r} is not {dataschema_of(env.type)!r}",
            code="event.invalid",
        )
    try:
        body = decoder.decode(env.data)
    except msgspec.ValidationError as e:
        raise MalformedEvent(f"data of {env.type}: {e}", code="event.invalid") from None
    except msgspec.DecodeError as e:
        raise MalformedEvent(f"data of {env.type} is not JSON: {e}", code="event.not_json") from None
    if env.type in SYSTEM_TYPES or env.source == SYSTEM_SOURCE:
        if env.source != SYSTEM_SOURCE or env.type not in SYSTEM_TYPES:
            raise MalformedEvent(
                f"{env.type} from {env.source!r}: source {SYSTEM_SOURCE!r} is reserved for "
                f"linetrace's own system events ({', '.join(sorted(SYSTEM_TYPES))})",
                code="event.invalid",
            )
        if not isinstance(env.stationseq, msgspec.UnsetType):
            raise MalformedEvent("system events carry no stationseq", code="event.invalid")
    elif isinstance(env.stationseq, msgspec.UnsetType):
        raise MalformedEvent(
            "station events need the `stationseq` extension (16 decimal digits)",
            code="event.invalid",
        )
    elif int(env.stationseq) > stationseq_limit(time):
        raise MalformedEvent(
            f"stationseq {env.stationseq} runs more than a day ahead of the event's time "
            f"{env.time} read as microseconds since the epoch (at most {stationseq_limit(time)}); "
            "number events with a counter or with max(last + 1, microseconds now), and send "
            "event time as it is", code="seq.ahead_of_time",
        )
    return Event(envelope=env, body=body, value=value)


_stored_envelope = lenient_decoder(Envelope)
_stored_bodies = {t: lenient_decoder(b) for t, b in BODY_OF_TYPE.items()}


def decode_stored_event(value: bytes) -> Event:
    """Decode an event the ledger already holds (`trace`, `verify`, `verify-ledger`, replays).

    The bytes were admitted when they arrived, possibly under older, looser rules: this reads
    their structure (fields, types, enumerations) and never re-applies admission's value
    bounds and patterns, so tightening admission never makes an existing ledger unreadable.
    Raises MalformedEvent only for bytes that are not an event at all.
    """
    try:
        env = _stored_envelope(value)
        body = _stored_bodies[env.type](env.data)
    except (msgspec.ValidationError, msgspec.DecodeError, KeyError) as e:
        raise MalformedEvent(f"stored event cannot be read: {e}", code="event.invalid") from None
    return Event(envelope=env, body=body, value=value)
