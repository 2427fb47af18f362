"""Ledger at plant scale (issue 4, Performance): trace, recall --lot and the batch writer.

Seeds N servers (~69 install rows each: 58 serialized parts + fasteners on the server, 10 SMT
reels on its PCBA sub-assembly; 44 events of ~650 bytes) into a temporary SQLite file and a
fresh PostgreSQL schema (dropped afterwards), then measures, warm, through the library:

- `genealogy.trace` over random servers (goal p99 < 10 ms) beside a bare-SQL floor,
- `recall.recall(lot=...)` over random GPU lots (goal p99 < 100 ms) beside a bare-SQL floor,
- `writer.write_batch` events/s beside a bare executemany of the same rows (the ceiling).

    .venv/bin/python -m bench.bench_ledger                     # 100,000 servers (~6.9 M installs)
    .venv/bin/python -m bench.bench_ledger --servers 2000      # smoke run
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import func, select, text

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linetrace.ledger.db import Ledger  # noqa: E402
from linetrace.ledger.models import Install  # noqa: E402

from bench import measure, plant, report, seed, writer_load  # noqa: E402
from bench.loaders import PgLoader, Rows, SqliteLoader, load_all  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=100_000)
    ap.add_argument("--units", type=int, default=1000, help="random servers traced")
    ap.add_argument("--lots", type=int, default=100, help="random GPU lots recalled")
    ap.add_argument("--gpu-lot-units", type=int, default=800, help="servers one GPU lot spans")
    ap.add_argument("--writer-events", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500, help="writer batch (LINETRACE_BATCH_SIZE)")
    ap.add_argument("--chunk", type=int, default=2000, help="servers per bulk-load chunk")
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL URL ('' to skip)")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"),
                    help="Markdown file to update ('' to skip)")
    ap.add_argument("--seed", type=int, default=1782)
    return ap.parse_args(argv)


def pg_url(base: str, schema: str) -> str:
    sep = "&" if "?" in base else "?"
    return f"{base}{sep}options=-csearch_path%3D{schema}"


def _seed_one(kind: str, target: str, args: argparse.Namespace) -> dict[str, float]:
    """Generate every chunk and load it into one database (run in its own process)."""
    gen = seed.Generator(seed.Shape(args.servers, args.gpu_lot_units), args.seed)
    loader: SqliteLoader | PgLoader
    if kind == "sqlite":
        Ledger(f"sqlite:///{target}").close()  # the models' DDL
        loader = SqliteLoader(target)
    else:
        Ledger(pg_url(args.pg, target)).close()
        loader = PgLoader(args.pg, target)
    t, gen_s = time.perf_counter(), 0.0

    def chunks() -> Iterator[Rows]:
        nonlocal gen_s
        for lo in range(0, args.servers, args.chunk):
            g = time.perf_counter()
            rows = gen.chunk(lo, min(args.servers, lo + args.chunk))
            gen_s += time.perf_counter() - g
            yield rows
            print(f"  {kind}: {min(args.servers, lo + args.chunk):,} servers "
                  f"({time.perf_counter() - t:.0f} s)", file=sys.stderr, flush=True)
        yield {"lots": list(gen.lots())}

    load_all([loader], chunks())
    return {"generate_s": gen_s, "load_s": loader.seconds, "total_s": time.perf_counter() - t}


def seed_all(args: argparse.Namespace, sqlite_path: Path | None, schema: str | None
             ) -> dict[str, Any]:
    """Seed both databases at once, one process each (identical rows: same generator seed)."""
    jobs = [(k, str(v)) for k, v in (("sqlite", sqlite_path), ("postgresql", schema)) if v]
    t = time.perf_counter()
    with ProcessPoolExecutor(len(jobs), mp_context=multiprocessing.get_context("fork")) as ex:
        futures = {k: ex.submit(_seed_one, k, v, args) for k, v in jobs}
        done = {k: f.result() for k, f in futures.items()}
    return {"wall_s": time.perf_counter() - t, **done}


def run_db(name: str, url: str, args: argparse.Namespace, keys_dir: Path,
           cands: list[Any]) -> dict[str, Any]:
    rng = random.Random(args.seed)
    load_before = os.getloadavg()[0]
    ledger = Ledger(url, create=False)
    try:
        serials = [plant.server_serial(rng.randrange(args.servers)) for _ in range(args.units)]
        gpu_lots = sorted({plant.gpu_lot(i, args.gpu_lot_units)
                           for i in range(0, args.servers, max(1, args.gpu_lot_units // 4))})
        lots = [rng.choice(gpu_lots) for _ in range(args.lots)]
        with ledger.reader() as s:
            installs = s.scalar(select(func.count()).select_from(Install))
        r: dict[str, Any] = {"installs": installs, "gpu_lots": len(gpu_lots)}
        if ledger.dialect == "postgresql":
            with ledger.reader() as s:
                r["server"] = (f"PostgreSQL {s.scalar(text('SHOW server_version'))} on local TCP, "
                               f"shared_buffers {s.scalar(text('SHOW shared_buffers'))}")
        print(f"{name}: trace x{len(serials)}", file=sys.stderr, flush=True)
        r["trace"] = measure.latency(measure.timed(serials, lambda s: measure.trace_once(ledger, s)))
        floor = measure.Floor(ledger)
        r["trace_floor"] = measure.latency(measure.timed(serials, floor.trace))
        r["breakdown"] = measure.trace_breakdown(ledger, serials[:200])
        print(f"{name}: recall x{len(lots)}", file=sys.stderr, flush=True)
        r["recall"] = measure.latency(measure.timed(lots, lambda x: measure.recall_once(ledger, x)))
        r["recall_floor"] = measure.latency(measure.timed(lots, floor.recall))
        floor.close()
        sizes = [measure.recall_once(ledger, x) for x in lots[:20]]
        r["recall_rows"] = sum(map(len, sizes)) / len(sizes)
        r["recall_units"] = sum(len({x.serial for x in s}) for s in sizes) / len(sizes)
        print(f"{name}: writer {args.writer_events} events", file=sys.stderr, flush=True)
        ctx = writer_load.enroll(ledger, keys_dir)
        r["ceiling"] = writer_load.ceiling(ledger, cands, args.batch)
        r["writer"] = writer_load.writer(ledger, cands, args.batch, ctx)
        r["loadavg"] = f"{load_before:.1f} -> {os.getloadavg()[0]:.1f}"
        return r
    finally:
        ledger.close()


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    schema = f"bench_ledger_{uuid.uuid4().hex[:10]}" if args.pg else None
    sqlite_path = None if args.no_sqlite else tmp / "ledger.db"
    started = time.perf_counter()
    results: dict[str, dict[str, Any]] = {}
    try:
        if schema:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f'CREATE SCHEMA "{schema}"')
        print(f"seeding {args.servers:,} servers", file=sys.stderr, flush=True)
        seeded = seed_all(args, sqlite_path, schema)
        cands = writer_load.candidates(args.servers, args.servers, args.writer_events,
                                       args.gpu_lot_units)
        if sqlite_path is not None:
            results["SQLite"] = run_db("sqlite", f"sqlite:///{sqlite_path}", args, tmp / "keys",
                                       cands)
            results["SQLite"]["size_gb"] = sqlite_path.stat().st_size / 1e9
        if schema:
            results["PostgreSQL"] = run_db("postgresql", pg_url(args.pg, schema), args,
                                           tmp / "keys", cands)
            with psycopg.connect(args.pg) as c:
                size = c.execute("SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c "
                                 "JOIN pg_namespace n ON n.oid = c.relnamespace "
                                 "WHERE n.nspname = %s AND c.relkind = 'r'", (schema,)).fetchone()
            results["PostgreSQL"]["size_gb"] = float(size[0] if size else 0) / 1e9
    finally:
        if schema:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)
    elapsed = time.perf_counter() - started
    section = report.render(args, seeded, results, elapsed,
                            argv if argv is not None else sys.argv[1:])
    print(section)
    if args.docs:
        report.write_section(Path(args.docs), section)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
