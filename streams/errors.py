"""Errors of the streams room, each with a stable code (docs/errors.md), under LinetraceError."""

from __future__ import annotations

from linetrace.schemas.errors import LinetraceError


class StreamsError(LinetraceError):
    """Base class of every error the `streams` room raises on purpose."""

    code = "streams.error"


class BrokerError(StreamsError):
    """The broker is missing, unusable or does not have the topics linetrace needs."""

    code = "broker.error"
