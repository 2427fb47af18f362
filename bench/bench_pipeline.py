"""The full pipeline: the real worker draining a broker full of a realistic mix, beside its
limits measured on the same records in the same run.

The embedded broker is filled with N validly signed records from enrolled stations: 80%
`burnin.telemetry` carrying 8 GPUs (~2.5 KB), 20% lifecycle (work started/completed, parts
installed), receipts and station states. Then, on those records:

- (a) a bare aiokafka consumer that only decodes them (`decode_event`);
- (b) a loop that only verifies their Ed25519 signatures: the limit of per-event signatures
      on one core;
- (c) a Faust no-op agent with the worker's settings (`bench/faust_noop.py`);
- the real `linetrace worker` on SQLite, and on PostgreSQL (`--pg ''` skips it).

Sustained rate = records / (time of the last record drained - time of the first), so process
start-up is not counted. `docs/benchmarks.md` gets the "Pipeline" section.

    .venv/bin/python -m bench.bench_pipeline [--records 20000] [--pg URL | --pg '']
        [--profile F] [--profile-pg F] [--profile-noop F]   # py-spy on PATH; see profile_report

`--profile*` attach py-spy (200 Hz, all threads, idle included) to the worker at its first
stored batch (the no-op agent at its first record) until the drain ends: start-up is left out.
`bench/profile_report.py` turns the stacks into tables; `bench/bench_scaleout.py` reuses
`start_worker` / `wait_drained` for groups of workers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, text

from linetrace.ledger.db import normalise_url
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import INPUT_TOPICS, TOPIC_OF_TYPE
from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from .report import machine, table, tree, write_section

PG = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
STATIONS = {"burnin-01": "burnin", "burnin-02": "burnin", "gpu-install-01": "gpu-install",
            "ict-01": "ict", "receiving-01": "receiving", "kitting-01": "kitting"}
Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def keys() -> dict[str, Ed25519PrivateKey]:
    import hashlib

    return {s: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"pipe " + s.encode())
                                                    .digest()) for s in STATIONS}


def _sample(g: int, unit: int, t: int) -> b.GpuSample:
    """GPU `g` of `unit` at its `t`-th second of burn-in: a healthy GPU at steady load (the
    detectors judge these samples like a real rack's: no alert)."""
    return b.GpuSample(gpu_index=g, gpu_serial=f"GPU-{unit:06d}-{g}",
                       gpu_uuid=f"GPU-{uuid.UUID(int=unit * 8 + g)}",
                       temp_c=60.0 + 0.5 * g + 0.1 * (t % 17), mem_temp_c=70.0 + 0.1 * (t % 11),
                       temp_margin_c=20.0, power_w=650.0 + g, sm_clock_mhz=1980.0,
                       mem_clock_mhz=2619.0, util_pct=99.0)


#: The lifecycle events of one server's first two steps of route A, as a line sends them:
#: (station, type, step); `None` step = the install of that step's GPUs.
SCRIPT: tuple[tuple[str, str, int], ...] = (
    ("kitting-01", "unit.arrived", 50), ("kitting-01", "work.started", 50),
    ("kitting-01", "work.completed", 50), ("kitting-01", "unit.departed", 50),
    ("gpu-install-01", "unit.arrived", 60), ("gpu-install-01", "work.started", 60),
    ("gpu-install-01", "materials.installed", 60), ("gpu-install-01", "work.completed", 60),
    ("gpu-install-01", "unit.departed", 60),
)


def script_body(etype: str, step: int, tx: str, work_order: str,
                 items: list[b.InstalledItem]) -> b.Body:
    """The body of one `SCRIPT` event of a product-A server in work order `work_order`
    (`items`: what its GPU install installs)."""
    if etype == "unit.arrived":
        return b.UnitArrived(step=step)
    if etype == "unit.departed":
        return b.UnitDeparted(step=step)
    if etype == "work.started":
        return b.WorkStarted(transaction_id=tx, step=step, operation=(
            "kitting" if step == 50 else "baseboard-gpu-install"), work_order=work_order,
            product="A", kind="server")
    if etype == "work.completed":
        return b.WorkCompleted(transaction_id=tx, step=step, result="Completed")
    return b.MaterialsInstalled(transaction_id=tx, items=items)


def mix(n: int, legacy: bool = False) -> list[Record]:
    """n signed records in time order: 80% 8-GPU telemetry, 20% lifecycle, receipts, states.

    48 units at once, each sending its telemetry once a second (an event every 20 ms in all):
    until the detection issue a unit's samples were 48 s apart, which the burn-in detectors
    rightly read as a telemetry gap on every sample; a rack does not do that.

    The lifecycle events follow route A (kitting, then GPU install: arrive, start, install,
    complete, depart), each server then replaced by a new one, so the worker's route stage
    sees a conforming line. `legacy`: the mix of the throughput issue (a `work.started` at
    step 50 and an install at a GPU-install station, again and again for the same 48
    servers), which the route stage now holds as violations on every event.
    """
    k = keys()
    seq = {s: 0 for s in STATIONS}
    out: list[Record] = []

    def emit(station: str, etype: str, subject: str, body: b.Body, t: datetime) -> None:
        seq[station] = max(seq[station] + 1, int(t.timestamp() * 1_000_000))
        value = encode_event(event_type=etype, source=station, subject=subject, body=body,
                             time=t, stationseq=seq[station], event_id=str(uuid.uuid4()))
        out.append((TOPIC_OF_TYPE[etype], subject.encode(), value,
                    signing.sign_value(value, k[station])))

    runs = {u: str(uuid.uuid4()) for u in range(48)}
    place = {u: 0 for u in range(48)}  # position in SCRIPT, over the unit's rounds
    txn: dict[tuple[int, int, int], str] = {}

    def lifecycle(unit: int, i: int, t: datetime) -> None:
        p = place[unit]
        place[unit] += 1
        rnd, (station, etype, step) = p // len(SCRIPT), SCRIPT[p % len(SCRIPT)]
        serial = f"SRV-P-{unit:06d}-{rnd:04d}"
        tx = txn.setdefault((unit, rnd, step), str(uuid.uuid4()))
        items = [b.InstalledItem(lot="LOT-GPU-P", mpn="699-2G520-0200-000", category="gpu",
                                 serial=f"GPU-{i:07d}", slot=0)] \
            if etype == "materials.installed" else []
        emit(station, etype, serial, script_body(etype, step, tx, "WO-P", items), t)

    i = 0
    while len(out) < n:
        # one telemetry event per unit per second (CONTRACTS.md), the 48 units 20 ms apart
        t = T0 + timedelta(seconds=i // 48, milliseconds=(i % 48) * 20)
        unit = i % 48
        serial = f"SRV-P-{unit:06d}"
        r = i % 10
        if r < 8:
            emit(f"burnin-0{1 + unit % 2}", "burnin.telemetry", serial, b.BurninTelemetry(
                run_id=runs[unit], samples=[_sample(g, unit, i // 48) for g in range(8)]), t)
        elif r == 8 and legacy:
            tx = str(uuid.uuid4())
            emit("gpu-install-01", "work.started", serial, b.WorkStarted(
                transaction_id=tx, step=50, operation="GPU install", work_order="WO-P",
                product="A", kind="server"), t)
            emit("gpu-install-01", "materials.installed", serial, b.MaterialsInstalled(
                transaction_id=tx, items=[b.InstalledItem(
                    lot="LOT-GPU-P", mpn="699-2G520-0200-000", category="gpu",
                    serial=f"GPU-{i:07d}", slot=0)]), t)
        elif r == 8:
            lifecycle(unit, i, t)
            lifecycle(unit, i, t + timedelta(milliseconds=500))
        elif i % 20 == 9:
            lot = f"LOT-P-{i:07d}"
            emit("receiving-01", "material.received", lot, b.MaterialReceived(
                lot=lot, mpn="699-2G520-0200-000", supplier="NVIDIA", date_code="2026-08",
                qty=8), t)
        else:
            emit("ict-01", "station.state", "ict-01", b.StationState(state=1000), t)
        i += 1
    return out[:n]


async def fill(bootstrap: str, records: list[Record]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5,
                         max_batch_size=1 << 20, max_request_size=8 << 20)
    await p.start()
    try:
        futs = [await p.send(t, v, key=k, headers=h) for t, k, v, h in records]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def bare_consumer(bootstrap: str, n: int) -> float:
    """(a) records/s of a plain consumer that decodes every record."""
    c = AIOKafkaConsumer(*[t.name for t in INPUT_TOPICS], bootstrap_servers=bootstrap,
                         auto_offset_reset="earliest", enable_auto_commit=False,
                         group_id=f"bench-{uuid.uuid4().hex[:6]}", max_poll_records=2000)
    await c.start()
    got, first, last = 0, 0.0, 0.0
    try:
        while got < n:
            batch = await c.getmany(timeout_ms=500, max_records=2000)
            for msgs in batch.values():
                for m in msgs:
                    decode_event(m.value)
                if msgs and not first:
                    first = time.perf_counter()
                got += len(msgs)
            last = time.perf_counter()
    finally:
        await c.stop()
    return n / (last - first)


def verify_only(records: list[Record]) -> float:
    """(b) records/s of Ed25519 verification alone, one core."""
    pubs = {signing.keyid_of(k.public_key()): k.public_key() for k in keys().values()}
    t = time.perf_counter()
    for _, _, value, headers in records:
        keyid, sig = signing.read_signature(headers)
        signing.verify_value(value, sig, pubs[keyid])
    return len(records) / (time.perf_counter() - t)


#: py-spy's mode: all threads, idle ones included (wall time); "--gil": only the thread
#: holding the interpreter lock at each sample (`--profile-gil`).
SPY_MODE = ["--idle"]


def spy(pid: int, out: Path) -> subprocess.Popen[bytes]:
    """py-spy attached to a running process: collapsed stacks of its threads (`SPY_MODE`),
    200 Hz, until it gets SIGINT or the process ends (start-up is left out)."""
    return subprocess.Popen(["py-spy", "record", "--format", "raw", "--threads", *SPY_MODE,
                             "-r", "200", "-o", str(out), "--pid", str(pid)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def unspy(p: subprocess.Popen[bytes] | None) -> None:
    if p is not None:
        if p.poll() is None:
            p.send_signal(signal.SIGINT)
        p.wait(60)


def faust_noop(bootstrap: str, n: int, workdir: Path, profile: Path | None = None) -> float:
    """(c) records/s of a Faust agent that does nothing, with the worker's settings; profiled
    by py-spy from its first record on when `profile` is given."""
    proc = subprocess.Popen([sys.executable, "-m", "bench.faust_noop", bootstrap, str(n),
                             str(workdir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)
    lines: list[str] = []
    spied = None
    assert proc.stdout is not None
    try:
        for line in proc.stdout:  # Faust logs what we print
            lines.append(line)
            if profile is not None and spied is None and "noop-first-record" in line:
                spied = spy(proc.pid, profile)
        proc.wait(900)
    finally:
        if proc.poll() is None:
            proc.kill()
        unspy(spied)
    for line in lines:
        if m := re.search(r"\brate (\d+(?:\.\d*)?)", line):
            return float(m.group(1))
    raise RuntimeError("faust no-op agent failed:\n" + "".join(lines)[-4000:])


def _env(code: Path | None, **extra: str) -> dict[str, str]:
    """The environment of a child running this tree's linetrace, or the build at `code`."""
    env = {**os.environ, **extra}
    if code is not None:
        env["PYTHONPATH"] = f"{code}{os.pathsep}{env.get('PYTHONPATH', '')}"
    return env


def start_worker(bootstrap: str, data: Path, db: str, code: Path | None, group: str,
                 name: str = "worker") -> subprocess.Popen[bytes]:
    """One `linetrace worker` in consumer group `group` (its own session), logging to
    data/NAME.log."""
    env = _env(code, LINETRACE_BROKER=f"kafka://{bootstrap}", LINETRACE_DB=db,
               LINETRACE_LOG_LEVEL="warning", LINETRACE_GROUP=group)
    log = (data / f"{name}.log").open("ab")
    argv = [sys.executable, "-m", "linetrace.cli.main", "worker", "--data-dir", str(data)]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)


def wait_drained(db: str, n: int, procs: list[subprocess.Popen[bytes]], logs: Path,
                 on_first: Callable[[], object] | None = None,
                 timeout: float = 1800) -> tuple[float, float, int]:
    """Poll the ledger's positions until all n records are stored: (time of the first stored
    batch, time of the last record, records already stored at the first). `on_first` runs
    right at the first stored batch (a snapshot of CPU counters)."""
    engine = create_engine(normalise_url(db))  # plain SQL: the baseline's schema may differ
    first = last = 0.0
    first_done = 0
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(p.poll() is not None for p in procs):
                raise RuntimeError(f"a worker exited; see {logs}")
            with engine.connect() as conn:
                done = int(conn.execute(text(
                    "SELECT COALESCE(SUM(next_offset), 0) FROM ingest_positions")).scalar() or 0)
            now = time.perf_counter()
            if done and not first:
                first, first_done = now, done
                if on_first is not None:
                    on_first()
            if done >= n:
                last = now
                break
            time.sleep(0.05)
        else:
            raise RuntimeError(f"workers did not drain within {timeout:.0f} s")
    finally:
        engine.dispose()
    return first, last, first_done


def route_decisions(db: str) -> str:
    """What the worker's route stage decided on the records (a conforming line: nothing)."""
    engine = create_engine(normalise_url(db))
    try:
        with engine.connect() as conn:
            found = [f"{int(conn.execute(text(f'SELECT COUNT(*) FROM {t}')).scalar() or 0)} {t}"
                     for t in ("route_violations", "holds")]
    except Exception:  # a baseline without the tables
        return "no route stage"
    finally:
        engine.dispose()
    return ", ".join(found)


def stop_workers(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    for p in procs:
        if p.poll() is None:
            os.killpg(p.pid, sig)
    for p in procs:
        p.wait(60)


def worker(bootstrap: str, n: int, data: Path, db: str, code: Path | None,
           profile: Path | None = None) -> float:
    """The real worker: records/s from its first stored batch to the last record; profiled by
    py-spy (all threads) over that same window when `profile` is given."""
    proc = start_worker(bootstrap, data, db, code, f"bench-{data.name}")
    spied: list[subprocess.Popen[bytes]] = []
    try:
        first, last, first_done = wait_drained(
            db, n, [proc], data / "worker.log",
            on_first=None if profile is None else lambda: spied.append(spy(proc.pid, profile)))
    finally:
        for p in spied:
            unspy(p)
        stop_workers([proc])
    return (n - first_done) / (last - first) if last > first else float("nan")


_PREPARE = """
import sys
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pathlib import Path
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
db, data, *stations = sys.argv[1:]
ledger = Ledger(db)
plant, _ = load_or_create_plant_key(Path(data) / "keys")
for s in stations:
    sid, kind, hexkey = s.split(",")
    key = Ed25519PrivateKey.from_private_bytes(bytes.fromhex(hexkey))
    enroll_station(ledger, plant, sid, kind, key.public_key())
ledger.close()
"""


def prepare_ledger(db: str, data: Path, code: Path | None) -> None:
    """Create the ledger and enrol the stations with the code that will run the worker."""
    from cryptography.hazmat.primitives import serialization as ser

    raw = {s: k.private_bytes(ser.Encoding.Raw, ser.PrivateFormat.Raw, ser.NoEncryption()).hex()
           for s, k in keys().items()}
    subprocess.run([sys.executable, "-c", _PREPARE, db, str(data),
                    *[f"{s},{kind},{raw[s]}" for s, kind in STATIONS.items()]],
                   check=True, env=_env(code))


def fresh_pg_schema(url: str) -> tuple[str, str]:
    import psycopg

    schema = f"bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return f"{url}?options=-csearch_path%3D{schema}", schema


def drop_pg_schema(url: str, schema: str) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA {schema} CASCADE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--legacy-mix", action="store_true",
                    help="the throughput issue's lifecycle events (violations of route A on "
                         "every event) instead of a line that follows route A")
    ap.add_argument("--pg", default=PG, help="PostgreSQL URL ('' skips PostgreSQL)")
    ap.add_argument("--docs", default="docs/benchmarks.md")
    ap.add_argument("--baseline", type=Path,
                    help="a folder holding another build of linetrace (pip install --no-deps "
                         "--target DIR): its worker is measured too, on the same records")
    ap.add_argument("--profile", type=Path,
                    help="write py-spy's collapsed stacks of this tree's SQLite worker here")
    ap.add_argument("--profile-pg", type=Path,
                    help="the same for this tree's PostgreSQL worker")
    ap.add_argument("--profile-noop", type=Path,
                    help="the same for the Faust no-op agent (c)")
    ap.add_argument("--profile-gil", action="store_true",
                    help="profiles sample only the thread holding the interpreter lock")
    args = ap.parse_args()
    if args.profile_gil:
        SPY_MODE[:] = ["--gil"]
    n = args.records
    records = mix(n, legacy=args.legacy_mix)
    size = sum(len(r[2]) for r in records) / n
    telemetry = sum(r[0] == "line.telemetry" for r in records) / n
    print(f"{n} records, {telemetry:.0%} telemetry, {size:.0f} bytes on average", flush=True)
    rows: list[tuple[str, str, str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(log_file=Path(tmp) / "broker.log")
        broker.start()
        try:
            asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
            asyncio.run(fill(broker.bootstrap, records))
            b_rate = verify_only(records)
            a_rate = asyncio.run(bare_consumer(broker.bootstrap, n))
            c_rate = faust_noop(broker.bootstrap, n, Path(tmp) / "faust", args.profile_noop)
            figures = [("(a) bare aiokafka consumer, decode only", a_rate),
                       ("(b) Ed25519 verify only, one core", b_rate),
                       ("(c) Faust no-op agent, worker settings", c_rate)]
            for name, rate in figures:
                print(f"{name:48s} {rate:10,.0f} records/s", flush=True)
            builds: list[tuple[str, Path | None]] = [("", None)]
            if args.baseline:
                builds.append((" (baseline)", args.baseline))
            targets = [(f"worker, SQLite{label}", None, code) for label, code in builds]
            if args.pg:
                targets += [(f"worker, PostgreSQL{label}", args.pg, code) for label, code in builds]
            for k, (name, pg, code) in enumerate(targets):
                data = Path(tmp) / f"worker-{k}"
                data.mkdir()
                schema = None
                db = f"sqlite:///{data / 'ledger.db'}"
                if pg:
                    db, schema = fresh_pg_schema(pg)
                try:
                    prepare_ledger(db, data, code)
                    profile = None
                    if code is None:
                        profile = args.profile_pg if pg else args.profile
                    rate = worker(broker.bootstrap, n, data, db, code, profile)
                    decided = route_decisions(db)
                finally:
                    if schema:
                        drop_pg_schema(pg, schema)  # type: ignore[arg-type]
                print(f"{name:48s} {rate:10,.0f} records/s  ({rate / b_rate:.0%} of (b)); "
                      f"{decided}", flush=True)
                figures.append((name, rate))
        finally:
            broker.stop()
    b_rate = figures[1][1]
    for name, rate in figures:
        rows.append((name, f"{rate:,.0f}", f"{rate / b_rate:.2f}"))
    if args.docs:
        cmd = f".venv/bin/python -m bench.bench_pipeline --records {n}" + \
            ("" if args.pg else " --pg ''") + (" --baseline DIR" if args.baseline else "") + \
            (" --legacy-mix" if args.legacy_mix else "")
        body = "\n".join([
            "## Pipeline: the worker draining a realistic mix", "",
            f"{machine()}; {datetime.now(UTC):%Y-%m-%d}; {tree()}. Command: `{cmd}`", "",
            f"{n:,} records, {telemetry:.0%} `burnin.telemetry` with 8 GPUs, {size:,.0f} bytes "
            "on average, all validly signed by enrolled stations; one run, same records, same "
            "machine. Sustained rate from the first stored batch to the last record.", "",
            table([("path", "records/s", "x (b)"), *rows]), ""])
        write_section(Path(args.docs), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
