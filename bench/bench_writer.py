"""The batch writer alone, this checkout beside a base commit, on one seeded ledger per database.

Seeds N servers (as `bench_ledger`, same generator) into a temporary SQLite file and a fresh
PostgreSQL schema, enrolls the bench stations once, then runs rounds of child processes, each
writing `--events` signed lifecycle events of servers of its own (fresh serials, so runs never
see each other's events) through `writer.write_batch` with the plant's context (projections,
Merkle log, `unit.sealed` with its HBOM) and, beside them, the bare executemany ceiling of the
same rows. The base runs with linetrace from `git archive BASE`, this checkout with its own;
base and this checkout alternate on the same warm database, so the ratio between them is what
to read on a shared machine.

    .venv/bin/python -m bench.bench_writer --servers 5000 --events 5000 --base 53ac540
    .venv/bin/python -m bench.bench_writer --servers 5000 --events 3000 --profile /tmp/w.prof
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import psycopg

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import bench_ledger, report, writer_load  # noqa: E402
from bench.stream_load import code_under_test  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--servers", type=int, default=5000, help="servers seeded first")
    ap.add_argument("--events", type=int, default=5000, help="events per writer run")
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="base + this checkout, alternated")
    ap.add_argument("--base", default="", help="commit to compare with ('' for none)")
    ap.add_argument("--pg", default=bench_ledger.PG_DEFAULT, help="PostgreSQL URL ('' to skip)")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--profile", default="", help="cProfile this checkout's first writer run")
    ap.add_argument("--docs", default="", help="Markdown file whose writer section to update")
    ap.add_argument("--child", nargs=3, metavar=("URL", "KEYS", "FIRST"), help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def child(args: argparse.Namespace) -> int:
    """One measurement, in the linetrace this process imports: ceiling, then the writer."""
    from linetrace.ledger.db import Ledger
    from linetrace.ledger.keys import load_or_create_plant_key
    from linetrace.ledger.system_events import SystemContext

    url, keys, first = args.child
    cands = writer_load.candidates(int(first), args.servers, args.events, 800)
    ledger = Ledger(url, create=False)
    try:
        ctx = SystemContext(plant_key=load_or_create_plant_key(Path(keys))[0])
        ceiling = writer_load.ceiling(ledger, cands, args.batch)
        before = row_counts(ledger)
        prof = cProfile.Profile() if args.profile else None
        if prof:
            prof.enable()
        wrote = writer_load.writer(ledger, cands, args.batch, ctx)
        if prof:
            prof.disable()
            prof.dump_stats(args.profile)
        after = row_counts(ledger)
    finally:
        ledger.close()
    import linetrace

    rows = {t: after[t] - before[t] for t in TABLES}
    print(json.dumps({"ceiling": ceiling.per_s, "writer": wrote.per_s,
                      "rows_per_event": sum(rows.values()) / wrote.events, "rows": rows,
                      "load": os.getloadavg()[0], "linetrace": linetrace.__path__[0]}))
    return 0


#: What a writer run adds rows to (the ceiling inserts `events` rows only).
TABLES = ("events", "log_leaves", "log_subtrees", "units", "operations", "installs", "tests",
          "measurements", "firmware", "hboms", "outbox", "station_positions")


def row_counts(ledger: Any) -> dict[str, int]:
    from sqlalchemy import text

    with ledger.reader() as s:
        return {t: int(s.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()) for t in TABLES}


def archive(rev: str) -> tuple[str, Path]:
    sha = subprocess.run(["git", "rev-parse", "--verify", f"{rev}^{{commit}}"], cwd=REPO,
                         capture_output=True, text=True, check=True).stdout.strip()
    dest = Path(tempfile.gettempdir()) / f"linetrace-at-{sha[:12]}"
    if not (dest / "linetrace" / "ledger" / "writer.py").exists():
        (dest / "linetrace").mkdir(parents=True, exist_ok=True)
        data = subprocess.run(["git", "archive", sha], cwd=REPO, capture_output=True,
                              check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest / "linetrace")], input=data, check=True)
    return sha[:7], dest


def run_child(args: argparse.Namespace, url: str, keys: Path, first: int, path: Path | None,
              profile: str) -> dict[str, Any]:
    env = dict(os.environ)
    if path is not None:
        env["PYTHONPATH"] = f"{path}{os.pathsep}{env.get('PYTHONPATH', '')}"
    cmd = [sys.executable, "-m", "bench.bench_writer", "--servers", str(args.servers),
           "--events", str(args.events), "--batch", str(args.batch),
           "--child", url, str(keys), str(first)]
    if profile:
        cmd += ["--profile", profile]
    out = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"writer child failed:\n{out.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    if args.child:
        return child(args)
    from linetrace.ledger.db import Ledger

    tmp = Path(tempfile.mkdtemp(prefix="bench-writer-"))
    schema = f"bench_writer_{uuid.uuid4().hex[:10]}" if args.pg else None
    sqlite_path = None if args.no_sqlite else tmp / "ledger.db"
    codes: list[tuple[str, Path | None]] = [("this checkout", None)]
    if args.base:
        sha, tree = archive(args.base)
        codes.insert(0, (f"base {sha}", tree))
    results: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        if schema:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f'CREATE SCHEMA "{schema}"')
        seed_args = bench_ledger.parse(["--servers", str(args.servers), "--pg", args.pg])
        print(f"seeding {args.servers:,} servers", file=sys.stderr, flush=True)
        bench_ledger.seed_all(seed_args, sqlite_path, schema)
        dbs = [(n, u) for n, u in (
            ("SQLite", f"sqlite:///{sqlite_path}" if sqlite_path else None),
            ("PostgreSQL", bench_ledger.pg_url(args.pg, schema) if schema else None)) if u]
        first = args.servers + 1000
        for name, url in dbs:
            keys = tmp / f"keys-{name}"
            ledger = Ledger(url, create=False)
            writer_load.enroll(ledger, keys)
            ledger.close()
            for r in range(args.rounds):
                for label, path in codes:
                    profile = (f"{args.profile}.{name.lower()}" if args.profile and path is None
                               and r == 0 else "")
                    t = time.perf_counter()
                    got = run_child(args, url, keys, first, path, profile)
                    first += max(1000, args.events // 20)
                    results.setdefault(name, {}).setdefault(label, []).append(got)
                    print(f"{name} {label} round {r}: writer {got['writer']:,.0f}/s, ceiling "
                          f"{got['ceiling']:,.0f}/s ({time.perf_counter() - t:.0f} s, load "
                          f"{got['load']:.1f}; {got['linetrace']})", file=sys.stderr, flush=True)
    finally:
        if schema:
            with psycopg.connect(args.pg, autocommit=True) as c:
                c.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        shutil.rmtree(tmp, ignore_errors=True)
    section = render(args, results, argv if argv is not None else sys.argv[1:])
    print(section)
    if args.docs:
        report.write_section(Path(args.docs), section)
    return 0


def render(args: argparse.Namespace, results: dict[str, dict[str, list[dict[str, Any]]]],
           argv: list[str]) -> str:
    rows: list[tuple[str, ...]] = [("database", "code", "writer events/s", "ceiling events/s",
                                    "writer / ceiling", "rows per event", "1-min load")]
    for db, by_code in results.items():
        for label, runs in by_code.items():
            w = statistics.median(x["writer"] for x in runs)
            c = statistics.median(x["ceiling"] for x in runs)
            loads = sorted(x["load"] for x in runs)
            per = statistics.median(x["rows_per_event"] for x in runs)
            rows.append((db, label, f"{w:,.0f}", f"{c:,.0f}", f"{w / c:.1%}", f"{per:.1f}",
                         f"{loads[0]:.1f}-{loads[-1]:.1f}"))
    return "\n".join([
        "## Ledger writer: this checkout beside a base commit", "",
        f"Measured {report.today()} on {report.machine()}. Code under test: "
        f"{code_under_test()}. Reproduce with:", "",
        "    .venv/bin/python -m bench.bench_writer " + " ".join(argv), "",
        f"{args.servers:,} servers seeded, then per run {args.events:,} signed lifecycle "
        f"events of new servers through `write_batch` (batch {args.batch}, the plant's "
        "context: projections, Merkle log, `unit.sealed` with its HBOM) beside the bare "
        "executemany of the same rows (the ceiling, measured in the same child process); "
        f"{args.rounds} rounds, base and this checkout alternated on the same database, "
        "medians. Rows per event: what the writer inserts per event stored, in every table "
        "(events, leaves, subtrees, projections, HBOMs, outbox); the ceiling inserts one.",
        "", report.table(rows), ""])


if __name__ == "__main__":
    raise SystemExit(main())
