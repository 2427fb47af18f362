"""Catch-up (issue 10, goal 4): a worker stopped for M minutes of line time drains the backlog
of a plant with U units in burn-in at >= 5x the line's event rate.

The plant: every unit in burn-in sends one `burnin.telemetry` with 8 GPUs per second (~2.5 KB,
stations burnin-01/02); the rest of the line adds `--other-share` of that again (default 5%):
GPU installs (work.started + materials.installed of units in assembly, half of them), lot
receipts (a quarter, each answered by a `material.checked`) and station states (a quarter).
All validly signed by stations enrolled in the ledger (`bench_pipeline`'s). The line's event
rate = records / line seconds.

Per database (SQLite, and PostgreSQL in a fresh schema dropped at the end):
1. warm-up: the worker runs live for `--warmup` line seconds, fed at the line's pace (one
   line second per wall second), until it has stored all of it;
2. the worker is stopped (SIGTERM); the broker gets the next M minutes of line time at once;
3. the worker is started again; the ledger's `ingest_positions` are polled every 0.1 s until
   every record is stored. Drain rate = records / (last record stored - first batch stored);
   start-up = launch to the first stored batch. With the line still running during the
   drain, it would catch up after (backlog + rate x start-up) / (rate - line rate) (computed).

    .venv/bin/python -m bench.bench_catchup                          # 500 units, 10 min
    .venv/bin/python -m bench.bench_catchup --units 50 --minutes 1 --docs ''   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import math
import shlex
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from . import stream_load as sl
from .bench_pipeline import PG, T0, drop_pg_schema, fresh_pg_schema, prepare_ledger
from .report import machine, table, write_section

REPO = Path(__file__).resolve().parents[1]


def plant() -> sl.Plant:
    return sl.Plant(burnin_serial=lambda u: f"SRV-B-{u:06d}",
                    assembly_serial=lambda k: f"SRV-A-{k:08d}")


def seconds(p: sl.Plant, units: int, other_calls: float, lo: int, hi: int
            ) -> Iterator[list[sl.Record]]:
    for s in range(lo, hi):
        yield sl.line_second(p, units, other_calls, T0, s)


def run_db(name: str, db: str, data: Path, broker: EmbeddedBroker, args: argparse.Namespace,
           other_calls: float) -> dict[str, object]:
    """Warm-up, stop, backlog, restart, drain; the figures of one database."""
    prepare_ledger(db, data, None)
    p = plant()
    w = sl.WorkerProc(broker.bootstrap, data, db)
    backlog_s = int(args.minutes * 60)
    r: dict[str, object] = {}
    try:
        if args.warmup:
            print(f"{name}: warm-up, {args.warmup} line seconds live", file=sys.stderr, flush=True)
            w.start()
            ends, n_warm, _ = asyncio.run(sl.fill(broker.bootstrap, seconds(
                p, args.units, other_calls, 0, args.warmup), pace=1.0))
            w.wait(ends, timeout=600)
            w.stop()
            r["warmup"] = n_warm
        print(f"{name}: worker stopped; filling {backlog_s} line seconds", file=sys.stderr,
              flush=True)
        t = time.perf_counter()
        ends, n, size = asyncio.run(sl.fill(broker.bootstrap, seconds(
            p, args.units, other_calls, args.warmup, args.warmup + backlog_s)))
        fill_s = time.perf_counter() - t
        before = sl.drained(w.positions(), ends)
        backlog = sum(ends.values()) - before
        print(f"{name}: {backlog:,} records in the backlog ({size / 1e6:,.0f} MB, filled in "
              f"{fill_s:.0f} s); starting the worker", file=sys.stderr, flush=True)
        load_before = sl.loadavg()
        w.start()
        assert w.proc is not None
        rss = sl.RssSampler(w.proc.pid)
        rss.start()
        try:
            samples = w.wait(ends, timeout=args.timeout)
        finally:
            rss.stop()
        load_after = sl.loadavg()
        d = sl.drain_of(samples, w.launched)
        stored = w.count("SELECT COUNT(*) FROM events")
        rejected = w.count("SELECT COUNT(*) FROM rejected")
        w.stop()
        line_rate = n / backlog_s
        catch_up = ((backlog + d.rate * d.startup_s) / (d.rate - line_rate)
                    if d.rate > line_rate else math.inf)
        # Rate over each 10% of the drain: does it hold up as the ledger grows?
        r.update(records=n, backlog=backlog, mb=size / 1e6, line_rate=line_rate, drain=d,
                 ratio=d.rate / line_rate, catch_up_s=catch_up, stored=stored,
                 rejected=rejected, deciles=deciles(samples), fill_s=fill_s,
                 rss_peak=max((kb for _, kb in rss.samples), default=0) / 1024,
                 load=f"{load_before:.1f} -> {load_after:.1f}")
        print(f"{name}: drain {d.rate:,.0f} records/s = {d.rate / line_rate:.2f}x the line's "
              f"{line_rate:,.0f}/s; start-up {d.startup_s:.1f} s, backlog stored "
              f"{d.total_s:.0f} s after launch; rejected {rejected}", file=sys.stderr,
              flush=True)
        return r
    finally:
        w.close()


def deciles(samples: list[tuple[float, int, float]]) -> str:
    """Records/s over the first and last tenth of the drain (after the first batch)."""
    base = samples[0][1]
    live = [s for s in samples if s[1] > base]
    if len(live) < 20:
        return "-"
    total = live[-1][1] - live[0][1]

    def rate(lo: float, hi: float) -> float:
        a = next(s for s in live if s[1] - live[0][1] >= lo * total)
        z = next(s for s in live if s[1] - live[0][1] >= hi * total)
        return (z[1] - a[1]) / (z[0] - a[0]) if z[0] > a[0] else float("nan")

    return f"{rate(0.0, 0.1):,.0f} / {rate(0.9, 1.0):,.0f}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--units", type=int, default=500, help="units in burn-in")
    ap.add_argument("--minutes", type=float, default=10.0, help="line time the worker was down")
    ap.add_argument("--other-share", type=float, default=0.05,
                    help="non-telemetry records per telemetry record")
    ap.add_argument("--warmup", type=int, default=20, help="line seconds run live first (0: none)")
    ap.add_argument("--pg", default=PG, help="PostgreSQL URL ('' skips PostgreSQL)")
    ap.add_argument("--no-sqlite", action="store_true")
    ap.add_argument("--timeout", type=float, default=3600.0, help="longest drain, seconds")
    ap.add_argument("--docs", default=str(REPO / "docs" / "benchmarks.md"))
    ap.add_argument("--at", metavar="REV",
                    help="run linetrace as of this commit (git archive), not the checkout")
    argv = sl.run_at("bench.bench_catchup", sys.argv[1:] if argv is None else argv)
    sl.exit_on_sigterm()
    args = ap.parse_args(argv)
    other_calls = args.units * args.other_share / sl.other_events_per_cycle()
    results: dict[str, dict[str, object]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-catchup-") as tmp:
        targets = [] if args.no_sqlite else [("SQLite", None)]
        if args.pg:
            targets.append(("PostgreSQL", args.pg))
        for name, pg in targets:
            # A broker per database: each drain starts from an empty log of its own.
            broker = EmbeddedBroker(log_file=Path(tmp) / f"broker-{name}.log")
            broker.start()
            data = Path(tmp) / name
            data.mkdir()
            schema = None
            db = f"sqlite:///{data / 'ledger.db'}"
            try:
                asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
                if pg:
                    db, schema = fresh_pg_schema(pg)
                results[name] = run_db(name, db, data, broker, args, other_calls)
            finally:
                broker.stop()
                if schema and pg:
                    drop_pg_schema(pg, schema)
    elapsed = time.perf_counter() - started
    section = render(args, sl.shown_argv(argv), results, elapsed)
    print(section)
    if args.docs:
        write_section(Path(args.docs), section)
    return 0


def render(args: argparse.Namespace, argv: list[str], results: dict[str, dict[str, object]],
           elapsed: float) -> str:
    cmd = " ".join([".venv/bin/python -m bench.bench_catchup", *map(shlex.quote, argv)])
    rows: list[tuple[str, ...]] = [("figure", *results)]

    def line(label: str, fmt: object) -> None:
        rows.append((label, *(fmt(r) for r in results.values())))  # type: ignore[operator]

    line("records in the backlog (line time)", lambda r: f"{r['backlog']:,} ({args.minutes:g} min)")
    line("backlog size MB / broker fill s", lambda r: f"{r['mb']:,.0f} / {r['fill_s']:.0f}")
    line("line's event rate, records/s", lambda r: f"{r['line_rate']:,.1f}")
    line("worker start-up s (launch -> first batch stored)",
         lambda r: f"{r['drain'].startup_s:.1f}")
    line("drain rate, records/s", lambda r: f"{r['drain'].rate:,.0f}")
    line("drain rate / line rate (goal >= 5x)", lambda r: f"{r['ratio']:.2f}x")
    line("drain rate, first / last 10% of the backlog", lambda r: r["deciles"])
    line("records per worker CPU-second (less load-sensitive)",
         lambda r: f"{r['drain'].per_cpu_s:,.0f}")
    line("worker RSS peak during the drain, MB", lambda r: f"{r['rss_peak']:,.0f}")
    line("backlog stored, s after launch", lambda r: f"{r['drain'].total_s:.0f}")
    line("caught up with the line still running, s (computed)",
         lambda r: "never" if math.isinf(r["catch_up_s"]) else f"{r['catch_up_s']:.0f}")
    line("events stored / rejected (whole run)", lambda r: f"{r['stored']:,} / {r['rejected']:,}")
    line("load average (1 min), drain start -> end", lambda r: r["load"])
    tel = args.units
    other = args.units * args.other_share
    first = next(iter(results.values()), {})
    avg = first["mb"] * 1e6 / first["records"] if first else 0.0  # type: ignore[operator]
    return "\n".join([
        "## Catch-up: a stopped worker drains a plant's backlog", "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}. "
        f"Code: {sl.code_under_test()}. "
        f"Whole run {elapsed / 60:.1f} min. Reproduce with:", "",
        f"    {cmd}", "",
        f"A plant with {args.units:,} units in burn-in: {tel:,} `burnin.telemetry` records/s "
        f"(8 GPUs) and {other:,.1f} other records/s ({args.other_share:.0%}: half GPU "
        "installs, i.e. `work.started` + `materials.installed` of units in assembly, a quarter "
        f"lot receipts, a quarter station states; {avg:,.0f} bytes per record on average). "
        "That share is deliberately high: a plant "
        "with 500 units in a 24 h burn-in ships ~21 servers an hour, ~44 lifecycle events "
        "each, so its real non-telemetry rate is ~1 record/s. All records validly signed by "
        "enrolled stations. The worker first ran live for "
        f"{args.warmup} line seconds (fed at the line's pace), was stopped (SIGTERM), the broker "
        f"was given the next {args.minutes:g} minutes of line time, and the worker was started "
        "again; `ingest_positions` polled every 0.1 s. Drain rate: from the first stored batch "
        "to the last record. 'Caught up with the line still running' = (backlog + rate x "
        "start-up) / (rate - line rate), computed from the measured drain (the bench does not "
        "feed the line during the drain). One embedded broker per database, same records.", "",
        table(rows), "",
    ])


if __name__ == "__main__":
    raise SystemExit(main())
