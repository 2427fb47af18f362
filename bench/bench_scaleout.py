"""Scale-out: one worker vs two workers of one consumer group draining the same records.

Issue 10, goal 3. For each database (PostgreSQL, then SQLite: two SQLite workers serialize on
the file's write lock) and for 1 and `--workers` workers, on the same `bench_pipeline.mix`
records:

1. a fresh embedded broker (its topics), a fresh ledger (a new PostgreSQL schema or SQLite
   file) with the stations enrolled, the workers started in one group (`LINETRACE_GROUP`)
   sharing one data dir (one plant key), as `bench_recovery` runs them;
2. the bench waits until the group is Stable with every worker in it (no rebalance inside the
   measurement), then fills the broker;
3. the measurement starts at the first position poll after the fill (the producer's work is
   outside it) and ends when every record is stored (`ingest_positions`).

Reported per run: wall-clock drain rate; whole-machine CPU-seconds over the drain (/proc/stat,
all cores, non-idle jiffies: user+nice+system+irq+softirq+steal); events per CPU-second;
where the CPU went (/proc/PID/stat utime+stime of each process tree: the workers, every
`postgres` process on the machine, the broker, this bench (its position polls), the rest);
load averages. Then the ratios two/one against the issue's goals (events per CPU-second
>= 0.9x one worker's on a 2-core machine; wall-clock >= 1.6x on a machine with more cores).
`docs/benchmarks.md` gets the "Scale-out" section.

    .venv/bin/python -m bench.bench_scaleout [--records 20000] [--workers 2] [--rounds 1]
        [--pg URL | --pg ''] [--no-sqlite] [--docs PATH | --docs '']
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient

from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from .bench_pipeline import (PG, Record, drop_pg_schema, fill, fresh_pg_schema, mix,
                             prepare_ledger, start_worker, stop_workers, wait_drained)
from .report import machine, table, tree, write_section

TICK = os.sysconf("SC_CLK_TCK")
PARTS = ("workers", "postgres", "broker", "bench")  # postgres: every process of the server
PIPELINE = ("workers", "pg backends", "broker")  # what the drain itself used


def machine_busy_s() -> float:
    """Non-idle CPU-seconds of the whole machine since boot, all cores (/proc/stat)."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = f[:8]  # guest is inside user
    return (user + nice + system + irq + softirq + steal) / TICK


def _stat(pid: int) -> tuple[str, int, float] | None:
    """(comm, ppid, utime+stime seconds) of one process, None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    comm = raw[raw.index("(") + 1:raw.rindex(")")]
    f = raw[raw.rindex(")") + 2:].split()  # f[0] is field 3 (state)
    return comm, int(f[1]), (int(f[11]) + int(f[12])) / TICK


def processes() -> dict[int, tuple[str, int, float]]:
    out = {}
    for d in os.listdir("/proc"):
        if d.isdigit() and (s := _stat(int(d))) is not None:
            out[int(d)] = s
    return out


def _tree(procs: dict[int, tuple[str, int, float]], roots: set[int]) -> set[int]:
    """The pids in `roots` and all their descendants."""
    found, grew = set(roots) & set(procs), True
    while grew:
        more = {p for p, (_, ppid, _) in procs.items() if ppid in found} - found
        found |= more
        grew = bool(more)
    return found


@dataclass
class Snapshot:
    t: float
    busy: float
    done: int
    cpu: dict[str, dict[int, float]]
    load: str


def pg_backends(pg: str, app: str) -> set[int]:
    """The server processes serving connections named `app` (the workers' own backends)."""
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        return {int(r[0]) for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (app,))}


def snapshot(worker_pids: set[int], broker_pid: int, backends: set[int],
             done: int = 0) -> Snapshot:
    procs = processes()
    groups = {"workers": _tree(procs, worker_pids), "broker": _tree(procs, {broker_pid}),
              "bench": {os.getpid()}, "pg backends": backends,
              "postgres": {p for p, (comm, _, _) in procs.items() if comm == "postgres"}}
    return Snapshot(time.perf_counter(), machine_busy_s(), done,
                    {g: {p: procs[p][2] for p in pids if p in procs}
                     for g, pids in groups.items()},
                    Path("/proc/loadavg").read_text().split()[0])


@dataclass
class Run:
    db: str
    workers: int
    records: int
    wall_s: float
    machine_cpu_s: float
    parts: dict[str, float]
    load: tuple[str, str]
    lost: int = 0  # processes of a part that ended inside the window (their CPU is not counted)
    extra: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.records / self.wall_s

    @property
    def per_cpu_s(self) -> float:
        return self.records / self.machine_cpu_s

    @property
    def pipeline_cpu_s(self) -> float:
        return sum(self.parts[g] for g in PIPELINE)

    @property
    def per_pipeline_cpu_s(self) -> float:
        return self.records / self.pipeline_cpu_s


def measured(a: Snapshot, b: Snapshot, db: str, k: int) -> Run:
    parts, lost = {}, 0
    for g in (*PARTS, "pg backends"):
        before, after = a.cpu[g], b.cpu[g]
        parts[g] = sum(after[p] - before.get(p, 0.0) for p in after)
        if g != "postgres":  # the shared server's other clients come and go
            lost += len(set(before) - set(after))
    return Run(db, k, b.done - a.done, b.t - a.t, b.busy - a.busy, parts, (a.load, b.load),
               lost)


async def wait_stable(bootstrap: str, group: str, members: int, timeout: float = 120) -> None:
    """Until the group is Stable with `members` members (each worker has joined)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                d = (await admin.describe_consumer_groups([group]))[0]
                g = d.groups[0] if hasattr(d, "groups") else d
                state, count = _group_state(g)
                if state == "Stable" and count == members:
                    return
            except Exception:  # the coordinator is not ready yet
                pass
            await asyncio.sleep(0.2)
        raise RuntimeError(f"group {group} not Stable with {members} members in {timeout:g} s")
    finally:
        await admin.close()


def _group_state(g: Any) -> tuple[str, int]:
    """(state, member count) of a DescribeGroups response entry (a struct or a tuple)."""
    if hasattr(g, "state"):
        return str(g.state), len(g.members)
    # (error_code, group_id, state, protocol_type, protocol, members[, authorized_operations])
    return str(g[2]), len(g[5])


def one_run(records: list[Record], db_kind: str, k: int, pg: str, tmp: Path) -> Run:
    """k workers of one group draining `records` from a fresh broker into a fresh ledger."""
    n = len(records)
    tag = f"{db_kind}-{k}-{uuid.uuid4().hex[:6]}"
    data = tmp / tag
    data.mkdir()
    broker = EmbeddedBroker(log_file=data / "broker.log")
    broker.start()
    schema = None
    procs = []
    try:
        asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
        db = f"sqlite:///{data / 'ledger.db'}"
        app = f"bench-scaleout-{tag}"
        if db_kind == "PostgreSQL":
            db, schema = fresh_pg_schema(pg)
            db += f"&application_name={app}"  # to find the workers' backends
        prepare_ledger(db, data, None)
        group = f"bench-scaleout-{tag}"
        procs = [start_worker(broker.bootstrap, data, db, None, group, name=f"worker-{i}")
                 for i in range(k)]
        asyncio.run(wait_stable(broker.bootstrap, group, k))
        asyncio.run(fill(broker.bootstrap, records))
        pids = {p.pid for p in procs}
        assert broker.proc is not None
        snaps: list[Snapshot] = []

        def backends() -> set[int]:
            return pg_backends(pg, app) if schema else set()

        def first() -> None:
            snaps.append(snapshot(pids, broker.proc.pid, backends()))  # type: ignore[union-attr]

        t0, t1, done0 = wait_drained(db, n, procs, data, on_first=first)
        end = snapshot(pids, broker.proc.pid, backends(), n)
        start = snaps[0]
        start.done = done0
        start.t = t0
        end.t = t1
        return measured(start, end, db_kind, k)
    finally:
        stop_workers(procs, signal.SIGTERM)
        broker.stop()
        if schema:
            drop_pg_schema(pg, schema)


def report(runs: list[Run], args: argparse.Namespace, n: int, telemetry: float,
           size: float) -> str:
    head = ("database", "workers", "records/s (wall)", "machine CPU-s", "CPU busy",
            "events / machine CPU-s", "pipeline CPU-s", "events / pipeline CPU-s",
            "workers CPU-s", "own PG backends CPU-s", "all postgres CPU-s", "broker CPU-s",
            "bench CPU-s", "other CPU-s", "load 1 min (start / end)")
    rows: list[tuple[str, ...]] = [head]
    ncpu = os.cpu_count() or 1
    for r in runs:
        other = r.machine_cpu_s - sum(r.parts[g] for g in PARTS)
        rows.append((r.db, str(r.workers), f"{r.rate:,.0f}", f"{r.machine_cpu_s:.1f}",
                     f"{r.machine_cpu_s / (r.wall_s * ncpu):.0%}", f"{r.per_cpu_s:,.0f}",
                     f"{r.pipeline_cpu_s:.1f}", f"{r.per_pipeline_cpu_s:,.0f}",
                     *(f"{r.parts[g]:.1f}" for g in ("workers", "pg backends", "postgres",
                                                     "broker", "bench")),
                     f"{other:.1f}", f"{r.load[0]} / {r.load[1]}"))
    k = args.workers
    ratios: list[tuple[str, ...]] = [(
        "database", f"wall records/s, {k} / 1 (goal >= 1.6 with more cores)",
        f"events per machine CPU-s, {k} / 1 (goal >= 0.9)",
        f"events per pipeline CPU-s, {k} / 1", f"workers' CPU-s per 1,000 events, 1 and {k}")]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    for db in dict.fromkeys(r.db for r in runs):
        one = [r for r in runs if r.db == db and r.workers == 1]
        many = [r for r in runs if r.db == db and r.workers == k]
        if not one or not many:
            continue
        ratios.append((
            db, f"{mean([r.rate for r in many]) / mean([r.rate for r in one]):.2f}",
            f"{mean([r.per_cpu_s for r in many]) / mean([r.per_cpu_s for r in one]):.2f}",
            f"{mean([r.per_pipeline_cpu_s for r in many]) / mean([r.per_pipeline_cpu_s for r in one]):.2f}",
            f"{mean([r.parts['workers'] / r.records * 1000 for r in one]):.2f} and "
            f"{mean([r.parts['workers'] / r.records * 1000 for r in many]):.2f}"))
    cmd = f".venv/bin/python -m bench.bench_scaleout --records {n}" + \
        (f" --workers {k}" if k != 2 else "") + \
        (f" --rounds {args.rounds}" if args.rounds != 1 else "") + \
        ("" if args.pg else " --pg ''") + ("" if args.sqlite else " --no-sqlite")
    lost = sum(r.lost for r in runs)
    return "\n".join([
        "## Scale-out: one worker vs two of one consumer group", "",
        f"{machine()}; {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {args.code or tree()}. "
        f"Command: `{cmd}`", "",
        f"{n:,} records of `bench_pipeline`'s mix ({telemetry:.0%} `burnin.telemetry` with 8 "
        f"GPUs, {size:,.0f} bytes on average, all validly signed), the same records in every "
        "run. Each run: a fresh embedded broker and ledger, the workers started in one group "
        "(one data dir), the group Stable with every worker in it, then the broker filled; "
        "measured from the first position poll after the fill to the last record stored. "
        "Machine CPU-s: /proc/stat, all cores, non-idle jiffies over that window (other users "
        "of the machine included). The parts are utime+stime of each process tree "
        "(/proc/PID/stat) over the same window: the workers; their own PostgreSQL backends "
        "(found by `application_name`); every `postgres` process of the shared server (its "
        "background writers and other clients too); the broker; this bench (its position "
        "polls); \"other\" is the machine minus all those. Pipeline CPU-s = workers + own "
        "backends + broker"
        + (f"; {lost} worker/broker/backend process(es) ended inside a window, their CPU is "
           "in \"other\"" if lost else "") + ". Runs in order:", "",
        table(rows), "", table(ratios), ""])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--workers", type=int, default=2, help="the scaled-out group's size")
    ap.add_argument("--rounds", type=int, default=1,
                    help="rounds per database; even rounds run the larger group first")
    ap.add_argument("--pg", default=PG, help="PostgreSQL URL ('' skips PostgreSQL)")
    ap.add_argument("--no-sqlite", dest="sqlite", action="store_false")
    ap.add_argument("--docs", default="docs/benchmarks.md")
    ap.add_argument("--code", help="what code was measured, for the report (default: this "
                                   "checkout's commit and changed files)")
    args = ap.parse_args()
    n = args.records
    records = mix(n)
    size = sum(len(r[2]) for r in records) / n
    telemetry = sum(r[0] == "line.telemetry" for r in records) / n
    print(f"{n} records, {telemetry:.0%} telemetry, {size:.0f} bytes on average", flush=True)
    dbs = (["PostgreSQL"] if args.pg else []) + (["SQLite"] if args.sqlite else [])
    runs: list[Run] = []
    with tempfile.TemporaryDirectory() as tmp:
        for db in dbs:
            for rnd in range(args.rounds):
                order = [1, args.workers] if rnd % 2 == 0 else [args.workers, 1]
                for k in order:
                    r = one_run(records, db, k, args.pg, Path(tmp))
                    runs.append(r)
                    other = r.machine_cpu_s - sum(r.parts[g] for g in PARTS)
                    print(f"{db:10s} {k} worker(s): {r.rate:8,.0f} records/s, "
                          f"{r.machine_cpu_s:6.1f} machine CPU-s, {r.per_cpu_s:6,.0f} events/CPU-s"
                          f" (workers {r.parts['workers']:.1f}, postgres {r.parts['postgres']:.1f},"
                          f" broker {r.parts['broker']:.1f}, bench {r.parts['bench']:.1f}, "
                          f"other {other:.1f}; pipeline {r.per_pipeline_cpu_s:,.0f} events/CPU-s); load {r.load[0]} -> {r.load[1]}", flush=True)
    body = report(runs, args, n, telemetry, size)
    print(body)
    if args.docs:
        write_section(Path(args.docs), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
