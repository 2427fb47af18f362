"""The cost of the worker's OpenTelemetry instrumentation when nothing is exported.

Per record the worker reads the record's trace context, opens and ends an `ingest` span and
rewrites the context header (streams/telemetry.py); per batch it opens a batch span with one
link per record, screen/write spans and records four metrics. This bench times exactly those
calls over realistic signed records, in the same run as the cost they ride on:

- (a) instrumentation, API only (no SDK: what runs when no OTEL_*_EXPORTER is set);
- (b) instrumentation with the SDK recording spans to an in-memory exporter (an upper bound
      for a configured exporter, minus its I/O);
- (c) `screen` (decode, JSON Schema rules, Ed25519 verify) of the same records: the cheapest
      per-record work the worker does anyway.

    .venv/bin/python -m bench.bench_otel [--records 20000] [--batch 500]

Prints the figures and writes the "OpenTelemetry overhead" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from aiokafka.partitioner import murmur2

from linetrace.ledger.keys import KnownKey
from linetrace.ledger.records import SourceRecord
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.streams import telemetry
from linetrace.streams.ingest import KeyDirectory, screen

from .report import machine, table, tree, write_section

TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


def records(n: int) -> tuple[list[SourceRecord], KeyDirectory]:
    key = signing.generate_key()
    keyid = signing.keyid_of(key.public_key())
    out = []
    for i in range(n):
        serial = f"SRV-OT-{i % 500:06d}"
        value = encode_event(
            event_type="work.started", source="gpu-install-01", subject=serial,
            time="2026-03-01T08:00:00.000Z", stationseq=i + 1, event_id=str(uuid.uuid4()),
            body=b.WorkStarted(transaction_id=str(uuid.uuid4()), step=40, operation="GPU install",
                               work_order="WO-1", product="A", kind="server"))
        headers = [*signing.sign_value(value, key), ("traceparent", TRACEPARENT)]
        partition = (murmur2(serial.encode()) & 0x7FFFFFFF) % 8
        out.append(SourceRecord("line.events", partition, i, serial.encode(), value, headers))
    known = {keyid: KnownKey(keyid, "gpu-install-01", key.public_key(), None, "gpu-install")}
    return out, KeyDirectory(lambda: known, min_reload=1e9, max_age=1e9)


def instrument(batch: Sequence[SourceRecord]) -> None:
    """The calls processor.process adds for one batch, without the work they wrap."""
    from opentelemetry import trace

    if not telemetry.tracing():  # the processor's path when no SDK is configured
        telemetry.child_span("screen", trace.INVALID_SPAN).end()
        telemetry.child_span("write ledger", trace.INVALID_SPAN).end()
        telemetry.COMMIT_SECONDS.record(0.01)
        telemetry.BATCH_SIZE.record(len(batch))
        telemetry.EVENTS.add(len(batch), {"linetrace.outcome": "stored"})
        return
    contexts = [telemetry.context_of(r.headers) for r in batch]
    span = telemetry.batch_span(batch[0].topic, contexts)
    with trace.use_span(span, end_on_exit=False):
        telemetry.child_span("screen", span).end()
        spans = []
        for r, ctx in zip(batch, contexts, strict=True):
            s = telemetry.record_span(r.topic, "work.started", "id", ctx, span)
            telemetry.with_context(r.headers, trace.set_span_in_context(s))
            spans.append(s)
        telemetry.child_span("write ledger", span).end()
        telemetry.COMMIT_SECONDS.record(0.01)
        telemetry.BATCH_SIZE.record(len(batch))
        telemetry.EVENTS.add(len(batch), {"linetrace.outcome": "stored"})
        for s in spans:
            s.set_attribute("linetrace.outcome", "stored")
            s.end()
    span.end()


def per_record_us(fn, recs: Sequence[SourceRecord], batch: int) -> float:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    for i in range(0, len(recs), batch):
        fn(recs[i:i + batch])
    return (time.perf_counter() - t) / len(recs) * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--docs", default="docs/benchmarks.md")
    args = ap.parse_args()
    recs, keys = records(args.records)

    def screen_all(batch: Sequence[SourceRecord]) -> None:
        for r in batch:
            screen(r, keys)

    per_record_us(instrument, recs[:1000], args.batch)  # warm
    noop = per_record_us(instrument, recs, args.batch)
    base = per_record_us(screen_all, recs, args.batch)

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    tp = TracerProvider()
    exporter = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(tp)
    sdk = per_record_us(instrument, recs, args.batch)

    rows = [
        ("(a) instrumentation, no SDK (nothing exported)", f"{noop:.2f}", f"{noop / base:.1%}"),
        ("(b) instrumentation, SDK + in-memory exporter", f"{sdk:.1f}", f"{sdk / base:.1%}"),
        ("(c) screen: decode + schema + Ed25519 verify (baseline)", f"{base:.1f}", "100%"),
    ]
    for name, us, ratio in rows:
        print(f"{name:58s} {us:>8s} us/record  {ratio:>7s} of (c)")
    if args.docs:
        cmd = f".venv/bin/python -m bench.bench_otel --records {args.records} --batch {args.batch}"
        body = "\n".join([
            "## OpenTelemetry overhead (worker instrumentation)", "",
            f"{machine()}; {datetime.now(UTC):%Y-%m-%d}; {tree()}. Command: `{cmd}`", "",
            table([("per record", "µs", "vs (c)"), *rows]), "",
            "With no `OTEL_*_EXPORTER` set, the API's no-op tracer and meter run: the whole cost "
            "of the instrumentation per record is (a). Same records, same run, batches of "
            f"{args.batch}; (c) is the cheapest per-record work the worker does anyway.", ""])
        write_section(Path(args.docs), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
