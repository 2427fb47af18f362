"""OpenTelemetry for the worker: each record's trace continues through screen, write, the
stages and the relay's publish; metrics for throughput, lag, batches, commits and backlog.

Only the OpenTelemetry API is used here. With no SDK configured (no `OTEL_*_EXPORTER` set,
see `linetrace.cli.telemetry`) every call is a no-op costing about a microsecond per record.

Spans, following the OpenTelemetry messaging conventions for batches:
- `process <topic>` (CONSUMER), one per batch, with a link to each record's context;
- `ingest <type>` (CONSUMER), one per record, a child of the record's own context (the
  station's `create` span), so the station's trace goes on; the system events it causes carry
  this span's `traceparent`;
- `write ledger` and `stage <name>`, children of the batch span;
- `publish <topic>` (PRODUCER), one per outbox message that carries a `traceparent`, a child
  of it; the published record carries the publish span's context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from opentelemetry import metrics, propagate, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Span, SpanKind

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"

tracer = trace.get_tracer("linetrace.streams")
meter = metrics.get_meter("linetrace.streams")

EVENTS = meter.create_counter(
    "linetrace.ingest.events", unit="{event}",
    description="Input records by topic and outcome (stored, duplicate, dead_lettered, "
                "quarantined)")
REJECTED = meter.create_counter(
    "linetrace.ingest.rejected", unit="{record}",
    description="Records dead-lettered or quarantined, by destination and error.code")
BATCH_SIZE = meter.create_histogram(
    "linetrace.ingest.batch.size", unit="{record}", description="Records per ingest batch")
COMMIT_SECONDS = meter.create_histogram(
    "linetrace.ledger.commit.duration", unit="s",
    description="Seconds to write one batch in one ledger transaction (stages included)")
PUBLISHED = meter.create_counter(
    "linetrace.outbox.published", unit="{message}", description="Outbox messages acknowledged")


def tracing() -> bool:
    """Is an SDK recording spans? Without one, the worker skips per-record trace work
    (trace headers still travel unchanged, so consumers can continue the station's trace)."""
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def context_of(headers: Iterable[tuple[str, bytes]]) -> Context | None:
    """The W3C trace context a record carries, or None."""
    carrier = {k: v.decode("ascii", "replace") for k, v in headers if k in (TRACEPARENT,
                                                                            TRACESTATE)}
    if TRACEPARENT not in carrier:
        return None
    ctx = propagate.extract(carrier)
    return ctx if trace.get_current_span(ctx).get_span_context().is_valid else None


def with_context(headers: Sequence[tuple[str, bytes]], ctx: Context | None = None
                 ) -> list[tuple[str, bytes]]:
    """`headers` with their trace context replaced by `ctx` (the current one if None)."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=ctx)
    if not carrier:
        return list(headers)
    kept = [(k, v) for k, v in headers if k not in (TRACEPARENT, TRACESTATE)]
    return kept + [(k, v.encode("ascii")) for k, v in carrier.items()]


def batch_span(topic: str, contexts: Sequence[Context | None]) -> Span:
    links = [Link(trace.get_current_span(c).get_span_context()) for c in contexts if c is not None]
    return tracer.start_span(
        f"process {topic}", kind=SpanKind.CONSUMER, links=links,
        attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                    "messaging.destination.name": topic,
                    "messaging.batch.message_count": len(contexts)})


def record_span(topic: str, event_type: str, event_id: str, ctx: Context | None,
                batch: Span) -> Span:
    return tracer.start_span(
        f"ingest {event_type}", context=ctx, kind=SpanKind.CONSUMER,
        links=[Link(batch.get_span_context())],
        attributes={"messaging.system": "kafka", "messaging.operation.type": "process",
                    "messaging.destination.name": topic, "messaging.message.id": event_id})


def publish_span(topic: str, message_id: str, ctx: Context | None) -> Span:
    return tracer.start_span(
        f"publish {topic}", context=ctx, kind=SpanKind.PRODUCER,
        attributes={"messaging.system": "kafka", "messaging.operation.type": "publish",
                    "messaging.destination.name": topic, "messaging.message.id": message_id})


def child_span(name: str, parent: Span, attributes: Mapping[str, Any] | None = None) -> Span:
    return tracer.start_span(name, context=trace.set_span_in_context(parent),
                             attributes=dict(attributes or {}))


class Gauges:
    """Observable gauges read at export time: consumer lag and the relay's backlog."""

    def __init__(self) -> None:
        self.lag: dict[tuple[str, int], int] = {}
        self.backlog = 0
        meter.create_observable_gauge(
            "linetrace.ingest.lag", callbacks=[self._lag], unit="{record}",
            description="Records on the broker not yet stored, per input partition")
        meter.create_observable_gauge(
            "linetrace.outbox.backlog", callbacks=[self._backlog], unit="{message}",
            description="Outbox messages recorded and not yet acknowledged by the broker")

    def _lag(self, _: Any) -> Iterable[metrics.Observation]:
        return [metrics.Observation(v, {"messaging.destination.name": t,
                                        "messaging.destination.partition.id": str(p)})
                for (t, p), v in list(self.lag.items())]

    def _backlog(self, _: Any) -> Iterable[metrics.Observation]:
        return [metrics.Observation(self.backlog)]


GAUGES = Gauges()  # one set per process (instruments are process-wide)


def observe_lag(records: Sequence[Any], highwater: Callable[[str, int], Any]) -> None:
    """Records the broker holds beyond what was just stored, per partition (the lag gauge).
    `highwater(topic, partition)`: the consumer's high watermark (None or raising: not known
    yet, or not assigned any more; the last value stays)."""
    last: dict[tuple[str, int], int] = {}
    for r in records:
        if r.partition is not None and r.offset is not None:
            last[(r.topic, r.partition)] = max(last.get((r.topic, r.partition), -1), r.offset)
    for (t, p), off in last.items():
        try:
            high = highwater(t, p)
        except Exception:
            continue
        if high is not None:
            GAUGES.lag[(t, p)] = max(0, int(high) - off - 1)
