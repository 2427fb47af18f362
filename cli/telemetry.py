"""OpenTelemetry exporters, chosen by the standard `OTEL_*` variables (read here, once).

- `OTEL_TRACES_EXPORTER`, `OTEL_METRICS_EXPORTER`: `none` (the default here: nothing is set up
  and every instrumented call is a no-op), `console`, or `otlp` (needs
  `pip install opentelemetry-exporter-otlp`; its own `OTEL_EXPORTER_OTLP_*` variables apply).
- `OTEL_SDK_DISABLED=true` turns everything off; `OTEL_SERVICE_NAME` and
  `OTEL_RESOURCE_ATTRIBUTES` name the process (the SDK reads them).
- `OTEL_METRIC_EXPORT_INTERVAL` (ms) as in the SDK.

Only the processes that do work (worker, simulator, burn-in, up's children) call `configure`.
"""

from __future__ import annotations

import atexit
from collections.abc import Mapping
from typing import Any

from .settings import ConfigurationError


def _exporter(kind: str, signal: str) -> Any:
    if kind == "console":
        if signal == "traces":
            from opentelemetry.sdk.trace.export import ConsoleSpanExporter

            return ConsoleSpanExporter()
        from opentelemetry.sdk.metrics.export import ConsoleMetricExporter

        return ConsoleMetricExporter()
    if kind == "otlp":
        try:
            if signal == "traces":
                from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
                    OTLPSpanExporter,
                )

                return OTLPSpanExporter()
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter

            return OTLPMetricExporter()
        except ImportError:
            raise ConfigurationError(
                f"OTEL_{signal.upper()}_EXPORTER=otlp needs the OTLP exporter: "
                "pip install opentelemetry-exporter-otlp") from None
    raise ConfigurationError(f"OTEL_{signal.upper()}_EXPORTER={kind!r}: use none, console or otlp")


def configure(env: Mapping[str, str], service: str) -> bool:
    """Set up the SDK for the exporters `env` names; False when nothing is exported."""
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    traces = env.get("OTEL_TRACES_EXPORTER", "none").strip().lower() or "none"
    metrics_kind = env.get("OTEL_METRICS_EXPORTER", "none").strip().lower() or "none"
    if traces == "none" and metrics_kind == "none":
        return False
    try:
        from opentelemetry import metrics, trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    except ImportError:
        raise ConfigurationError("OTEL_*_EXPORTER is set but opentelemetry-sdk is not "
                                 "installed: pip install 'linetrace[worker]'") from None
    resource = Resource.create({SERVICE_NAME: env.get("OTEL_SERVICE_NAME", service)})
    if traces != "none":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        tp = TracerProvider(resource=resource)
        tp.add_span_processor(BatchSpanProcessor(_exporter(traces, "traces")))
        trace.set_tracer_provider(tp)
        atexit.register(tp.shutdown)
    if metrics_kind != "none":
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

        reader = PeriodicExportingMetricReader(_exporter(metrics_kind, "metrics"))
        mp = MeterProvider(resource=resource, metric_readers=[reader])
        metrics.set_meter_provider(mp)
        atexit.register(mp.shutdown)
    return True
