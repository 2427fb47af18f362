"""StationClient spool (issue 3, Bench): events/s from `emit` to broker ack, and memory.

Against a fresh embedded broker (Tansu, memory storage) on this machine, each variant in a
process of its own (so its RSS is its own), on the same N `unit.arrived` events over 200 units:

- `spool, 1 emitter`: `await emit()` one after another (each waits for its durable commit,
  one fsync), then `flush()`; the clock stops when the broker acknowledged the last event.
- `spool, 16 emitters`: 16 tasks of one station emitting concurrently (group commit), flush.
- `spool, drain backlog`: N events spooled while no broker answers, then a client started
  against the broker; the time to deliver the backlog (the sender alone) and the RSS while
  N events wait (they are on disk, not in memory).
- Baselines from the same run: `previous client (in memory)`, the first StationClient (git
  revision `--v1-rev`: encode, sign, `send_and_wait`, one in flight, nothing durable);
  `aiokafka send_and_wait` and `aiokafka pipelined` on pre-signed bytes (the transport alone,
  one in flight / all in flight; neither is durable nor keeps order across retries);
  `encode + sign only`, the CPU cost every path pays.

    .venv/bin/python -m bench.bench_spool               # 20,000 events, writes docs/benchmarks.md
    .venv/bin/python -m bench.bench_spool --n 2000 --docs ''   # smoke run
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import machine, table  # noqa: E402

SECTION = "## Station spool: emit-to-ack throughput and memory"
T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
VARIANTS = ["encode-sign", "aiokafka-wait", "aiokafka-pipelined", "client-v1",
            "spool-1", "spool-16", "spool-backlog"]
LABELS = {
    "encode-sign": "encode + sign only (no broker)",
    "aiokafka-wait": "aiokafka send_and_wait, pre-signed bytes",
    "aiokafka-pipelined": "aiokafka pipelined send, pre-signed bytes",
    "client-v1": "previous client (in memory, one in flight)",
    "spool-1": "spool, 1 emitter (emit + flush)",
    "spool-16": "spool, 16 emitters (emit + flush)",
    "spool-backlog": "spool, drain a backlog (sender alone)",
}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def events(n: int) -> list[tuple[str, Any]]:
    from linetrace.schemas.bodies import UnitArrived

    return [(f"SRV-B-{i % 200:06d}", UnitArrived(step=10 + i // 200 % 100)) for i in range(n)]


def signed(n: int, key: Any) -> list[tuple[bytes, bytes, list[tuple[str, bytes]]]]:
    from linetrace.schemas.envelope import encode_event
    from linetrace.schemas.signing import sign_value

    out = []
    for i, (subject, body) in enumerate(events(n)):
        v = encode_event(event_type="unit.arrived", source="bench-01", subject=subject,
                         body=body, time=T0, event_id=str(uuid.uuid4()), stationseq=i + 1)
        out.append((subject.encode(), v, [("content-type", b"application/cloudevents+json"),
                                          *sign_value(v, key)]))
    return out


def load_v1_client(rev: str) -> Any:
    """The first StationClient, from git, as a module inside linetrace.stations."""
    repo = Path(__file__).resolve().parents[1]
    src = subprocess.run(["git", "show", f"{rev}:stations/client.py"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    spec = importlib.util.spec_from_loader("linetrace.stations._client_v1", loader=None)
    assert spec is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "linetrace.stations"
    sys.modules[spec.name] = mod
    exec(compile(src, f"{rev}:stations/client.py", "exec"), mod.__dict__)
    return mod


async def run_variant(name: str, bootstrap: str, n: int, state: Path,
                      v1_rev: str) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from linetrace.schemas.signing import generate_key
    from linetrace.stations.client import StationClient

    key = generate_key()
    evs = events(n)
    out: dict[str, Any] = {}
    rss0 = rss_mb()
    if name == "encode-sign":
        t = time.perf_counter()
        signed(n, key)
        secs = time.perf_counter() - t
    elif name.startswith("aiokafka"):
        recs = signed(n, key)
        p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=1)
        await p.start()
        try:
            t = time.perf_counter()
            if name == "aiokafka-wait":
                for k, v, h in recs:
                    await p.send_and_wait("line.events", v, key=k, headers=h)
            else:
                futs = [await p.send("line.events", v, key=k, headers=h) for k, v, h in recs]
                await asyncio.gather(*futs)
            secs = time.perf_counter() - t
        finally:
            await p.stop()
    elif name == "client-v1":
        mod = load_v1_client(v1_rev)
        async with mod.StationClient("bench-01", key, bootstrap, state) as c:
            t = time.perf_counter()
            for subject, body in evs:
                await c.emit("unit.arrived", subject, body, time=T0)
            secs = time.perf_counter() - t
    elif name in ("spool-1", "spool-16"):
        async with StationClient("bench-01", key, bootstrap, state) as c:
            t = time.perf_counter()
            if name == "spool-1":
                for subject, body in evs:
                    await c.emit("unit.arrived", subject, body, time=T0)
            else:
                async def emitter(part: list[tuple[str, Any]]) -> None:
                    for subject, body in part:
                        await c.emit("unit.arrived", subject, body, time=T0)
                await asyncio.gather(*(emitter(evs[i::16]) for i in range(16)))
            out["emit_s"] = time.perf_counter() - t
            await c.flush()
            secs = time.perf_counter() - t
    elif name == "spool-backlog":
        dead = StationClient("bench-01", key, "127.0.0.1:1", state, stop_timeout_s=0)
        async with dead:
            async def emitter(part: list[tuple[str, Any]]) -> None:
                for subject, body in part:
                    await dead.emit("unit.arrived", subject, body, time=T0)
            await asyncio.gather(*(emitter(evs[i::16]) for i in range(16)))
            out["rss_backlog_mb"] = rss_mb()
        async with StationClient("bench-01", key, bootstrap, state) as c:
            t = time.perf_counter()
            await c.flush()
            secs = time.perf_counter() - t
    else:
        raise SystemExit(f"unknown variant {name}")
    out.update(variant=name, n=n, seconds=secs, per_s=n / secs, rss_start_mb=rss0,
               rss_end_mb=rss_mb(), rss_peak_mb=peak_mb())
    return out


def run_all(args: argparse.Namespace) -> list[dict[str, Any]]:
    from linetrace.streams.broker import EmbeddedBroker, ensure_topics

    broker = EmbeddedBroker()
    broker.start()
    results = []
    try:
        asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
        with tempfile.TemporaryDirectory(prefix="bench-spool-", dir=args.tmp) as tmp:
            for name in args.variants:
                cmd = [sys.executable, "-m", "bench.bench_spool", "--variant", name,
                       "--bootstrap", broker.bootstrap, "--n", str(args.n),
                       "--state", str(Path(tmp) / name), "--v1-rev", args.v1_rev]
                done = subprocess.run(cmd, capture_output=True, text=True,
                                      cwd=Path(__file__).resolve().parents[1])
                if done.returncode != 0:
                    raise SystemExit(f"{name} failed:\n{done.stdout}\n{done.stderr[-3000:]}")
                res = json.loads(done.stdout.strip().splitlines()[-1])
                print(f"{LABELS[name]:45} {res['per_s']:9,.0f} events/s  "
                      f"peak RSS {res['rss_peak_mb']:.0f} MB", flush=True)
                results.append(res)
    finally:
        broker.stop()
    return results


def render(args: argparse.Namespace, results: list[dict[str, Any]]) -> str:
    rows: list[tuple[str, ...]] = [
        ("path", "events/s", "time (s)", "RSS start / peak (MB)", "note")]
    for r in results:
        note = ""
        if "emit_s" in r:
            note = f"emit returned for all after {r['emit_s']:.2f} s"
        if "rss_backlog_mb" in r:
            note = f"RSS with {r['n']:,} events waiting: {r['rss_backlog_mb']:.0f} MB"
        rows.append((LABELS[r["variant"]], f"{r['per_s']:,.0f}", f"{r['seconds']:.2f}",
                     f"{r['rss_start_mb']:.0f} / {r['rss_peak_mb']:.0f}", note))
    cmd = "    .venv/bin/python -m bench.bench_spool " + " ".join(sys.argv[1:])
    return f"""{SECTION}

{args.n:,} `unit.arrived` events (~310-byte values, ~180 bytes of headers) over 200 units,
one station, embedded broker (Tansu, memory storage) on 127.0.0.1; each path in a process
of its own.
Machine: {machine()}; {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}.

{cmd.rstrip()}

{table(rows)}

- "events/s" is from the first `emit` to the broker's acknowledgement of the last event
  (`flush` returned); the spool rows include encoding and signing, as do the previous client's;
  the aiokafka rows send bytes signed beforehand (the transport alone).
- One emitter pays one durable SQLite commit (an fsync) per event; concurrent emitters share
  commits (group commit). The sender delivers up to 1,000 events / 900 KB per round, one
  record batch per partition, acknowledgements recorded without an fsync of their own.
- The backlog row shows the sender alone, and that memory does not grow with what waits:
  the spooled events are on disk.
- The previous client and `aiokafka send_and_wait` keep nothing if the station crashes; the
  pipelined aiokafka row is the transport's ceiling and would reorder events on a retried
  batch without the idempotent producer the embedded broker lacks.
"""


def write_section(path: Path, body: str) -> None:
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(SECTION))
        tail = "" if end < 0 else text[end:]
        text = text[:start] + body.rstrip("\n") + "\n" + tail
    path.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--variants", nargs="+", default=VARIANTS, choices=VARIANTS)
    ap.add_argument("--v1-rev", default="7c57b6b",
                    help="git revision holding the first StationClient")
    ap.add_argument("--docs", default="docs/benchmarks.md", help="'' to leave docs untouched")
    ap.add_argument("--tmp", default=None, help="where spool files go (default: system temp)")
    ap.add_argument("--variant", help=argparse.SUPPRESS)
    ap.add_argument("--bootstrap", help=argparse.SUPPRESS)
    ap.add_argument("--state", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.variant:
        res = asyncio.run(run_variant(args.variant, args.bootstrap, args.n, Path(args.state),
                                      args.v1_rev))
        print(json.dumps(res))
        return
    results = run_all(args)
    if args.docs:
        write_section(Path(args.docs), render(args, results))
        print(f"wrote {args.docs}")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
