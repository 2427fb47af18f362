"""Worker memory (issue 10, goal 6): RSS of the real worker at steady state with 100,000 units
in progress (goal < 400 MB).

A ledger is seeded with N servers all still on the line (`seed.Shape(in_progress=1.0)`: every
server at burn-in, its PCBA installed, none packed or shipped; the rows `bench_ledger` seeds,
bulk loaded). Then the broker gets a stream that touches as many of those units as it can:
80% 8-GPU `burnin.telemetry` of seeded servers (each record another unit, stepping through all
N), 20% other records (GPU installs on seeded servers, lot receipts, station states), all
validly signed by enrolled stations and timed just after the seeded events. The real
`linetrace worker` drains it; its process tree's RSS (/proc VmRSS) is sampled every 0.5 s.
Start = at its first stored batch (after start-up and partition assignment); steady state =
median over the second half of the drain; peak = the highest sample. The same stream is also
drained into an empty ledger in the same run (`--no-empty` skips it): if the worker loaded
per-unit state at start or kept it, the two would differ by the 100,000 units.

    .venv/bin/python -m bench.bench_memory                          # 100,000 units, SQLite + PG
    .venv/bin/python -m bench.bench_memory --units 2000 --records 5000 --pg '' --docs ''  # smoke
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import create_engine, text

from linetrace.ledger.db import Ledger, normalise_url
from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from . import plant as bom
from . import seed
from . import stream_load as sl
from .bench_pipeline import PG, T0, drop_pg_schema, fresh_pg_schema, prepare_ledger
from .loaders import PgLoader, Rows, SqliteLoader, load_all
from .report import machine, table, write_section

REPO = Path(__file__).resolve().parents[1]
STRIDE = 7919  # a prime: unit k * STRIDE mod N walks every unit before repeating


def seed_one(kind: str, target: str, units: int, pg: str, chunk: int = 2000) -> float:
    """N in-progress servers into one database (its own process); seconds taken."""
    t = time.perf_counter()
    gen = seed.Generator(seed.Shape(units, in_progress=1.0, packed=0.0))
    loader: SqliteLoader | PgLoader
    if kind == "sqlite":
        Ledger(f"sqlite:///{target}").close()  # the models' DDL
        loader = SqliteLoader(target)
    else:
        Ledger(f"{pg}?options=-csearch_path%3D{target}").close()
        loader = PgLoader(pg, target)

    def chunks() -> Iterator[Rows]:
        for lo in range(0, units, chunk):
            yield gen.chunk(lo, min(units, lo + chunk))
            print(f"  {kind}: {min(units, lo + chunk):,} servers seeded "
                  f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
        yield {"lots": list(gen.lots())}

    load_all([loader], chunks())
    return time.perf_counter() - t


def stream(units: int, records: int, t0: datetime) -> Iterator[list[sl.Record]]:
    """`records` records in chunks of 500, 1 ms of line time apart: telemetry of unit
    k * STRIDE mod N, and after every 4th telemetry the next of the plant's other events."""
    p = sl.Plant(burnin_serial=bom.server_serial,
                 assembly_serial=lambda k: bom.server_serial((k * 31 + 17) * STRIDE % units))
    out: list[sl.Record] = []
    k = n = 0
    while n < records:
        t = t0 + timedelta(milliseconds=n)
        out.append(p.telemetry(k * STRIDE % units, t, k))
        k += 1
        n += 1
        if k % 4 == 0:
            extra = p.other(t)
            out.extend(extra)
            n += len(extra)
        if len(out) >= 500:
            yield out
            out = []
    if out:
        yield out


def latest_time(db: str) -> datetime:
    engine = create_engine(normalise_url(db))
    try:
        with engine.connect() as conn:
            value = conn.execute(text("SELECT MAX(time) FROM events")).scalar()
    finally:
        engine.dispose()
    if value is None:
        return T0
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def run_one(label: str, db: str, data: Path, args: argparse.Namespace, t0: datetime
            ) -> dict[str, object]:
    """Fill a fresh broker with the stream, drain it with the worker, sample its RSS."""
    prepare_ledger(db, data, None)
    broker = EmbeddedBroker(log_file=data / "broker.log")
    broker.start()
    w = sl.WorkerProc(broker.bootstrap, data, db)
    try:
        asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
        ends, n, size = asyncio.run(sl.fill(broker.bootstrap, stream(args.units, args.records,
                                                                      t0)))
        print(f"{label}: {n:,} records ({size / n:,.0f} bytes avg) in the broker; starting the "
              "worker", file=sys.stderr, flush=True)
        load_before = sl.loadavg()
        w.start()
        assert w.proc is not None
        rss = sl.RssSampler(w.proc.pid)
        rss.start()
        try:
            samples = w.wait(ends, timeout=args.timeout)
            time.sleep(args.idle)  # what it keeps once idle
        finally:
            rss.stop()
        load_after = sl.loadavg()
        d = sl.drain_of(samples, w.launched)
        base = samples[0][1]
        t_first = next((s[0] for s in samples if s[1] > base), samples[-1][0])
        t_last = samples[-1][0]
        during = [kb for t, kb in rss.samples if t_first <= t <= t_last]
        second_half = [kb for t, kb in rss.samples if (t_first + t_last) / 2 <= t <= t_last]
        rejected = w.count("SELECT COUNT(*) FROM rejected")
        in_progress = w.count("SELECT COUNT(*) FROM units WHERE state = 'in_progress'")
        r: dict[str, object] = {
            "records": n, "rate": d.rate, "per_cpu": d.per_cpu_s, "startup": d.startup_s,
            "start": during[0] / 1024 if during else float("nan"),
            "steady": statistics.median(second_half) / 1024 if second_half else float("nan"),
            "peak": max(kb for _, kb in rss.samples) / 1024,
            "idle": rss.samples[-1][1] / 1024, "samples": len(rss.samples),
            "rejected": rejected, "in_progress": in_progress,
            "load": f"{load_before:.1f} -> {load_after:.1f}"}
        print(f"{label}: RSS start {r['start']:.0f} MB, steady {r['steady']:.0f} MB, peak "
              f"{r['peak']:.0f} MB, idle {r['idle']:.0f} MB; {d.rate:,.0f} records/s; "
              f"rejected {rejected}", file=sys.stderr, flush=True)
        return r
    finally:
        w.close()
        broker.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=100_000, help="servers in progress, seeded")
    ap.add_argument("--records", type=int, default=60_000, help="records in the stream")
    ap.add_argument("--pg", default=PG, help="PostgreSQL URL ('' skips PostgreSQL)")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--no-empty", action="store_true", help="skip the empty-ledger runs")
    ap.add_argument("--idle", type=float, default=3.0, help="seconds sampled after the drain")
    ap.add_argument("--timeout", type=float, default=1800.0, help="longest drain, seconds")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--at", metavar="REV",
                    help="run linetrace as of this commit (git archive), not the checkout")
    argv = sl.run_at("bench.bench_memory", sys.argv[1:] if argv is None else argv)
    sl.exit_on_sigterm()
    args = ap.parse_args(argv)
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    schemas: list[str] = []
    results: dict[str, dict[str, object]] = {}
    seeded: dict[str, float] = {}
    try:
        jobs: dict[str, tuple[str, str]] = {}
        if not args.no_sqlite:
            (tmp / "SQLite").mkdir()
            jobs["SQLite"] = ("sqlite", str(tmp / "SQLite" / "ledger.db"))
        if args.pg:
            db, schema = fresh_pg_schema(args.pg)
            schemas.append(schema)
            (tmp / "PostgreSQL").mkdir()
            jobs["PostgreSQL"] = ("postgresql", schema)
        print(f"seeding {args.units:,} servers in progress", file=sys.stderr, flush=True)
        with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as ex:
            futures = {name: ex.submit(seed_one, kind, target, args.units, args.pg)
                       for name, (kind, target) in jobs.items()}
            seeded = {name: f.result() for name, f in futures.items()}
        for name, (kind, target) in jobs.items():
            db = (f"sqlite:///{target}" if kind == "sqlite"
                  else f"{args.pg}?options=-csearch_path%3D{target}")
            t0 = latest_time(db) + timedelta(seconds=1)
            results[f"{name}, {args.units:,} units in progress"] = run_one(
                name, db, tmp / name, args, t0)
            if not args.no_empty:
                empty = tmp / f"{name}-empty"
                empty.mkdir()
                if kind == "sqlite":
                    edb = f"sqlite:///{empty / 'ledger.db'}"
                else:
                    edb, schema = fresh_pg_schema(args.pg)
                    schemas.append(schema)
                results[f"{name}, empty ledger"] = run_one(f"{name} (empty)", edb, empty, args,
                                                           t0)
    finally:
        for schema in schemas:
            drop_pg_schema(args.pg, schema)
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    section = render(args, sl.shown_argv(argv), results, seeded, elapsed)
    print(section)
    if args.docs:
        write_section(Path(args.docs), section)
    return 0


def render(args: argparse.Namespace, argv: list[str], results: dict[str, dict[str, object]],
           seeded: dict[str, float], elapsed: float) -> str:
    cmd = " ".join([".venv/bin/python -m bench.bench_memory", *map(shlex.quote, argv)])
    rows: list[tuple[str, ...]] = [(
        "ledger", "RSS start MB", "steady MB (goal < 400)", "peak MB", "idle MB",
        "records/s", "records / worker CPU-s", "units in progress", "rejected",
        "load avg (1 min)")]
    for name, r in results.items():
        rows.append((name, f"{r['start']:.0f}", f"{r['steady']:.0f}", f"{r['peak']:.0f}",
                     f"{r['idle']:.0f}", f"{r['rate']:,.0f}", f"{r['per_cpu']:,.0f}",
                     f"{r['in_progress']:,}",
                     f"{r['rejected']:,}", str(r["load"])))
    seeds = ", ".join(f"{k} {v / 60:.1f} min" for k, v in seeded.items())
    return "\n".join([
        "## Worker memory: RSS with 100,000 units in progress", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}. "
        f"Code: {sl.code_under_test()}. "
        f"Whole run {elapsed / 60:.1f} min (seeding {seeds}). Reproduce with:", "",
        f"    {cmd}", "",
        f"{args.units:,} servers seeded in progress (at burn-in, PCBA installed; the rows of "
        "`bench_ledger`, bulk loaded), then the real worker drains "
        f"{args.records:,} validly signed records that step through those units: 80% 8-GPU "
        "`burnin.telemetry` (each record another unit), 20% GPU installs on seeded servers, lot "
        "receipts and station states. RSS = the worker's process tree's VmRSS, sampled every "
        "0.5 s: start = at the first stored batch, steady = median of the second half of the "
        f"drain, peak = highest sample, idle = {args.idle:g} s after the drain. The empty-ledger "
        "rows drain the same stream into a fresh ledger in the same run.", "",
        table(rows), "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
