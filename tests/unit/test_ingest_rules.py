"""Ingest rules 1 and 2 as pure functions (no broker, no DB)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from linetrace.ledger.keys import KnownKey
from linetrace.ledger.records import Candidate, Rejection, SourceRecord
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.schemas.topics import ALL_TOPICS, partition_of
from linetrace.streams.ingest import KeyDirectory, error_headers, screen

KEY = signing.generate_key()
KID = signing.keyid_of(KEY.public_key())


def keys(revoked: dict[str, int] | None = None, station_type: str | None = "aoi") -> KeyDirectory:
    return KeyDirectory(lambda: {KID: KnownKey(KID, "aoi-01", KEY.public_key(), revoked,
                                               station_type)},
                        min_reload=0)


def value(seq: int = 1, source: str = "aoi-01", subject: str = "PCBA-U-1") -> bytes:
    return encode_event(event_type="unit.inspected", source=source, subject=subject,
                        time="2026-01-01T00:00:00Z", stationseq=seq, event_id=str(uuid.uuid4()),
                        body=b.UnitInspected(method="AOI", result="Passed"))


def rec(v: bytes | None, *, topic: str = "line.events", key: bytes | None = b"PCBA-U-1",
        headers: list[tuple[str, bytes]] | None = None, partition: int | None = None) -> SourceRecord:
    """A record where the murmur2 partitioner puts `key` (unless `partition` says otherwise)."""
    if partition is None and key is not None:
        partition = partition_of(key, ALL_TOPICS[topic])
    return SourceRecord(topic, partition, 42, key, v,
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
    assert h["original.topic"] == b"line.events"
    assert h["original.partition"] == str(partition_of(b"PCBA-U-1", 8)).encode()
    assert h["error.stage"] == b"decode" and h["error.message"]


# --- issue 8: the ingest boundary -----------------------------------------------------------

def doc_of(v: bytes) -> dict[str, Any]:
    out: dict[str, Any] = json.loads(v)
    return out


def raw(doc: dict[str, Any]) -> bytes:
    """Bytes as any station might serialise them (no linetrace encoder, no checks)."""
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()


def test_a_record_without_a_kafka_key_is_a_key_mismatch() -> None:
    """Item 2: the key must be the subject's bytes; no key at all is not a pass."""
    out = screen(rec(value(), key=None, partition=0), keys())
    assert rejected(out) == ("line.events.dlq", "event.key_mismatch")
    assert isinstance(out, Rejection) and "no Kafka key" in out.message


def test_a_record_on_another_partition_than_murmur2_assigns_is_dead_lettered() -> None:
    """Item 2: one unit, one partition; a producer with another partitioner is refused."""
    right = partition_of(b"PCBA-U-1", 8)
    assert isinstance(screen(rec(value(), partition=right), keys()), Candidate)
    for wrong in sorted(set(range(8)) - {right}):
        out = screen(rec(value(), partition=wrong), keys())
        assert rejected(out) == ("line.events.dlq", "event.wrong_partition")
        assert isinstance(out, Rejection) and f"line.events[{right}]" in out.message


def test_the_partitioner_is_kafkas_murmur2() -> None:
    from aiokafka.partitioner import murmur2

    rng = random.Random(8)
    for n in range(0, 70):
        data = bytes(rng.randrange(256) for _ in range(n))
        assert partition_of(data, 8) == (murmur2(data) & 0x7FFFFFFF) % 8
    # values of the Java client (org.apache.kafka.common.utils.Utils.murmur2), as a fixed point
    assert [partition_of(k, 8) for k in (b"SRV-S7-000001", b"PCBA-U-1", b"")] == [
        (murmur2(k) & 0x7FFFFFFF) % 8 for k in (b"SRV-S7-000001", b"PCBA-U-1", b"")]


@pytest.mark.parametrize("field,bad", [
    ("subject", "PCBA-U-1\n"), ("subject", "PCBA-\x1b[2J-1"), ("subject", "PCBA U 1"),
    ("data.operation", "ICT\x1b]0;owned\x07"), ("data.operation", "ICT\nstep"),
    ("data.work_order", "WO-1\t"), ("data.product", "PCBA\u202eBM"),
])
def test_identifiers_with_control_characters_are_dead_lettered(field: str, bad: str) -> None:
    """Items 3 and 4: a trailing newline or an escape sequence in an identifier is refused."""
    doc = doc_of(work_started())
    node = doc["data"] if field.startswith("data.") else doc
    node[field.removeprefix("data.")] = bad
    v = raw(doc)
    key = doc["subject"].encode()
    assert rejected(screen(rec(v, key=key), keys(station_type="ict"))) == (
        "line.events.dlq", "event.invalid")


def work_started(seq: int = 1, time: str = "2026-01-01T00:00:00Z") -> bytes:
    return encode_event(event_type="work.started", source="aoi-01", subject="PCBA-U-1",
                        time=time, stationseq=seq, event_id=str(uuid.uuid4()),
                        body=b.WorkStarted(transaction_id=str(uuid.uuid4()), step=30,
                                           operation="AOI", work_order="WO-1", product="PCBA-MB"))


def test_a_reference_designator_with_an_escape_is_dead_lettered() -> None:
    v = encode_event(event_type="materials.installed", source="aoi-01", subject="PCBA-U-1",
                     time="2026-01-01T00:00:00Z", stationseq=1, event_id=str(uuid.uuid4()),
                     body=b.MaterialsInstalled(items=[b.InstalledItem(lot="L-1", mpn="M-1",
                                                                      qty=2, ref="C12")]))
    doc = doc_of(v)
    doc["data"]["items"][0]["ref"] = "C12\x1b[31m"
    out = screen(rec(raw(doc)), keys(station_type="smt"))
    assert rejected(out) == ("line.events.dlq", "event.invalid")
    assert isinstance(out, Rejection) and "ref" in out.message


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00Z", "1900-01-01T00:00:00Z",
                                  "9999-12-31T23:59:59.999Z", "1970-01-01T00:00:00Z"])
def test_an_event_is_never_refused_for_its_time_alone(time: str) -> None:
    """Item 5: absurd times are admitted (and flagged later, against the line clock)."""
    assert isinstance(screen(rec(work_started(time=time)), keys()), Candidate)


def test_a_stationseq_far_ahead_of_its_event_time_is_dead_lettered() -> None:
    """Item 7: one accepted 9999999999999999 would block the station there forever."""
    from linetrace.schemas.envelope import STATIONSEQ_LEAD_US, parse_time, stationseq_limit

    t = "2026-01-01T00:00:00Z"
    limit = stationseq_limit(parse_time(t))
    assert limit == 1767225600 * 10**6 + STATIONSEQ_LEAD_US
    doc = doc_of(work_started(time=t))
    for seq, ok in ((1, True), (limit, True), (limit + 1, False), (10**16 - 1, False)):
        doc["stationseq"] = f"{seq:016d}"
        out = screen(rec(raw(doc)), keys())
        if ok:
            assert isinstance(out, Candidate), out
        else:
            assert rejected(out) == ("line.events.dlq", "seq.ahead_of_time")
    # times before the epoch still allow a counter: they count as 0
    doc = doc_of(work_started(time="1900-01-01T00:00:00Z"))
    assert isinstance(screen(rec(raw(doc)), keys()), Candidate)


def test_the_station_clients_numbering_and_the_readme_scheme_stay_within_the_bound() -> None:
    """A counter from 1, and max(last + 1, microseconds now) with event time = now."""
    from linetrace.schemas.envelope import format_time, parse_time, stationseq_limit

    now = datetime.now(UTC)
    seq = max(1, now.timestamp() * 10**6)
    for i in range(1000):  # a burst in one microsecond: last + 1 each time
        assert int(seq) + i <= stationseq_limit(parse_time(format_time(now)))
    assert 10**9 <= stationseq_limit(parse_time("1970-01-01T00:00:00Z"))


def test_duplicate_signature_headers_are_quarantined_as_ambiguous() -> None:
    """Item 6: which signature counts must never depend on which header comes first."""
    v = value()
    good = signing.sign_value(v, KEY)
    other = signing.sign_value(v, signing.generate_key())
    for headers in (good + other[1:], good + other[:1], other[1:] + good, good + good):
        out = screen(rec(v, headers=headers), keys())
        assert rejected(out) == ("line.quarantine", "signature.ambiguous")


def test_header_names_are_case_sensitive() -> None:
    v = value()
    upper = [(k.title(), val) for k, val in signing.sign_value(v, KEY)]
    assert rejected(screen(rec(v, headers=upper), keys())) == ("line.quarantine", "signature.missing")


def test_oversized_and_too_many_headers_are_dead_lettered() -> None:
    """Item 6: a 1 MB header and 5,000 headers."""
    v = value()
    sig = signing.sign_value(v, KEY)
    big = screen(rec(v, headers=sig + [("traceparent", b"x" * 1_000_000)]), keys())
    assert rejected(big) == ("line.events.dlq", "headers.too_large")
    long_name = screen(rec(v, headers=sig + [("x" * 300, b"")]), keys())
    assert rejected(long_name) == ("line.events.dlq", "headers.too_large")
    many = screen(rec(v, headers=sig + [(f"h{i}", b"1") for i in range(5000)]), keys())
    assert rejected(many) == ("line.events.dlq", "headers.too_many")
    # within the bounds: an 8 KiB W3C baggage header and 64 headers in all
    ok = sig + [("baggage", b"k=" + b"v" * 8190)] + [(f"h{i}", b"1") for i in range(61)]
    assert len(ok) == signing.MAX_HEADERS
    assert isinstance(screen(rec(v, headers=ok), keys()), Candidate)


def test_json_nested_10000_deep_is_ordinary_bad_input(caplog: pytest.LogCaptureFixture) -> None:
    """Item 8: dead-lettered with a code, no exception (which the worker logged as an ERROR)."""
    deep = b'{"specversion":"1.0","data":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with caplog.at_level(logging.DEBUG):
        out = screen(rec(deep), keys())
    assert rejected(out) == ("line.events.dlq", "event.not_json")
    assert isinstance(out, Rejection) and "nested deeper" in out.message
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]
    # the limit is a fixed depth, the same in every thread, whatever the recursion limit
    for depth, code in ((64, "event.invalid"), (65, "event.not_json"), (900, "event.not_json")):
        v = b'{"data":' + b"[" * (depth - 1) + b"]" * (depth - 1) + b"}"
        assert rejected(screen(rec(v), keys())) == ("line.events.dlq", code), depth


def test_a_station_may_send_only_what_its_enrolled_type_does() -> None:
    """Item 17: a gpu-install station's material.received is quarantined."""
    receipt = encode_event(
        event_type="material.received", source="aoi-01", subject="LOT-1",
        time="2026-01-01T00:00:00Z", stationseq=1, event_id=str(uuid.uuid4()),
        body=b.MaterialReceived(lot="LOT-1", mpn="MPN-1", supplier="S", date_code="2601", qty=5))
    r = rec(receipt, topic="line.receipts", key=b"LOT-1")
    out = screen(r, keys(station_type="gpu-install"))
    assert rejected(out) == ("line.quarantine", "station.not_permitted")
    assert isinstance(out, Rejection) and "receiving" in out.message
    assert isinstance(screen(r, keys(station_type="receiving")), Candidate)
    assert rejected(screen(r, keys(station_type="my-own-type"))) == (
        "line.quarantine", "station.not_permitted")
    # what every station sends is open to every type, a plant's own type too
    assert isinstance(screen(rec(work_started()), keys(station_type="my-own-type")), Candidate)
    # an unenrolled station is still station.unknown, checked before what it may send
    assert rejected(screen(rec(value(source="aoi-02")), keys())) == (
        "line.quarantine", "station.unknown")


def test_every_event_the_simulated_line_sends_is_permitted_to_its_station_type() -> None:
    from linetrace.stations.simulator import FAULTS, LineConfig, generate_line, station_roster
    from linetrace.stations.simulator.faults import FaultSpec

    from linetrace.schemas.station_types import STATION_TYPES, may_send

    sent: set[tuple[str, str]] = set()
    for product, faults in (("A", ()), ("B", ()), ("A", tuple(FaultSpec(f, 3) for f in FAULTS
                                                                if f not in ("avl-violation",)))):
        roster = dict(station_roster(product))
        plan = generate_line(LineConfig(units=6, seed=11, product=product, faults=faults))
        sent |= {(roster[e.station_id], e.event_type) for e in plan.stream()}
    assert {t for _, t in sent} >= {"material.received", "unit.packed", "burnin.telemetry",
                                    "materials.uninstalled", "firmware.flashed"}
    assert [(s, t) for s, t in sorted(sent) if not may_send(s, t)] == []
    assert {s for s, _ in sent} <= set(STATION_TYPES)


def test_the_burn_in_runner_sends_only_what_a_burnin_station_may() -> None:
    from linetrace.stations.burnin import SimClock, SimulatedBaseboard, run_burnin

    from linetrace.schemas.station_types import may_send

    clock = SimClock(datetime(2026, 1, 5, 6, tzinfo=UTC))
    board = SimulatedBaseboard(clock, serials=tuple(f"GPU-{i}" for i in range(8)), sku="B200",
                               seed=3, faults=("fatal-xid",), fault_gpus={"fatal-xid": 2})
    types: list[str] = []

    class Recorder:
        async def emit(self, event_type: str, subject: str, body: b.Body, *, time: Any,
                       event_id: str | None = None) -> bytes:
            types.append(event_type)
            return b""

    asyncio.run(run_burnin("SRV-1", board, Recorder(), duration_s=600, clock=clock,
                           expected_gpus=None, run_id=str(uuid.uuid4())))
    assert {"burnin.run", "burnin.telemetry", "burnin.xid", "unit.tested"} <= set(types)
    assert [t for t in types if not may_send("burnin", t)] == []


def test_the_station_types_are_the_route_station_types() -> None:
    import typing

    from linetrace.schemas.routes.model import StationType
    from linetrace.schemas.station_types import STATION_TYPES

    assert set(STATION_TYPES) == set(typing.get_args(StationType))


def test_system_events_come_only_from_linetrace_whatever_the_table_says() -> None:
    from linetrace.schemas.bodies import SYSTEM_TYPES
    from linetrace.schemas.station_types import EVENTS_OF_STATION_TYPE, EVERY_STATION

    assert not SYSTEM_TYPES & (EVERY_STATION.union(*EVENTS_OF_STATION_TYPE.values()))
