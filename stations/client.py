"""StationClient: how station software puts signed events on the line's topics.

One client per station. `emit` encodes the event with the one canonical encoder, numbers it
with the station's next `stationseq` for its topic, signs the exact bytes, and returns once
the event is committed to the station's SQLite spool (`spool.py`): from then on nothing can
lose it, not a broker outage, not a crash of the station. A background sender (`sender.py`)
delivers the spool in order with `acks=all` and retries forever; `flush` waits for it.

Ordering is the point (CONTRACTS.md, ingest rule 4): a station never sends a newer event ahead
of an older unacknowledged or lost one, and a resend is the same bytes (a re-encoded retry
would be a different value under the same id: equivocation). `SyncStationClient`
(`sync_client.py`) wraps this class for station code that is not async.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import uuid
from collections.abc import Iterable
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind
from aiokafka.partitioner import murmur2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.bodies import Body
from linetrace.schemas.envelope import CONTENT_TYPE, SOURCE, encode_event
from linetrace.schemas.errors import MalformedEvent
from linetrace.schemas.signing import (
    CONTENT_TYPE_HEADER, TRACEPARENT_HEADER, keyid_of, sign_value,
)
from linetrace.schemas.topics import ALL_TOPICS, TOPIC_OF_TYPE

from .broker_link import BrokerLink
from .errors import StationError
from .interlock import DEFAULT_TIMEOUT_S, InterlockSettings, InterlockVerdict, ask
from .outbox import Outbox
from .sender import Sender, SenderStats
from .spool import SPOOL_FILE, Draft, Headers, Spool, SpoolLimits

_tracer = trace.get_tracer("linetrace.stations")
log = logging.getLogger(__name__)

STATE_FILE = SPOOL_FILE
_SOURCE_RE = re.compile(SOURCE)


def partition_of(key: bytes, partitions: int) -> int:
    """The murmur2 key partitioner of the Java client and aiokafka (CONTRACTS.md)."""
    h: int = murmur2(key)
    return (h & 0x7FFFFFFF) % partitions


class StationClient:
    """Signs, numbers and spools one station's events; a background task delivers them."""

    def __init__(
        self,
        station_id: str,
        private_key: Ed25519PrivateKey,
        bootstrap_servers: str,
        state_dir: Path,
        *,
        limits: SpoolLimits | None = None,
        topic_poll_s: float = 0.5,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 2.0,
        connect_timeout_s: float | None = None,
        delivery_timeout_s: float | None = None,
        stop_timeout_s: float = 10.0,
        request_timeout_ms: int = 10_000,
        window_events: int = 1000,
        window_bytes: int = 900 * 1024,
        console_url: str | None = None,
        console_token: str | None = None,
        validate_timeout_s: float = DEFAULT_TIMEOUT_S,
        fail_closed: bool = True,
        console_ssl_context: ssl.SSLContext | None = None,
        **security: Any,
    ) -> None:
        """`state_dir` holds the spool (`spool.db`); one directory per station.

        `connect_timeout_s`: if set, `start` waits that long for the broker and raises
        `station.broker_unreachable` without one (by default it starts at once and spools).
        `delivery_timeout_s`: the default timeout of `flush`. `stop_timeout_s`: how long
        `stop` tries to deliver what is spooled; the rest is sent after the next `start`.
        `security`: passed to aiokafka's client (`security_protocol`, `ssl_context`, `sasl_*`).

        The interlock (`validate`, `stations/interlock.py`): `console_url` (the console's base
        URL), `console_token` (an API token of a `viewer` user made for this station),
        `validate_timeout_s` (default 2 s: the longest one question may take) and
        `fail_closed` (default True: a console that does not answer in time means not
        allowed, reason `interlock.unavailable`; False: allowed, with that reason recorded);
        `console_ssl_context` for an https console with a private CA.
        """
        if not _SOURCE_RE.match(station_id):
            raise StationError(
                f"station id {station_id!r} must match {SOURCE} (lower case, digits, . _ -)",
                code="station.invalid_id",
            )
        self.station_id = station_id
        self.keyid = keyid_of(private_key.public_key())
        self._key = private_key
        self._bootstrap = bootstrap_servers
        self._spool = Spool(state_dir, station_id, limits)
        self._connect_timeout_s = connect_timeout_s
        self._delivery_timeout_s = delivery_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._link = BrokerLink(bootstrap_servers, f"linetrace-{station_id}",
                                request_timeout_ms=request_timeout_ms, **security)
        self._sender_options: dict[str, Any] = dict(
            window_events=window_events, window_bytes=window_bytes,
            retry_backoff_s=retry_backoff_s, max_retry_backoff_s=max_retry_backoff_s,
            topic_poll_s=topic_poll_s)
        self._interlock = None if console_url is None else InterlockSettings(
            console_url, console_token, validate_timeout_s, fail_closed, console_ssl_context)
        self._outbox: Outbox | None = None
        self._sender: Sender | None = None
        self._task: asyncio.Task[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Open the spool and start delivering what it holds (from earlier runs too)."""
        if self._outbox is not None:
            return
        outbox = Outbox(self._spool)
        try:
            await outbox.open()
            if self._connect_timeout_s is not None:
                await self._wait_for_broker(self._connect_timeout_s)
        except BaseException:
            await outbox.close()
            await self._link.close()
            raise
        self._outbox = outbox
        self._sender = Sender(self.station_id, outbox, self._link, **self._sender_options)
        self._task = asyncio.create_task(self._sender.run(), name=f"sender-{self.station_id}")
        if self._spool.pending:
            log.info("station %s: %d event(s) from an earlier run wait in the spool",
                     self.station_id, self._spool.pending)

    async def _wait_for_broker(self, timeout_s: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        backoff = self._retry_backoff_s
        while True:
            try:
                await self._link.connect()
                return
            except (KafkaError, OSError) as e:
                if loop.time() + backoff > deadline:
                    raise StationError(
                        f"station {self.station_id}: no broker answered at {self._bootstrap} "
                        f"within {timeout_s:g} s ({e}); start one with `linetrace broker` or "
                        "set LINETRACE_BROKER", code="station.broker_unreachable",
                        retriable=True) from None
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff_s)

    async def stop(self, timeout_s: float | None = None) -> None:
        """Try for up to `timeout_s` (default `stop_timeout_s`) to deliver what is spooled,
        then stop. Undelivered events stay in the spool and go first after the next start."""
        outbox, task = self._outbox, self._task
        if outbox is None:
            return
        wait = self._stop_timeout_s if timeout_s is None else timeout_s
        if wait > 0 and self._spool.pending:
            try:
                await self.flush(wait)
            except StationError:
                pass
        if task is not None and self._sender is not None:
            await self._sender.stop(task)
        self._outbox = self._sender = self._task = None
        await self._link.close()
        await outbox.close()
        if self._spool.pending:
            log.info("station %s: stopped with %d event(s) not yet acknowledged; they stay in "
                     "%s and are sent first after the next start", self.station_id,
                     self._spool.pending, self._spool.path)

    async def __aenter__(self) -> StationClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pending(self) -> int:
        """Events spooled but not yet acknowledged by the broker."""
        return self._spool.pending

    @property
    def stats(self) -> SenderStats:
        return self._sender.stats if self._sender is not None else SenderStats()

    def last_seq(self, topic: str) -> int:
        return self._spool.last_seq(topic)

    # --- the interlock -----------------------------------------------------------------

    async def validate(self, serial: str, step: int, lots: Iterable[str] = (),
                       parts: Iterable[str] = ()) -> InterlockVerdict:
        """May unit `serial` start step `step` at this station (installing parts of `lots`,
        the serialized `parts`)? Asks the console's interlock (`POST /api/v1/validate`) and
        returns its verdict (`allowed`, `reasons`), within `validate_timeout_s`; a console that
        does not answer in time gives the `fail_closed` verdict with the reason
        `interlock.unavailable` (`stations/interlock.py`). Needs no `start()`. Raises
        `interlock.not_configured` without `console_url`, `interlock.refused` when the console
        refuses the question (a wrong token, an unknown station)."""
        if self._interlock is None:
            raise StationError(f"station {self.station_id} has no console to ask: give "
                               "StationClient(console_url=..., console_token=...)",
                               code="interlock.not_configured")
        return await ask(self._interlock, self.station_id, serial, step, lots, parts)

    # --- emitting ----------------------------------------------------------------------

    async def emit(
        self,
        event_type: str,
        subject: str,
        body: Body,
        *,
        time: datetime | str,
        event_id: str | None = None,
        traceparent: str | None = None,
    ) -> bytes:
        """Spool one event durably and return its exact value bytes.

        `event_id` defaults to a random UUID; pass your own to make retries of the same
        real-world event recognisable: an emit whose `event_id` the spool already holds
        (a retry after a crash) stores nothing and returns the spooled bytes. `traceparent`
        (W3C) travels as a Kafka header. Delivery happens in the background; `flush` waits.

        Raises StationError: `station.invalid_event` / `station.unknown_type` (nothing stored,
        no number used), `station.spool_full` (the spool is at its limits with unacknowledged
        events: nothing stored; retry later), `station.spool_failed`, `station.not_started`.
        """
        outbox = self._outbox
        if outbox is None:
            raise StationError(f"station {self.station_id}: call start() before emit()",
                               code="station.not_started")
        topic = TOPIC_OF_TYPE.get(event_type)
        if topic is None:
            raise StationError(
                f"event type {event_type!r} has no topic; known: {', '.join(sorted(TOPIC_OF_TYPE))}",
                code="station.unknown_type",
            )
        key = subject.encode("utf-8")
        reuse = event_id is not None
        eid = event_id if event_id is not None else str(uuid.uuid4())

        def build(seq: int) -> tuple[bytes, Headers]:
            try:
                value = encode_event(
                    event_type=event_type, source=self.station_id, subject=subject, body=body,
                    time=time, event_id=eid, stationseq=seq,
                )
            except (MalformedEvent, TypeError, ValueError) as e:
                raise StationError(
                    f"station {self.station_id}: {event_type} for {subject!r} is not a valid "
                    f"event: {e}", code="station.invalid_event",
                ) from None
            headers = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()), *sign_value(value, self._key)]
            if traceparent is not None:
                headers.append((TRACEPARENT_HEADER, traceparent.encode("ascii")))
            return value, headers

        partition = partition_of(key, ALL_TOPICS[topic])
        # The event's trace starts here unless the caller passed one: a `create` span whose
        # context travels as `traceparent`, continued by the worker (OpenTelemetry API only;
        # a no-op unless the station's process configured an SDK).
        with _tracer.start_as_current_span(
                f"create {topic}", kind=SpanKind.PRODUCER,
                attributes={"messaging.system": "kafka", "messaging.operation.type": "create",
                            "messaging.destination.name": topic,
                            "messaging.destination.partition.id": str(partition),
                            "messaging.message.id": eid}):
            if traceparent is None:
                carrier: dict[str, str] = {}
                propagate.inject(carrier)
                traceparent = carrier.get(TRACEPARENT_HEADER)
            draft = Draft(topic, partition, key, eid, build, reuse)
            return await outbox.append(draft)

    async def flush(self, timeout_s: float | None = None) -> None:
        """Wait until every event spooled before this call is acknowledged by the broker.

        Raises `station.delivery_timeout` after `timeout_s` (default `delivery_timeout_s`,
        None = wait as long as it takes); the events stay spooled and are still sent.
        """
        outbox, sender, task = self._outbox, self._sender, self._task
        if outbox is None or sender is None or task is None:
            raise StationError(f"station {self.station_id}: call start() before flush()",
                               code="station.not_started")
        timeout = self._delivery_timeout_s if timeout_s is None else timeout_s
        loop = asyncio.get_running_loop()
        deadline = None if timeout is None else loop.time() + timeout
        last = await outbox.last_id()
        while True:
            sender.progress.clear()
            if not await outbox.has_pending_through(last):
                return
            if task.done():
                raise StationError(f"station {self.station_id}: the sender stopped: "
                                   f"{task.exception() if not task.cancelled() else 'cancelled'}",
                                   code="station.stopped")
            left = None if deadline is None else deadline - loop.time()
            if left is not None and left <= 0:
                raise StationError(
                    f"station {self.station_id}: {self._spool.pending} event(s) not acknowledged "
                    f"within {timeout:g} s ({sender.stats.last_error or 'still sending'}); they "
                    "stay in the spool and are still sent, in order",
                    code="station.delivery_timeout", retriable=True)
            try:
                wait = 1.0 if left is None else min(left, 1.0)
                await asyncio.wait_for(sender.progress.wait(), wait)
            except TimeoutError:
                pass
