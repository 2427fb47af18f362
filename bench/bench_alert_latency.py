"""End-to-end alert latency (issue 12): station `emit` to the alert's message on `line.alerts`,
under a sustained mixed load on one real worker.

A real embedded broker and one `linetrace worker` process (SQLite ledger, the stations of
`bench_pipeline` enrolled, plus `firmware-01`). A load generator process sends `--rate`
signed records per second of wall time (one chunk per second, event time advancing one second
per chunk): 8-GPU `burnin.telemetry` of `--units` units in burn-in at a steady temperature
(no anomaly), and the rest of the line (route A lifecycle at kitting and GPU install,
receipts, station states), `--other` of each second's records. Meanwhile the bench injects, at
known times, anomalies whose alert it can time, each through a `StationClient.emit`:

- a forged record: a station the ledger does not know (`ghost-NNN`, its own key) sends an
  event; ingest quarantines it and the security detector raises `security.quarantine` with
  subject `ghost-NNN`;
- a non-golden firmware flash: `firmware-01` reports `firmware.flashed` of the BMC image with
  another SHA-256 for a unit of its own; the supply detector raises
  `supply.firmware_mismatch` (subject `UNIT/BMC...`).

Latency = the alert's message read by a consumer of `line.alerts` (assigned at the end of
every partition before the first injection) minus the `perf_counter` just before `emit`.
Reports p50/p95/p99 per kind and together, alerts never seen within `--timeout`, the load
actually sustained (records the generator sent per second, and the worker's stored records
per second over the same window) and the worker's lag (records in the broker not yet stored,
sampled every second; in seconds of load at the sustained rate).

    .venv/bin/python -m bench.bench_alert_latency [--rate 2000] [--seconds 60]
    .venv/bin/python -m bench.bench_alert_latency --quick      # 500/s for 20 s
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas import bodies as b
from linetrace.schemas.topics import ALERTS, ALL_TOPICS, INPUT_TOPICS
from linetrace.streams.batch_consumer import FETCH_MAX_WAIT_MS
from linetrace.stations.client import StationClient
from linetrace.stations.simulator import golden_firmware
from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from .bench_pipeline import SCRIPT, keys, prepare_ledger, script_body
from .stream_load import Plant, Record, WorkerProc, fill, loadavg

T0 = datetime(2026, 6, 1, 8, 0, tzinfo=UTC)
FIRMWARE = "firmware-01"


def firmware_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"latency firmware").digest())


def _steady(g: int, unit: int) -> b.GpuSample:
    """A healthy GPU at steady load: the same figures every second (no anomaly to find)."""
    return b.GpuSample(gpu_index=g, gpu_serial=f"GPU-L-{unit:06d}-{g}",
                       gpu_uuid=f"GPU-{uuid.UUID(int=unit * 8 + g)}", temp_c=64.0 + (g % 3),
                       mem_temp_c=70.0, temp_margin_c=25.0, power_w=880.0 + g,
                       sm_clock_mhz=1965.0, mem_clock_mhz=2619.0, util_pct=100.0, pcie_gen=5,
                       pcie_width=16, nvlink_links_up=18)


class Load:
    """The records of each line second: telemetry of `units` units, then `other` records of
    the rest of the line (route A lifecycle of rotating servers, receipts, station states)."""

    def __init__(self, units: int, other: int) -> None:
        self.units, self.other = units, other
        self.plant = Plant(burnin_serial=lambda u: f"SRV-L-{u:06d}",
                           assembly_serial=lambda k: f"SRV-A-{k:06d}")
        self.runs = {u: str(uuid.uuid5(uuid.NAMESPACE_OID, f"latency run {u}"))
                     for u in range(units)}
        self.k = 0  # other events so far
        self.tx: dict[tuple[int, int], str] = {}

    def _lifecycle(self, t: datetime) -> Record:
        p = self.k // 3
        server, (station, etype, step) = p // len(SCRIPT), SCRIPT[p % len(SCRIPT)]
        serial = f"SRV-A-{server:06d}"
        tx = self.tx.setdefault((server, step), str(uuid.uuid4()))
        items = [b.InstalledItem(lot="LOT-L-GPU", mpn="699-21010-0210-000", category="gpu",
                                 serial=f"GPU-A-{server:06d}-{g}", slot=g) for g in range(8)] \
            if etype == "materials.installed" else []
        return self.plant._emit(station, etype, serial,
                                script_body(etype, step, tx, "WO-L", items), t)

    def second(self, s: int) -> list[Record]:
        t = T0 + timedelta(seconds=s)
        out = [self.plant._emit(f"burnin-0{1 + u % 2}", "burnin.telemetry", f"SRV-L-{u:06d}",
                                b.BurninTelemetry(run_id=self.runs[u],
                                                  samples=[_steady(g, u) for g in range(8)]),
                                t + timedelta(microseconds=u))
               for u in range(self.units)]
        for i in range(self.other):
            ti = t + timedelta(microseconds=self.units + i)
            kind = self.k % 3
            if kind == 0:
                out.append(self._lifecycle(ti))
            elif kind == 1:
                lot = f"LOT-L-{self.k:08d}"
                out.append(self.plant._emit("receiving-01", "material.received", lot,
                                            b.MaterialReceived(lot=lot, mpn="699-21010-0210-000",
                                                               supplier="SUP-NVIDIA",
                                                               date_code="2625", qty=8), ti))
            else:
                out.append(self.plant._emit("ict-01", "station.state", "ict-01",
                                            b.StationState(state=1000), ti))
            self.k += 1
        return out


def generate(bootstrap: str, units: int, other: int, seconds: int, out: Path) -> None:
    """The load generator (a process of its own): one chunk per wall second."""
    load = Load(units, other)
    t = time.perf_counter()
    ends, n, size = asyncio.run(fill(bootstrap, (load.second(s) for s in range(seconds)),
                                     pace=1.0))
    out.write_text(json.dumps({"records": n, "bytes": size, "seconds": time.perf_counter() - t}))


async def _ghost(data: Path, bootstrap: str, i: int) -> StationClient:
    key = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(f"ghost {i}".encode()).digest())
    c = StationClient(f"ghost-{i:03d}", key, bootstrap, data / "ghosts" / f"{i:03d}")
    await c.start()
    return c


async def inject(bootstrap: str, data: Path, n: int, every: float, timeout: float,
                 line_time: float) -> tuple[dict[str, float], dict[str, float], dict[str, str]]:
    """Inject n anomalies `every` seconds (alternating forged / firmware); returns
    (subject -> emit perf time, subject -> message perf time, subject -> kind)."""
    # the reader of line.alerts (a console, an ERP) asks for short fetch waits as the worker
    # does (FETCH_MAX_WAIT_MS): with aiokafka's 500 ms the embedded broker holds a fetch that
    # long even when an alert arrives meanwhile, and the bench would time its own reader
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                group_id=None, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    await consumer.start()
    parts = [TopicPartition(ALERTS, p) for p in range(ALL_TOPICS[ALERTS])]
    consumer.assign(parts)
    await consumer.seek_to_end(*parts)
    for p in parts:
        await consumer.position(p)
    ghosts = [await _ghost(data, bootstrap, i) for i in range((n + 1) // 2)]
    fw = StationClient(FIRMWARE, firmware_key(), bootstrap, data / "fw")
    await fw.start()
    golden = next((img, ver) for (img, ver) in golden_firmware() if img == "ast2600-bmc-a")
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    kinds: dict[str, str] = {}
    walls.clear()
    done = asyncio.Event()

    async def read() -> None:
        while not done.is_set():
            batch = await consumer.getmany(timeout_ms=50)
            now = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    doc = json.loads(m.value)
                    subject = str(doc.get("subject", ""))
                    key = subject.split("/", 1)[0] if subject.startswith("SRV-INJ") else subject
                    if key in sent and key not in seen:
                        seen[key] = now
                        walls[key] = (walls[key][0], time.time())

    reader = asyncio.create_task(read())
    start = time.perf_counter()
    try:
        for i in range(n):
            await asyncio.sleep(max(0.0, start + (i + 1) * every - time.perf_counter()))
            when = T0 + timedelta(seconds=line_time + (time.perf_counter() - start))
            if i % 2 == 0:
                g = ghosts[i // 2]
                key, kinds[g.station_id] = g.station_id, "forged"
                walls[key] = (time.time(), 0.0)
                sent[key] = time.perf_counter()
                await g.emit("station.state", g.station_id, b.StationState(state=1000),
                             time=when)
            else:
                key = f"SRV-INJ-{i:04d}"
                kinds[key] = "firmware"
                walls[key] = (time.time(), 0.0)
                sent[key] = time.perf_counter()
                await fw.emit("firmware.flashed", key, b.FirmwareFlashed(
                    component="BMC", image=golden[0], version=golden[1],
                    sha256=hashlib.sha256(f"not golden {i}".encode()).hexdigest(), target=key),
                    time=when)
        deadline = time.perf_counter() + timeout
        while len(seen) < len(sent) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
    finally:
        done.set()
        await reader
        await asyncio.gather(*(g.stop() for g in ghosts), fw.stop(), return_exceptions=True)
        await consumer.stop()
    return sent, seen, kinds


#: subject key -> (wall time before emit, wall time the message was read)
walls: dict[str, tuple[float, float]] = {}


def stages(db: Path) -> dict[str, tuple[float, float, float]]:
    """Where each injected alert's time went, from the outbox's wall-clock columns: (emit to
    the outbox row committed with the stored event, row to published, published to read), ms."""
    out: dict[str, tuple[float, float, float]] = {}
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT value, created, sent FROM outbox WHERE topic = ? "
                            "ORDER BY seq", (ALERTS,)).fetchall()
    for value, created, sent_at in rows:
        subject = str(json.loads(value).get("subject", ""))
        key = subject.split("/", 1)[0] if subject.startswith("SRV-INJ") else subject
        if key in walls and key not in out and sent_at is not None and walls[key][1]:
            c, s_ = (_epoch(created), _epoch(sent_at))
            emit, read = walls[key]
            out[key] = ((c - emit) * 1000, (s_ - c) * 1000, (read - s_) * 1000)
    return out


def _epoch(v: object) -> float:
    t = v if isinstance(v, datetime) else datetime.fromisoformat(str(v))
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def _pct(xs: list[float], q: float) -> float:
    if not xs:
        return float("nan")
    xs = sorted(xs)
    return xs[min(len(xs) - 1, max(0, round(q * (len(xs) - 1))))]


def _ends(bootstrap: str) -> dict[tuple[str, int], int]:
    async def go() -> dict[tuple[str, int], int]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
        await c.start()
        try:
            parts = [TopicPartition(t.name, p) for t in INPUT_TOPICS for p in range(t.partitions)]
            got = await c.end_offsets(parts)
            return {(tp.topic, tp.partition): int(o) for tp, o in got.items()}
        finally:
            await c.stop()
    return asyncio.run(go())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=2000, help="records per second of load")
    ap.add_argument("--other", type=float, default=0.1, help="share of non-telemetry records")
    ap.add_argument("--seconds", type=int, default=60, help="seconds of load")
    ap.add_argument("--warmup", type=int, default=10, help="seconds of load before injecting")
    ap.add_argument("--every", type=float, default=1.0, help="seconds between injections")
    ap.add_argument("--timeout", type=float, default=30.0, help="wait for the last alerts")
    ap.add_argument("--quick", action="store_true", help="500 records/s for 20 s")
    ap.add_argument("--generate", nargs=5, metavar=("BOOTSTRAP", "UNITS", "OTHER", "SECONDS",
                                                    "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.generate:
        bs, units, other, secs, out = args.generate
        generate(bs, int(units), int(other), int(secs), Path(out))
        return 0
    if args.quick:
        args.rate, args.seconds, args.warmup = 500, 20, 5
    other = round(args.rate * args.other)
    units = args.rate - other
    n = max(2, int((args.seconds - args.warmup - 2) / args.every))
    print(f"load: {args.rate}/s for {args.seconds} s ({units} units in burn-in, {other} other "
          f"records a second); {n} injections every {args.every} s after {args.warmup} s",
          flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "worker"
        data.mkdir()
        db = f"sqlite:///{data / 'ledger.db'}"
        broker = EmbeddedBroker(log_file=tmp / "broker.log")
        broker.start()
        worker = WorkerProc(broker.bootstrap, data, db)
        gen: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
            prepare_ledger(db, data, None)
            _enroll_firmware(db, data)
            worker.start()
            _wait_ready(worker, broker.bootstrap)
            before = sum(worker.positions().values())
            t_start = time.perf_counter()
            gen = subprocess.Popen([sys.executable, "-m", "bench.bench_alert_latency",
                                    "--generate", broker.bootstrap, str(units), str(other),
                                    str(args.seconds), str(tmp / "gen.json")])
            lags: list[int] = []
            stop = [False]

            def sample() -> None:
                while not stop[0]:
                    try:
                        ends, pos = _ends(broker.bootstrap), worker.positions()
                        lags.append(sum(max(0, e - pos.get(k, 0)) for k, e in ends.items()))
                    except Exception:
                        pass
                    time.sleep(1.0)

            import threading
            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(args.warmup)
            sent, seen, kinds = asyncio.run(inject(broker.bootstrap, tmp, n, args.every,
                                                   args.timeout, float(args.warmup)))
            gen.wait(args.seconds + 120)
            stored = sum(worker.positions().values()) - before
            elapsed = time.perf_counter() - t_start
            stop[0] = True
            sampler.join(5)
            g = json.loads((tmp / "gen.json").read_text())
            split = stages(data / "ledger.db")
        finally:
            if gen is not None and gen.poll() is None:
                gen.kill()
            worker.close()
            broker.stop()
    lat = {k: (seen[k] - sent[k]) * 1000 for k in seen}
    rows = []
    for kind in ("forged", "firmware", "all"):
        xs = [v for k, v in lat.items() if kind == "all" or kinds[k] == kind]
        total = sum(1 for k in sent if kind == "all" or kinds[k] == kind)
        rows.append((kind, len(xs), total - len(xs), _pct(xs, 0.5), _pct(xs, 0.95),
                     _pct(xs, 0.99), max(xs) if xs else float("nan")))
    rate_in = g["records"] / g["seconds"]
    if split:
        parts = list(zip(*split.values()))
        print("where the time went (median ms, outbox wall-clock columns): emit -> alert row "
              f"committed {statistics.median(parts[0]):.0f}, row -> published "
              f"{statistics.median(parts[1]):.0f}, published -> read "
              f"{statistics.median(parts[2]):.0f} ({len(split)} alerts)")
    print("\n| injected | timed | never seen | p50 ms | p95 ms | p99 ms | max ms |")
    print("|---|---|---|---|---|---|---|")
    for kind, k, miss, p50, p95, p99, mx in rows:
        print(f"| {kind} | {k} | {miss} | {p50:.0f} | {p95:.0f} | {p99:.0f} | {mx:.0f} |")
    print(f"\nload sent: {g['records']:,} records in {g['seconds']:.1f} s = {rate_in:,.0f}/s "
          f"(asked {args.rate}/s, {g['bytes'] / g['records']:.0f} bytes each); worker stored "
          f"{stored:,} records in {elapsed:.1f} s = {stored / elapsed:,.0f}/s; lag (records in "
          f"the broker not yet stored, every 1 s): median {statistics.median(lags or [0]):,.0f}, "
          f"max {max(lags or [0]):,} (= {max(lags or [0]) / max(rate_in, 1):.1f} s of load); "
          f"load average {loadavg():.1f}")
    return 0


def _enroll_firmware(db: str, data: Path) -> None:
    from linetrace.ledger.db import Ledger
    from linetrace.ledger.keys import enroll_station, load_or_create_plant_key

    ledger = Ledger(db)
    plant, _ = load_or_create_plant_key(data / "keys")
    enroll_station(ledger, plant, FIRMWARE, "firmware", firmware_key().public_key())
    ledger.close()


def _wait_ready(worker: WorkerProc, bootstrap: str, timeout: float = 120.0) -> None:
    """Until the worker has stored a first record (a station state sent for the purpose)."""
    async def ping() -> None:
        c = StationClient("ict-01", keys()["ict-01"], bootstrap,
                          worker.data / "ping")
        await c.start()
        await c.emit("station.state", "ict-01", b.StationState(state=1000),
                     time=T0 - timedelta(seconds=1))
        await c.flush()
        await c.stop()

    asyncio.run(ping())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert worker.proc is not None
        if worker.proc.poll() is not None:
            raise RuntimeError(f"worker exited; see {worker.data / 'worker.log'}")
        try:
            if sum(worker.positions().values()):
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise RuntimeError("the worker stored nothing within 120 s")


if __name__ == "__main__":
    sys.exit(main())
