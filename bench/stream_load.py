"""Plant-shaped streams of signed records, and the real worker run against them (shared by
`bench_catchup.py` and `bench_memory.py`).

The records come from the stations `bench_pipeline` enrols (`bench_pipeline.keys()`,
`STATIONS`, `prepare_ledger`), so every record verifies. A `Plant` makes them one at a time;
`fill` streams them into the broker in chunks (the bench never holds a 750 MB backlog in its
own memory) and returns, per partition, the offset just past the last record it wrote: the
worker has drained them when `ingest_positions` stands there for every partition.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaProducer
from sqlalchemy import create_engine, text

from linetrace.ledger.db import normalise_url
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.schemas.topics import TOPIC_OF_TYPE

from .bench_pipeline import Record as Record  # re-exported for the benches
from .bench_pipeline import _env, _sample, keys

Partition = tuple[str, int]


@dataclass
class Plant:
    """Signed records of a plant: 8-GPU telemetry of the units in burn-in, and the rest of
    the line (lifecycle of units in assembly, receipts, station states) in a fixed cycle."""

    burnin_serial: Callable[[int], str]
    assembly_serial: Callable[[int], str]
    seq: dict[str, int] = field(default_factory=dict)
    runs: dict[int, str] = field(default_factory=dict)
    other_count: int = 0

    def __post_init__(self) -> None:
        self.keys = keys()

    def _emit(self, station: str, etype: str, subject: str, body: b.Body, t: datetime
              ) -> Record:
        self.seq[station] = max(self.seq.get(station, 0) + 1, int(t.timestamp() * 1_000_000))
        value = encode_event(event_type=etype, source=station, subject=subject, body=body,
                             time=t, stationseq=self.seq[station], event_id=str(uuid.uuid4()))
        return (TOPIC_OF_TYPE[etype], subject.encode(), value,
                signing.sign_value(value, self.keys[station]))

    def telemetry(self, unit: int, t: datetime, tick: int) -> Record:
        run = self.runs.setdefault(unit, str(uuid.uuid5(uuid.NAMESPACE_OID, f"run {unit}")))
        return self._emit(f"burnin-0{1 + unit % 2}", "burnin.telemetry", self.burnin_serial(unit),
                          b.BurninTelemetry(run_id=run, samples=[_sample(g, unit, tick)
                                                                  for g in range(8)]), t)

    def other(self, t: datetime) -> list[Record]:
        """The next non-telemetry event(s) of the cycle: a GPU install (work.started +
        materials.installed, 2 events), a lot receipt, a station state; 2 in 4 are lifecycle."""
        k = self.other_count
        self.other_count += 1
        kind = k % 3
        if kind == 0:
            serial, txn = self.assembly_serial(k), str(uuid.uuid4())
            return [
                self._emit("gpu-install-01", "work.started", serial, b.WorkStarted(
                    transaction_id=txn, step=50, operation="GPU install", work_order="WO-P",
                    product="A", kind="server"), t),
                self._emit("gpu-install-01", "materials.installed", serial, b.MaterialsInstalled(
                    transaction_id=txn, items=[b.InstalledItem(
                        lot="LOT-GPU-P", mpn="699-2G520-0200-000", category="gpu",
                        serial=f"GPU-A-{k:08d}", slot=0)]), t)]
        if kind == 1:
            lot = f"LOT-C-{k:08d}"
            return [self._emit("receiving-01", "material.received", lot, b.MaterialReceived(
                lot=lot, mpn="699-2G520-0200-000", supplier="NVIDIA", date_code="2026-08",
                qty=8), t)]
        return [self._emit("ict-01", "station.state", "ict-01", b.StationState(state=1000), t)]


def line_second(plant: Plant, units: int, other_per_s: float, t0: datetime, s: int
                ) -> list[Record]:
    """Everything the plant emits in line-second `s`: one telemetry record per unit in
    burn-in, and `other_per_s` other events on average (spread over the second)."""
    t = t0 + timedelta(seconds=s)
    want = int(other_per_s * (s + 1)) - int(other_per_s * s)
    out: list[Record] = []
    step = max(1, units // (want + 1))
    others = 0
    for u in range(units):
        out.append(plant.telemetry(u, t + timedelta(microseconds=u), s))
        if others < want and (u + 1) % step == 0:
            out.extend(plant.other(t + timedelta(microseconds=u)))
            others += 1
    while others < want:
        out.extend(plant.other(t + timedelta(microseconds=units)))
        others += 1
    return out


def other_events_per_cycle() -> float:
    """Records per `Plant.other` call on average (2 + 1 + 1 over its cycle of three)."""
    return 4 / 3


async def fill(bootstrap: str, chunks: Iterable[list[Record]],
               pace: float | None = None) -> tuple[dict[Partition, int], int, int]:
    """Send every chunk (waiting for each), optionally one chunk per `pace` seconds of wall
    time (a live line). Returns (offset past the last record per partition, records, bytes)."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         max_batch_size=1 << 20, max_request_size=8 << 20)
    await p.start()
    ends: dict[Partition, int] = {}
    n = size = 0
    start = time.monotonic()
    try:
        for i, chunk in enumerate(chunks):
            futs = [await p.send(t, v, key=k, headers=h) for t, k, v, h in chunk]
            for md in await asyncio.gather(*futs):
                key = (md.topic, md.partition)
                ends[key] = max(ends.get(key, 0), md.offset + 1)
            n += len(chunk)
            size += sum(len(r[2]) for r in chunk)
            if pace is not None:
                await asyncio.sleep(max(0.0, start + (i + 1) * pace - time.monotonic()))
    finally:
        await p.stop()
    return ends, n, size


def drained(pos: dict[Partition, int], ends: dict[Partition, int]) -> int:
    """Records of `ends` the ledger has stored (each partition counted up to its end)."""
    return sum(min(pos.get(k, 0), e) for k, e in ends.items())


class WorkerProc:
    """One real `linetrace worker` subprocess on `db`, and the ledger's positions."""

    def __init__(self, bootstrap: str, data: Path, db: str, code: Path | None = None) -> None:
        self.bootstrap, self.data, self.db, self.code = bootstrap, data, db, code
        self.engine = create_engine(normalise_url(db))
        self.proc: subprocess.Popen[bytes] | None = None
        self.launched = 0.0

    def start(self) -> None:
        env = _env(self.code, LINETRACE_BROKER=f"kafka://{self.bootstrap}", LINETRACE_DB=self.db,
                   LINETRACE_LOG_LEVEL="warning", LINETRACE_GROUP=f"bench-{self.data.name}")
        log = (self.data / "worker.log").open("ab")
        self.launched = time.perf_counter()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "linetrace.cli.main", "worker", "--data-dir", str(self.data)],
            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def positions(self) -> dict[Partition, int]:
        with self.engine.connect() as conn:
            rows = conn.execute(text("SELECT topic, partition, next_offset FROM ingest_positions"))
            return {(str(t), int(str(p))): int(str(o)) for t, p, o in rows}

    def count(self, sql: str) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(text(sql)).scalar() or 0)

    def cpu_s(self) -> float:
        """CPU seconds (user + system) the worker's process tree has used so far."""
        return cpu_seconds(self.proc.pid) if self.proc is not None else 0.0

    def wait(self, ends: dict[Partition, int], timeout: float = 3600.0,
             every: float = 0.1) -> list[tuple[float, int, float]]:
        """Poll until every partition of `ends` is drained; (perf_counter, drained, worker
        CPU-s) samples."""
        total = sum(ends.values())
        samples: list[tuple[float, int, float]] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited; see {self.data / 'worker.log'}")
            done = drained(self.positions(), ends)
            samples.append((time.perf_counter(), done, self.cpu_s()))
            if done >= total:
                return samples
            time.sleep(every)
        raise RuntimeError(f"worker did not drain within {timeout:.0f} s "
                           f"({samples[-1][1] if samples else 0} of {total})")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.stop()
        self.engine.dispose()


@dataclass(frozen=True)
class Drain:
    """What the samples of one drain say: start-up (launch to the first stored batch), the
    sustained rate (first stored batch to the last record), and the total time."""

    records: int
    startup_s: float
    drain_s: float
    total_s: float
    cpu_s: float = float("nan")  # the worker's CPU seconds over the same span

    @property
    def rate(self) -> float:
        return self.records / self.drain_s if self.drain_s > 0 else float("nan")

    @property
    def per_cpu_s(self) -> float:
        """Records per CPU-second of the worker: moves less with other load than the rate
        does (the database server's CPU is not in it)."""
        return self.records / self.cpu_s if self.cpu_s > 0 else float("nan")


def drain_of(samples: list[tuple[float, int, float]], launched: float) -> Drain:
    base = samples[0][1]
    first = next((i for i, s in enumerate(samples) if s[1] > base), len(samples) - 1)
    t_first, d_first, c_first = samples[first]
    t_last, d_last, c_last = samples[-1]
    # The first batch's records are counted from the sample before it (their time is unknown
    # within one poll interval): sustained rate = records after the first batch / time after.
    return Drain(records=d_last - d_first, startup_s=t_first - launched,
                 drain_s=t_last - t_first, total_s=t_last - launched, cpu_s=c_last - c_first)


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo.extend(int(k) for k in (task / "children").read_text().split())
        except (OSError, ValueError):
            continue
    return out


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process tree (/proc/PID/stat; 0 for what is gone)."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for p in _tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return total / ticks


def rss_kb(pid: int) -> int:
    """Resident set of a process and its descendants, in KiB (/proc; 0 once it is gone)."""
    total = 0
    for p in _tree(pid):
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
                    break
        except (OSError, ValueError):
            continue
    return total


class RssSampler(threading.Thread):
    """Samples a process tree's RSS every `every` seconds: (perf_counter, KiB)."""

    def __init__(self, pid: int, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.samples: list[tuple[float, int]] = []
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            kb = rss_kb(self.pid)
            if kb:
                self.samples.append((time.perf_counter(), kb))
            self._halt.wait(self.every)

    def stop(self) -> None:
        self._halt.set()
        self.join(5)


def loadavg() -> float:
    return os.getloadavg()[0]


def code_under_test() -> str:
    """Which linetrace the worker runs: a `--at` snapshot, or this checkout (HEAD and the
    uncommitted files of the rooms the worker imports)."""
    if os.environ.get("LT_BENCH_CODE"):
        return os.environ["LT_BENCH_CODE"]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "schemas", "ledger",
                                "streams", "cli"], capture_output=True, text=True,
                               check=True).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown tree"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {head}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def run_at(module: str, argv: list[str]) -> list[str]:
    """`--at REV` anywhere in argv: run this bench again with linetrace taken from
    `git archive REV` (extracted once under /tmp) ahead of the editable install, so the
    bench, the ledger's schema and the worker all run that commit whatever the checkout
    holds. Returns argv unchanged when there is no --at (or in the re-run)."""
    if "--at" not in argv or os.environ.get("LT_BENCH_CODE"):
        return argv
    i = argv.index("--at")
    rev, rest = argv[i + 1], argv[:i] + argv[i + 2:]
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"],
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = Path(tempfile_dir()) / f"linetrace-at-{sha[:12]}"
    if not (dest / "linetrace" / "streams" / "worker.py").exists():
        (dest / "linetrace").mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest / "linetrace")], input=archive, check=True)
    env = {**os.environ, "PYTHONPATH": f"{dest}{os.pathsep}{os.environ.get('PYTHONPATH', '')}",
           "LT_BENCH_CODE": f"commit {sha[:7]} (`--at {rev}`: git archive of it, the "
                            "checkout's uncommitted changes not included)",
           "LT_BENCH_ARGV": "\x1f".join(argv)}
    os.execve(sys.executable, [sys.executable, "-m", module, *rest], env)
    raise AssertionError("unreachable")


def shown_argv(argv: list[str]) -> list[str]:
    """The argv the user typed (with --at), for the command printed in the docs."""
    raw = os.environ.get("LT_BENCH_ARGV")
    return raw.split("\x1f") if raw else argv


def tempfile_dir() -> str:
    import tempfile

    return tempfile.gettempdir()


def exit_on_sigterm() -> None:
    """SIGTERM unwinds like an exception, so the broker, the worker and PG schemas are
    cleaned up by the benches' `finally` blocks."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
