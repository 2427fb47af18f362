"""Ingest rules 1 and 2 as pure functions (no broker, no DB)."""

from __future__ import annotations

import uuid

from linetrace.ledger.keys import KnownKey
from linetrace.ledger.records import Candidate, Rejection, SourceRecord
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.streams.ingest import KeyDirectory, error_headers, screen

KEY = signing.generate_key()
KID = signing.keyid_of(KEY.public_key())


def keys(revoked: dict[str, int] | None = None) -> KeyDirectory:
    return KeyDirectory(lambda: {KID: KnownKey(KID, "aoi-01", KEY.public_key(), revoked)},
                        min_reload=0)


def value(seq: int = 1, source: str = "aoi-01", subject: str = "PCBA-U-1") -> bytes:
    return encode_event(event_type="unit.inspected", source=source, subject=subject,
                        time="2026-01-01T00:00:00Z", stationseq=seq, event_id=str(uuid.uuid4()),
                        body=b.UnitInspected(method="AOI", result="Passed"))


def rec(v: bytes | None, *, topic: str = "line.events", key: bytes = b"PCBA-U-1",
        headers: list[tuple[str, bytes]] | None = None) -> SourceRecord:
    return SourceRecord(topic, 3, 42, key, v,
                        headers if headers is not None else (signing.sign_value(v, KEY) if v else []))


def rejected(out: Candidate | Rejection) -> tuple[str, str]:
    assert isinstance(out, Rejection), out
    return out.destination, out.code


def test_signed_event_from_enrolled_station_is_a_candidate() -> None:
    out = screen(rec(value()), keys())
    assert isinstance(out, Candidate) and out.keyid == KID


def test_garbage_goes_to_the_topics_dead_letter_queue() -> None:
    assert rejected(screen(rec(b"\xff\xfe"), keys())) == ("line.events.dlq", "event.not_utf8")
    assert rejected(screen(rec(b"{"), keys())) == ("line.events.dlq", "event.not_json")
    assert rejected(screen(rec(None), keys())) == ("line.events.dlq", "event.not_json")


def test_duplicate_json_keys_are_malformed() -> None:
    v = value().replace(b'"type":"unit.inspected"', b'"type":"unit.inspected","type":"unit.inspected"')
    assert rejected(screen(rec(v), keys())) == ("line.events.dlq", "event.duplicate_keys")


def test_event_on_the_wrong_topic_is_malformed() -> None:
    assert rejected(screen(rec(value(), topic="line.receipts"), keys())) == (
        "line.receipts.dlq", "event.wrong_topic")


def test_kafka_key_must_be_the_subject() -> None:
    assert rejected(screen(rec(value(), key=b"other"), keys())) == (
        "line.events.dlq", "event.key_mismatch")


def test_missing_signature_is_quarantined_not_dead_lettered() -> None:
    assert rejected(screen(rec(value(), headers=[]), keys())) == (
        "line.quarantine", "signature.missing")


def test_unknown_station_and_unknown_key_are_quarantined() -> None:
    assert rejected(screen(rec(value(source="aoi-02")), keys())) == (
        "line.quarantine", "station.unknown")
    other = signing.generate_key()
    v = value()
    assert rejected(screen(rec(v, headers=signing.sign_value(v, other)), keys())) == (
        "line.quarantine", "key.unknown")


def test_signature_over_other_bytes_is_quarantined() -> None:
    v = value()
    tampered = v.replace(b'"Passed"', b'"Failed"')
    assert rejected(screen(rec(tampered, headers=signing.sign_value(v, KEY)), keys())) == (
        "line.quarantine", "signature.invalid")


def test_revoked_key_is_valid_only_up_to_its_last_stationseq() -> None:
    k = keys(revoked={"line.events": 5})
    assert isinstance(screen(rec(value(seq=5)), k), Candidate)
    assert rejected(screen(rec(value(seq=6)), k)) == ("line.quarantine", "key.revoked")


def test_error_headers_are_the_documented_utf8_set() -> None:
    r = screen(rec(b"nope"), keys())
    assert isinstance(r, Rejection)
    h = dict(error_headers(r))
    assert h["error.code"] == b"event.not_json" and h["original.offset"] == b"42"
    assert h["original.topic"] == b"line.events" and h["original.partition"] == b"3"
    assert h["error.stage"] == b"decode" and h["error.message"]
