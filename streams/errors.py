"""Errors of the streams room, each with a stable code."""

from __future__ import annotations


class StreamsError(Exception):
    code = "streams.error"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code


class BrokerError(StreamsError):
    code = "broker.error"
