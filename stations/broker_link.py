"""The StationClient's wire to the broker: metadata, produce and fetch, one request at a time.

Why not `AIOKafkaProducer`: its sender retries a failed batch by itself, reconnecting as
needed. Against the embedded broker, which restarts empty, such a retry can land new events on
the new, empty broker before the sender has replayed what the old one lost, and ingest would
then quarantine the replayed older ones as reordered. Here every produce request goes over a
connection object the sender holds and has *confirmed* (broker still holds what it
acknowledged, see `sender.py`); a connection never outlives its broker process, so a request
either reaches the confirmed broker or fails. Nothing is retried below the sender.

The connections, API version negotiation and security settings are aiokafka's
(`AIOKafkaClient`); the requests are aiokafka's protocol classes. Two things of that client are
left out because they only make noise here: its background metadata refresher (every metadata
request is ours, `describe`), and its connection attempts to a broker that is not listening:
before aiokafka opens a connection, a plain TCP probe checks the address, so while the broker
is away the sender fails quietly (and logs the outage once) instead of aiokafka logging an
ERROR at every retry.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.client import AIOKafkaClient, ConnectionGroup
from aiokafka.errors import KafkaConnectionError, KafkaError, for_code
from aiokafka.protocol.fetch import FetchRequest
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.protocol.produce import ProduceRequest
from aiokafka.record.default_records import DefaultRecordBatchBuilder
from aiokafka.record.memory_records import MemoryRecords

from .spool import Spooled, TopicPartition

Connection = Any  # aiokafka.conn.AIOKafkaConnection (untyped)

UNKNOWN_TOPIC_OR_PARTITION = 3
OFFSET_OUT_OF_RANGE = 1
_FETCH_PARTITION_BYTES = 1024 * 1024


@dataclass(frozen=True)
class ClusterView:
    """What one metadata answer says about our topics (never auto-creating them)."""

    cluster_id: str | None
    partitions: dict[str, int]            # topic -> partition count; absent if it does not exist
    leaders: dict[TopicPartition, int]    # -> node id, -1 while leaderless


@dataclass(frozen=True)
class Landed:
    """The broker's answer for one partition's batch: error code 0 and its base offset."""

    error: int
    base_offset: int

    @property
    def ok(self) -> bool:
        return self.error == 0

    def exception(self) -> KafkaError:
        err: KafkaError = for_code(self.error)()
        return err


@dataclass(frozen=True)
class Found:
    """What a partition holds at one offset: the end offset (high watermark) and the value."""

    error: int
    high_watermark: int
    value: bytes | None


def error_name(code: int) -> str:
    return str(for_code(code).__name__)


class BrokerLink:
    def __init__(self, bootstrap: str, client_id: str, *, request_timeout_ms: int = 10_000,
                 **security: Any) -> None:
        self.bootstrap = bootstrap
        self.client_id = client_id
        self.request_timeout_ms = request_timeout_ms
        self._security = security
        self._client: Any = None

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def connect(self) -> None:
        """Bootstrap (raises KafkaConnectionError while no broker answers)."""
        if self._client is not None:
            return
        client = AIOKafkaClient(bootstrap_servers=self.bootstrap, client_id=self.client_id,
                                request_timeout_ms=self.request_timeout_ms,
                                metadata_max_age_ms=60_000, **self._security)
        await _probe_any(_hosts(self.bootstrap), self.request_timeout_ms / 1000)
        try:
            await client.bootstrap()
        except BaseException:
            await client.close()
            raise
        sync, client._sync_task = client._sync_task, None  # see the module docstring
        if sync is not None:
            sync.cancel()
            await asyncio.gather(sync, return_exceptions=True)
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    def _require(self) -> Any:
        if self._client is None:
            raise KafkaConnectionError("not connected")
        return self._client

    async def describe(self, topics: Sequence[str]) -> ClusterView:
        """Cluster id, partition counts and leaders of `topics`, without creating any
        (`allow_auto_topic_creation=False`, which the embedded broker honours)."""
        client = self._require()
        node = client.get_random_node()
        if node is None:
            raise KafkaConnectionError("no broker known")
        await self._reachable(client, node)
        resp = await client.send(node, MetadataRequest(sorted(topics),
                                                       allow_auto_topic_creation=False))
        client.cluster.update_metadata(resp)
        counts: dict[str, int] = {}
        leaders: dict[TopicPartition, int] = {}
        for t in resp.topics:
            error, name, parts = t[0], t[1], t[-1]
            if error != 0 or not parts:
                continue
            counts[name] = len(parts)
            for p in parts:
                leaders[(name, p[1])] = p[2]
        return ClusterView(getattr(resp, "cluster_id", None), counts, leaders)

    async def connections(self, nodes: set[int]) -> dict[int, Connection]:
        """The live connection to each node, opening one where there is none."""
        client = self._require()
        out: dict[int, Connection] = {}
        for node in sorted(nodes):
            await self._reachable(client, node)
            conn = await client._get_conn(node)  # aiokafka's pool; private but long stable
            if conn is None or not conn.connected():
                raise KafkaConnectionError(f"no connection to broker node {node}")
            out[node] = conn
        return out

    async def _reachable(self, client: Any, node: int) -> None:
        """Raise KafkaConnectionError, quietly, if `node` has no live connection and does
        not accept one (aiokafka would log an ERROR for each such attempt)."""
        conn = client._conns.get((node, ConnectionGroup.DEFAULT))
        if conn is not None and conn.connected():
            return
        broker = client.cluster.broker_metadata(node)
        if broker is not None:
            await _probe_any([(broker.host, broker.port)], self.request_timeout_ms / 1000)

    async def produce(self, conn: Connection, batches: Mapping[TopicPartition, list[Spooled]],
                      ) -> dict[TopicPartition, Landed]:
        """One produce request (acks=all) with one record batch per partition.

        A batch is atomic on the broker, and a partition has at most one batch in flight, so
        a partition never holds a later event without the earlier ones. Raises KafkaError
        (and closes the connection) when the outcome is unknown.
        """
        topics: dict[str, list[tuple[int, bytes]]] = defaultdict(list)
        for (topic, partition), rows in batches.items():
            topics[topic].append((partition, _record_batch(rows)))
        req = ProduceRequest(None, -1, self.request_timeout_ms, list(topics.items()))
        resp = await self._send(conn, req)
        out: dict[TopicPartition, Landed] = {}
        for topic, parts in resp.topics:
            for p in parts:
                out[(topic, p[0])] = Landed(p[1], p[2])
        return out

    async def read_at(self, conn: Connection, wanted: Mapping[TopicPartition, int],
                      ) -> dict[TopicPartition, Found]:
        """The high watermark of each partition and the value of the record at its offset."""
        topics: dict[str, list[tuple[int, int, int]]] = defaultdict(list)
        for (topic, partition), offset in wanted.items():
            topics[topic].append((partition, offset, _FETCH_PARTITION_BYTES))
        # max_wait 100 ms, min_bytes 0: answers at once; the embedded broker answers nothing
        # at all to max_wait 0.
        req = FetchRequest(100, 0, 8 * _FETCH_PARTITION_BYTES, 0, list(topics.items()))
        resp = await self._send(conn, req)
        out: dict[TopicPartition, Found] = {}
        for topic, parts in resp.topics:
            for p in parts:
                tp = (topic, p[0])
                value = None
                if p[1] == 0 and tp in wanted:
                    value = _value_at(p[-1], wanted[tp])
                out[tp] = Found(p[1], p[2], value)
        return out

    async def _send(self, conn: Connection, request: Any) -> Any:
        try:
            return await conn.send(request)
        except (asyncio.TimeoutError, KafkaError, OSError) as e:
            # The outcome is unknown: never reuse this connection unconfirmed.
            conn.close()
            if isinstance(e, KafkaError):
                raise
            raise KafkaConnectionError(f"{type(e).__name__}: {e}") from e


def _hosts(bootstrap: str) -> list[tuple[str, int]]:
    """host:port pairs of a bootstrap string (`h1:9092,h2:9092`, `[::1]:9092`)."""
    out: list[tuple[str, int]] = []
    for item in bootstrap.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit():
            host, port = item.strip(), "9092"
        out.append((host.strip("[]"), int(port)))
    return out


async def _probe_any(hosts: Sequence[tuple[str, int]], timeout_s: float) -> None:
    """Return once one of `hosts` accepts a TCP connection; KafkaConnectionError if none."""
    errors: list[str] = []
    for host, port in hosts:
        try:
            _, writer = await asyncio.wait_for(asyncio.open_connection(host, port),
                                               min(timeout_s, 5.0))
        except (OSError, asyncio.TimeoutError) as e:
            errors.append(f"{host}:{port}: {e or type(e).__name__}")
            continue
        writer.close()
        try:
            await writer.wait_closed()
        except OSError:
            pass
        return
    raise KafkaConnectionError("no broker listening (" + "; ".join(errors) + ")")


def _record_batch(rows: list[Spooled]) -> bytes:
    builder = DefaultRecordBatchBuilder(2, 0, 0, -1, -1, 0, 1 << 30)
    for i, r in enumerate(rows):
        if builder.append(i, timestamp=r.spooled_ms, key=r.key, value=r.value,
                          headers=list(r.headers)) is None:  # pragma: no cover - size is bounded
            raise ValueError("record batch overflow")
    return bytes(builder.build())


def _value_at(records: bytes | None, offset: int) -> bytes | None:
    if not records:
        return None
    mr = MemoryRecords(records)
    while mr.has_next():
        batch = mr.next_batch()
        if batch is None:
            break
        for rec in batch:
            if rec.offset == offset:
                return bytes(rec.value) if rec.value is not None else b""
    return None
