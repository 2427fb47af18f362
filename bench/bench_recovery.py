"""Recovery times (issue 8, item 11): worker takeover, database return, broker-outage logs.

A real line (`recovery_line.py`): `linetrace broker` (Tansu), workers on a fresh PostgreSQL
schema, one station process emitting `unit.arrived` at `--rate` events/s over 64 units (every
partition of line.events gets a record every few tens of ms). Figures:

- **takeover**: two workers run; the older one is SIGKILLed. The clock runs from the kill until
  every partition of line.events has had a batch written past where it stood at the kill
  (`ingest_positions`): the partitions that stall are the dead worker's, and the time is how
  long the running worker took to take them over and write their first batch (the backlog
  that piled up meanwhile included). `--rounds` kills, each with a fresh second worker.
- **restart** (for comparison): the only worker is SIGKILLed and started again at once; the
  same clock (start-up included).
- **database return**: the worker reaches PostgreSQL through a TCP proxy that goes away for
  `--db-outage` s (connections cut, port refusing) and returns; the clock runs from its return
  until the ledger's positions next advance (the first batch committed).
- **broker outage logs**: the broker is SIGKILLed, started again empty on the same port after
  3 s; WARNING-or-worse records logged by the worker and by the station process from the kill
  until 15 s after the return.

    .venv/bin/python -m bench.bench_recovery --baseline /tmp/lt11-base   # both trees, docs
    .venv/bin/python -m bench.bench_recovery --rounds 1 --docs ''       # smoke run

`--baseline PATH` runs every scenario first against the linetrace checked out at PATH (e.g.
`git worktree add /tmp/lt11-base <commit>`), then against this checkout, in the same run.
Never part of `make test`.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.recovery_line import (  # noqa: E402
    Line, PgProxy, Proc, Tree, loud_records, positions,
)
from bench.report import machine, table, today, write_section  # noqa: E402

SECTION = "## Recovery: worker takeover, database return, broker-outage logs"
PG = os.environ.get("LINETRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
EVENTS, PARTITIONS = "line.events", 8
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


# --- the station process -------------------------------------------------------------------

def station_main(argv: list[str]) -> int:
    from linetrace.schemas.bodies import UnitArrived
    from linetrace.schemas.signing import load_private_key_pem
    from linetrace.stations.sync_client import SyncStationClient

    ap = argparse.ArgumentParser()
    for name in ("--bootstrap", "--station", "--key", "--state"):
        ap.add_argument(name, required=True)
    ap.add_argument("--rate", type=float, default=100.0)
    a = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    key = load_private_key_pem(Path(a.key).read_bytes())
    with SyncStationClient(a.station, key, a.bootstrap, Path(a.state), stop_timeout_s=2) as c:
        began, i = time.monotonic(), 0
        while not stop.is_set():
            c.emit("unit.arrived", f"SRV-REC-{i % 64:06d}", UnitArrived(step=10), time=T0,
                   event_id=str(uuid.uuid4()))
            i += 1
            if (delay := began + i / a.rate - time.monotonic()) > 0:
                stop.wait(delay)
    return 0


# --- helpers -------------------------------------------------------------------------------

def wait(pred: Callable[[], Any], timeout: float, what: str, every: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := pred()):
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(every)
    return value


def assigned(p: Proc, seen: int) -> bool:
    """The worker logged more partition assignments than `seen` (its restart guard's seek)."""
    return sum("resumed" in ln and "partition(s)" in ln for ln in p.lines()) > seen


def writes_resume(pg: Any, t0: float, timeout: float = 90.0) -> tuple[float, list[int]]:
    """Seconds from `t0` (a worker was just SIGKILLed) until every partition has had a batch
    written past where it stood (read right after the kill: the dead worker writes no more),
    and the partitions that took more than a second: the dead worker's."""
    start = positions(pg, EVENTS)
    done: dict[int, float] = {}
    deadline = t0 + timeout
    while len(done) < PARTITIONS:
        now = time.monotonic()
        if now > deadline:
            raise RuntimeError(f"partitions {sorted(set(range(PARTITIONS)) - set(done))} "
                               "did not resume")
        pos = positions(pg, EVENTS)
        for p in range(PARTITIONS):
            if p not in done and pos.get(p, 0) > start.get(p, 0):
                done[p] = now - t0
        time.sleep(0.02)
    return max(done.values()), sorted(p for p, t in done.items() if t > 1.0)


def flowing(pg: Any, seconds: float = 2.0) -> bool:
    """Every partition advanced within `seconds`."""
    before = positions(pg, EVENTS)
    time.sleep(seconds)
    after = positions(pg, EVENTS)
    return all(after.get(p, 0) > before.get(p, 0) for p in range(PARTITIONS))


# --- one tree, every scenario --------------------------------------------------------------

def run_tree(tree: Tree, args: argparse.Namespace) -> dict[str, Any]:
    import psycopg

    schema = f"bench_recovery_{uuid.uuid4().hex[:10]}"
    admin = psycopg.connect(PG, autocommit=True)
    admin.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG else "?"
    direct = f"{PG}{sep}options=-csearch_path%3D{schema}"
    pg = psycopg.connect(PG, autocommit=True, options=f"-csearch_path={schema}")
    data = Path(tempfile.mkdtemp(prefix="lt-recovery-"))
    line = Line(tree, data, direct)
    out: dict[str, Any] = {"commit": tree.commit(), "data": str(data)}
    try:
        line.broker()
        station = line.station("ict-rec-01", line.enroll("ict-rec-01"), args.rate)
        workers = [line.worker("worker-1")]
        wait(lambda: assigned(workers[0], 0), 60, "the first worker's assignment")
        wait(lambda: flowing(pg), 90, "every partition to flow", every=0)

        takeovers: list[float] = []
        for r in range(args.rounds):
            new = line.worker(f"worker-{r + 2}")
            wait(lambda: assigned(new, 0), 90, "the new worker's assignment")
            wait(lambda: flowing(pg), 90, "every partition to flow again", every=0)
            victim = workers.pop(0)
            t0 = time.monotonic()
            victim.kill()
            took, stalled = writes_resume(pg, t0)
            print(f"  takeover {r + 1}: {took:.2f} s (stalled partitions {stalled}; killed "
                  f"{victim.log.stem} at {datetime.now() - timedelta(seconds=took):%H:%M:%S.%f})",
                  flush=True)
            takeovers.append(took)
            workers.append(new)
        out["takeover"] = takeovers
        if args.takeover_only:
            return out

        only = workers.pop()
        wait(lambda: flowing(pg), 90, "every partition to flow", every=0)
        t0 = time.monotonic()
        only.kill()
        workers.append(line.worker("worker-restarted"))
        out["restart"], _ = writes_resume(pg, t0)
        print(f"  restart: {out['restart']:.2f} s", flush=True)
        workers.pop().kill()

        proxy = PgProxy(("127.0.0.1", 5432))
        via = f"postgresql://postgres@127.0.0.1:{proxy.port}/test?options=-csearch_path%3D{schema}"
        w = line.worker("worker-db", db=via)
        wait(lambda: assigned(w, 0), 90, "the proxied worker's assignment")
        wait(lambda: flowing(pg), 90, "every partition to flow", every=0)
        returns: list[float] = []
        db_logs: list[int] = []
        for r in range(args.rounds):
            mark = len(w.lines())
            proxy.down()
            time.sleep(args.db_outage)
            before = positions(pg, EVENTS)
            t1 = time.monotonic()
            proxy.up()
            wait(lambda: any(v > before.get(p, 0) for p, v in positions(pg, EVENTS).items()),
                 60, "a write after the database returned", every=0.01)
            returns.append(time.monotonic() - t1)
            time.sleep(2)
            db_logs.append(loud_records(w.lines(), mark))
            print(f"  database return {r + 1}: {returns[-1]:.2f} s, {db_logs[-1]} WARNING+ "
                  "records in the worker's log", flush=True)
            wait(lambda: flowing(pg), 90, "every partition to flow", every=0)
        out["db_return"], out["db_logs"] = returns, db_logs

        marks = (len(w.lines()), len(station.lines()))
        next(p for p in line.procs if p.log.name == "broker.log").kill()
        time.sleep(3)
        line.broker()
        time.sleep(15)
        out["outage_logs"] = (loud_records(w.lines(), marks[0]),
                              loud_records(station.lines(), marks[1]))
        print(f"  broker outage: {out['outage_logs'][0]} WARNING+ records in the worker's log, "
              f"{out['outage_logs'][1]} in the station's", flush=True)
        proxy.down()
    finally:
        line.stop()
        pg.close()
        admin.execute(f"DROP SCHEMA {schema} CASCADE")
        admin.close()
    return out


# --- report --------------------------------------------------------------------------------

NOTES = """\
- Takeover: from the SIGKILL until every partition of line.events has had a batch written past
  where it stood (the dead worker's stall; the running worker's own never do). Against the
  embedded broker the group runs a 2 s session with 0.2 s heartbeats (was 6 s / 0.5 s): the
  session expires, Tansu's join round takes 1 s (it takes 2 s and more with longer sessions),
  the assignment seeks to the ledger's positions (~0.25 s) and the first batch, holding the
  backlog of those seconds, is written. Against a Kafka of one's own the worker keeps 6 s /
  0.5 s (brokers refuse sessions below group.min.session.timeout.ms, 6 s by default).
- Restart: the same clock when the only worker is SIGKILLed and started again (~3 s of it is
  the new process starting); not a goal, for comparison with the figure of issue 8.
- Database return: the processor's retry loop (`in_writer`) backs off to at most 1 s; a batch
  whose screening could not read the enrolled keys is retried by `process_until_done`, now
  also capped at 1 s (was 10 s). The worker's lines per outage: the outage and its end (the
  ledger and the relay, each once) and mode's "timer is overlapping" for the stalled tick.
- Broker outage: aiokafka's records are folded by `cli/client_logs.py` (first one, then one
  summary); the worker adds its "broker restarted empty: rewound" line. The station logs
  "delivery paused" once and the replay of what the broker lost once (`stations/sender.py`);
  its `BrokerLink` probes TCP before aiokafka connects, so aiokafka logs nothing while the
  broker is away."""

def fmt(xs: list[float]) -> str:
    return f"{statistics.median(xs):.2f} / {max(xs):.2f}"


def render(args: argparse.Namespace, results: dict[str, dict[str, Any]], argv: list[str]) -> str:
    cols = list(results)
    rows: list[tuple[str, ...]] = [("figure", *cols, "goal")]
    rows.append((f"takeover after a SIGKILL, s median / max ({args.rounds} kills)",
                 *(fmt(r["takeover"]) for r in results.values()), "< 5 s"))
    rows.append(("restart of the only worker after a SIGKILL, s",
                 *(f"{r['restart']:.2f}" for r in results.values()), "-"))
    rows.append((f"writes resume after the database returns, s median / max "
                 f"({args.rounds} outages of {args.db_outage:g} s)",
                 *(fmt(r["db_return"]) for r in results.values()), "< 2 s"))
    rows.append(("WARNING+ records in the worker's log per database outage",
                 *(f"{max(r['db_logs'])}" for r in results.values()), "a handful"))
    rows.append(("WARNING+ records in the worker's / station's log, 3 s broker outage",
                 *(f"{r['outage_logs'][0]} / {r['outage_logs'][1]}" for r in results.values()),
                 "a handful"))
    cmd = ".venv/bin/python -m bench.bench_recovery" + "".join(f" {a}" for a in argv)
    return "\n".join([
        SECTION, "",
        f"Measured {today()} on {machine()}; PostgreSQL on local TCP; embedded broker (Tansu). "
        f"Columns: " + "; ".join(f"{c} = commit {r['commit']}" for c, r in results.items())
        + ". One station emits "
        f"{args.rate:g} events/s over 64 units (all 8 partitions of line.events). Reproduce with:",
        "", f"    {cmd}", "", table(rows), "", NOTES, "",
    ])


def main(argv: list[str]) -> int:
    if argv[:1] == ["station"]:
        return station_main(argv[1:])
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--baseline", type=Path, help="a worktree of the commit to compare with")
    ap.add_argument("--tree", type=Path,
                    help="measure this worktree instead of the checkout (e.g. a clean commit)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--rate", type=float, default=100.0)
    ap.add_argument("--db-outage", type=float, default=5.0)
    ap.add_argument("--takeover-only", action="store_true", help="skip the other scenarios")
    ap.add_argument("--docs", default="docs/benchmarks.md", help="'' to leave docs untouched")
    args = ap.parse_args(argv)
    if args.takeover_only:
        args.docs = ""
    logging.getLogger("aiokafka").setLevel(logging.CRITICAL)  # our own probe consumer
    results: dict[str, dict[str, Any]] = {}
    trees = ([("baseline", Tree(args.baseline))] if args.baseline else []) + [
        ("this tree", Tree(args.tree))]
    for name, tree in trees:
        print(f"== {name} ({tree.commit()})", flush=True)
        results[name] = run_tree(tree, args)
    print(table([("figure", *results)] + [
        (k, *(str(r.get(k)) for r in results.values()))
        for k in ("takeover", "restart", "db_return", "db_logs", "outage_logs")]))
    if args.docs:
        write_section(Path(args.docs), render(args, results, argv))
        print(f"wrote {args.docs}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
