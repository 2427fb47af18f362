"""StationClient: how station software puts signed events on the line's topics.

One client per station. `emit` encodes the event with the one canonical encoder, numbers it
with the station's next `stationseq` for that topic, signs the exact bytes, and waits until the
broker has acknowledged it (`acks=all`). Ordering is the point (CONTRACTS.md, ingest rule 4):
a station never sends a newer event ahead of an older unacknowledged one, so one event is in
flight per station and a failed one stays at the head of the backlog, re-sent byte for byte
(a re-encoded retry would be a different value under the same id: equivocation).

The backlog is in memory in this version; the durable SQLite spool replaces `_backlog` and
`SeqStore` with one table written in the same transaction, keeping this interface.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError, KafkaTimeoutError
from aiokafka.partitioner import murmur2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.bodies import Body
from linetrace.schemas.envelope import CONTENT_TYPE, SOURCE, encode_event
from linetrace.schemas.errors import MalformedEvent
from linetrace.schemas.signing import (
    CONTENT_TYPE_HEADER, TRACEPARENT_HEADER, keyid_of, sign_value,
)
from linetrace.schemas.topics import ALL_TOPICS, TOPIC_OF_TYPE

from .errors import StationError

log = logging.getLogger(__name__)

MAX_SEQ = 10**16 - 1
STATE_FILE = "stationseq.json"
_SOURCE_RE = re.compile(SOURCE)


def partition_of(key: bytes, partitions: int) -> int:
    """The murmur2 key partitioner of the Java client and aiokafka (CONTRACTS.md)."""
    h: int = murmur2(key)
    return (h & 0x7FFFFFFF) % partitions


class SeqStore:
    """The station's `stationseq` per topic, persisted so numbering survives restarts.

    The file records, per topic, the highest number the station may already have used. Numbers
    are reserved `block` at a time (one atomic, fsync'd write per block, not per event); after a
    restart numbering resumes above the reservation, so it is strictly increasing with gaps,
    which CONTRACTS.md allows. A missing file means a new station: numbering starts at 1.
    """

    def __init__(self, state_dir: Path, station_id: str, *, block: int = 64) -> None:
        if block < 1:
            raise ValueError("block must be >= 1")
        self.path = state_dir / STATE_FILE
        self.station_id = station_id
        self.block = block
        self._reserved: dict[str, int] = {}
        self._last: dict[str, int] = {}

    def load(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            self._reserved, self._last = {}, {}
            return
        try:
            doc = json.loads(raw)
            owner = doc["station_id"]
            reserved = {str(t): int(n) for t, n in doc["reserved"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StationError(
                f"{self.path} is not a readable stationseq file ({e}); restore it from backup, "
                "or move it away only if this station's key is re-enrolled (numbering restarts)",
                code="station.state_corrupt",
            ) from None
        if owner != self.station_id:
            raise StationError(
                f"{self.path} belongs to station {owner!r}, not {self.station_id!r}; "
                "give each station its own state directory",
                code="station.state_mismatch",
            )
        self._reserved = reserved
        self._last = dict(reserved)

    def last(self, topic: str) -> int:
        """The last number used (or reserved before a restart) on `topic`; 0 if none."""
        return self._last.get(topic, 0)

    def peek(self, topic: str) -> int:
        n = self.last(topic) + 1
        if n > MAX_SEQ:
            raise StationError(
                f"stationseq for {topic} is exhausted; enrol a new station id",
                code="station.seq_exhausted",
            )
        return n

    def commit(self, topic: str, seq: int) -> None:
        """Record `seq` as used; persists a new reservation first when needed."""
        if seq <= self.last(topic):
            raise ValueError(f"stationseq {seq} is not above {self.last(topic)} on {topic}")
        if seq > self._reserved.get(topic, 0):
            reserved = dict(self._reserved)
            reserved[topic] = min(seq + self.block - 1, MAX_SEQ)
            self._write(reserved)
            self._reserved = reserved
        self._last[topic] = seq

    def _write(self, reserved: dict[str, int]) -> None:
        data = json.dumps(
            {"version": 1, "station_id": self.station_id, "reserved": reserved},
            sort_keys=True,
        ).encode()
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        try:
            fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError:  # pragma: no cover - platforms without directory fds
            return
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


@dataclass(frozen=True)
class _Record:
    """One signed event waiting for its acknowledgement (a spool row, later)."""

    topic: str
    partition: int
    key: bytes
    value: bytes
    headers: list[tuple[str, bytes]]
    seq: int


class StationClient:
    """Signs, numbers and sends one station's events, in order, until acknowledged."""

    def __init__(
        self,
        station_id: str,
        private_key: Ed25519PrivateKey,
        bootstrap_servers: str,
        state_dir: Path,
        *,
        seq_block: int = 64,
        topic_poll_s: float = 0.5,
        retry_backoff_s: float = 0.1,
        max_retry_backoff_s: float = 5.0,
        connect_timeout_s: float = 30.0,
        delivery_timeout_s: float | None = None,
        request_timeout_ms: int = 10_000,
        linger_ms: int = 1,
    ) -> None:
        if not _SOURCE_RE.match(station_id):
            raise StationError(
                f"station id {station_id!r} must match {SOURCE} (lower case, digits, . _ -)",
                code="station.invalid_id",
            )
        self.station_id = station_id
        self.keyid = keyid_of(private_key.public_key())
        self._key = private_key
        self._bootstrap = bootstrap_servers
        self._seqs = SeqStore(state_dir, station_id, block=seq_block)
        self._topic_poll_s = topic_poll_s
        self._retry_backoff_s = retry_backoff_s
        self._max_retry_backoff_s = max_retry_backoff_s
        self._connect_timeout_s = connect_timeout_s
        self._delivery_timeout_s = delivery_timeout_s
        self._request_timeout_ms = request_timeout_ms
        self._linger_ms = linger_ms
        self._producer: AIOKafkaProducer | None = None
        self._lock = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._backlog: deque[_Record] = deque()
        self._verified: set[str] = set()

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None:
        """Load the numbering state and connect (retrying until `connect_timeout_s`)."""
        if self._producer is not None:
            return
        self._seqs.load()
        self._stopping.clear()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._connect_timeout_s
        backoff = self._retry_backoff_s
        while True:
            producer = AIOKafkaProducer(
                bootstrap_servers=self._bootstrap,
                client_id=f"linetrace-{self.station_id}",
                acks="all",
                enable_idempotence=False,  # the embedded broker has no idempotent producer
                linger_ms=self._linger_ms,
                request_timeout_ms=self._request_timeout_ms,
            )
            try:
                await producer.start()
            except (KafkaError, OSError) as e:
                await producer.stop()
                if loop.time() + backoff > deadline:
                    raise StationError(
                        f"station {self.station_id}: no broker answered at {self._bootstrap} "
                        f"within {self._connect_timeout_s:g} s ({e}); start one with "
                        "`linetrace broker` or set LINETRACE_BROKER",
                        code="station.broker_unreachable",
                        retriable=True,
                    ) from None
                log.warning("station %s: broker %s not reachable (%s); retrying",
                            self.station_id, self._bootstrap, e)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._max_retry_backoff_s)
                continue
            self._producer = producer
            return

    async def stop(self) -> None:
        """Stop sending. An emit still retrying raises `station.stopped`."""
        self._stopping.set()
        producer, self._producer = self._producer, None
        try:
            await asyncio.wait_for(self._lock.acquire(), self._request_timeout_ms / 1000 + 1)
        except TimeoutError:
            log.warning("station %s: stopping while an event is still in flight", self.station_id)
        else:
            self._lock.release()
        if self._backlog:
            log.warning(
                "station %s: %d event(s) not acknowledged by the broker are dropped at stop "
                "(first stationseq %d on %s)", self.station_id, len(self._backlog),
                self._backlog[0].seq, self._backlog[0].topic,
            )
            self._backlog.clear()
        self._verified.clear()
        if producer is not None:
            await producer.stop()

    async def __aenter__(self) -> StationClient:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def pending(self) -> int:
        """Events signed and numbered but not yet acknowledged (kept for the next send)."""
        return len(self._backlog)

    def last_seq(self, topic: str) -> int:
        return self._seqs.last(topic)

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
        """Send one event and return its exact value bytes once the broker acknowledged it.

        `event_id` defaults to a random UUID; pass your own to make retries of the same
        real-world event recognisable. `traceparent` (W3C) travels as a Kafka header.

        Raises StationError: `station.invalid_event` / `station.unknown_type` (nothing sent,
        no number used), `station.delivery_timeout` (kept; sent before anything newer by the
        next `emit` or `flush`), `station.send_failed`, `station.stopped`.
        """
        if self._producer is None:
            raise StationError(
                f"station {self.station_id}: call start() before emit()", code="station.not_started"
            )
        topic = TOPIC_OF_TYPE.get(event_type)
        if topic is None:
            raise StationError(
                f"event type {event_type!r} has no topic; known: {', '.join(sorted(TOPIC_OF_TYPE))}",
                code="station.unknown_type",
            )
        async with self._lock:
            await self._drain()
            seq = self._seqs.peek(topic)
            try:
                value = encode_event(
                    event_type=event_type, source=self.station_id, subject=subject, body=body,
                    time=time, event_id=event_id, stationseq=seq,
                )
            except (MalformedEvent, TypeError, ValueError) as e:
                raise StationError(
                    f"station {self.station_id}: {event_type} for {subject!r} is not a valid "
                    f"event: {e}", code="station.invalid_event",
                ) from None
            self._seqs.commit(topic, seq)
            key = subject.encode("utf-8")
            headers = [(CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()), *sign_value(value, self._key)]
            if traceparent is not None:
                headers.append((TRACEPARENT_HEADER, traceparent.encode("ascii")))
            self._backlog.append(_Record(
                topic=topic, partition=partition_of(key, ALL_TOPICS[topic]), key=key,
                value=value, headers=headers, seq=seq,
            ))
            await self._drain()
            return value

    async def flush(self) -> None:
        """Send whatever is left of the backlog (after a delivery timeout)."""
        async with self._lock:
            await self._drain()

    async def _drain(self) -> None:
        while self._backlog:
            await self._deliver(self._backlog[0])
            self._backlog.popleft()

    async def _deliver(self, rec: _Record) -> None:
        loop = asyncio.get_running_loop()
        deadline = None if self._delivery_timeout_s is None else loop.time() + self._delivery_timeout_s
        backoff = self._retry_backoff_s
        while True:
            producer = self._live_producer(rec)
            try:
                await self._ensure_topic(producer, rec.topic, deadline)
                await producer.send_and_wait(
                    rec.topic, rec.value, key=rec.key, partition=rec.partition, headers=rec.headers
                )
                return
            except KafkaError as e:
                if not (e.retriable or isinstance(e, KafkaTimeoutError)):
                    raise StationError(
                        f"station {self.station_id}: the broker refused stationseq {rec.seq} on "
                        f"{rec.topic}: {e}", code="station.send_failed",
                    ) from e
                reason = str(e)
            except (AssertionError, OSError) as e:  # aiokafka asserts partitions it knows of
                reason = f"{type(e).__name__}: {e}"
            self._verified.discard(rec.topic)
            if deadline is not None and loop.time() + backoff > deadline:
                raise self._timeout(rec, reason)
            log.warning("station %s: sending stationseq %d to %s failed (%s); retrying in %.1f s",
                        self.station_id, rec.seq, rec.topic, reason, backoff)
            await self._pause(backoff)
            backoff = min(backoff * 2, self._max_retry_backoff_s)

    async def _ensure_topic(self, producer: AIOKafkaProducer, topic: str,
                            deadline: float | None) -> None:
        """Wait until `topic` has the partition count of CONTRACTS.md (never produce otherwise)."""
        expected = ALL_TOPICS[topic]
        cluster: Any = producer.client.cluster
        if topic in self._verified and _count(cluster.partitions_for_topic(topic)) == expected:
            return
        loop = asyncio.get_running_loop()
        logged_at: float | None = None
        while True:
            producer.client.add_topic(topic)
            await producer.client.force_metadata_update()
            found = _count(cluster.partitions_for_topic(topic))
            if found == expected:
                if logged_at is not None:
                    log.info("station %s: topic %s now has %d partitions; sending",
                             self.station_id, topic, expected)
                self._verified.add(topic)
                return
            now = loop.time()
            if logged_at is None or now - logged_at >= 30:
                log.warning(
                    "station %s: waiting for topic %s: it has %s partition(s), linetrace needs "
                    "%d (the embedded broker auto-creates topics with 4; `linetrace broker` "
                    "recreates them with the right count at start)",
                    self.station_id, topic, found or "no", expected,
                )
                logged_at = now
            if deadline is not None and now + self._topic_poll_s > deadline:
                raise StationError(
                    f"station {self.station_id}: topic {topic} has {found} partition(s), not "
                    f"{expected}; create it with `linetrace broker`",
                    code="station.delivery_timeout", retriable=True,
                )
            await self._pause(self._topic_poll_s)
            self._live_producer(None)

    def _live_producer(self, rec: _Record | None) -> AIOKafkaProducer:
        if self._stopping.is_set() or self._producer is None:
            what = f"stationseq {rec.seq} on {rec.topic}" if rec else "an event"
            raise StationError(
                f"station {self.station_id} was stopped before the broker acknowledged {what}",
                code="station.stopped", retriable=True,
            )
        return self._producer

    async def _pause(self, seconds: float) -> None:
        """Sleep, but wake at once when the client is stopped."""
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    def _timeout(self, rec: _Record, reason: str) -> StationError:
        return StationError(
            f"station {self.station_id}: stationseq {rec.seq} on {rec.topic} not acknowledged "
            f"within {self._delivery_timeout_s:g} s ({reason}); it is kept and sent first next "
            "time", code="station.delivery_timeout", retriable=True,
        )


def _count(partitions: set[int] | None) -> int:
    return len(partitions) if partitions else 0
