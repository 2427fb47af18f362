"""The console under load (issue 13): 50 SSE clients and 20 API requests/s while the line runs,
beside the same line without the console, in one run on one machine.

Each of the two runs starts afresh: a real embedded broker, one `linetrace worker` process
(SQLite ledger, the stations of `bench_pipeline` enrolled) and the load generator of
`bench_alert_latency` sending `--rate` signed records per second of wall time (8-GPU burn-in
telemetry of healthy GPUs, the route A lifecycle, receipts, station states) for `--seconds`.
Every second the bench injects an anomaly whose alert it can time, as `bench_alert_latency`
does, alternating a forged record (a station the ledger does not know: quarantined, alert
`security.quarantine`) and a non-golden firmware flash (alert `supply.firmware_mismatch`), so
the alert board has something to show, in both runs alike.

The second run also starts `linetrace console` (a process of its own, as `linetrace up` runs
it) on the same ledger, and a client process that holds `--sse` streams of
`GET /api/v1/alerts/stream` open and sends `--api` requests per second (open loop, a fixed
schedule), cycling through `GET /api/v1/alerts`, `/api/v1/line`, `/api/v1/units` and a unit
page `/api/v1/units/{serial}`, all with an API token of an enrolled viewer.

Reported: API latency p50/p95/p99/max and errors; SSE streams connected and `event: alert`
messages received, and the time from each injected record's `emit` to its alert on each stream
(p50/p99 over every stream and alert); and for both runs the worker's lag (records in the
broker not yet stored, sampled every second: median, max, and at the end of the load) and
the injected alerts' latency on `line.alerts` (emit to the published alert).

    .venv/bin/python -m bench.bench_console [--rate 500] [--seconds 45] [--sse 50] [--api 20]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from linetrace.streams.broker import EmbeddedBroker, ensure_topics

from .bench_alert_latency import _enroll_firmware, _ends, _pct, _wait_ready, inject, walls
from .bench_pipeline import prepare_ledger
from .stream_load import WorkerProc, loadavg

PATHS = ("/api/v1/alerts", "/api/v1/line", "/api/v1/units", "UNIT")


# --- the console's clients (a process of their own) ------------------------------------------


async def clients(url: str, token: str, sse: int, rate: float, seconds: float,
                  out: Path) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"}
    stop = time.monotonic() + seconds
    connected = [0]
    events = [0] * sse
    seen: list[dict[str, float]] = [{} for _ in range(sse)]  # per stream: subject -> first
    lat: list[tuple[str, float, int]] = []

    async def stream(i: int, client: httpx.AsyncClient) -> None:
        try:
            async with client.stream("GET", "/api/v1/alerts/stream") as r:
                if r.status_code != 200:
                    return
                connected[0] += 1
                event = ""
                async for line in r.aiter_lines():
                    if line.startswith("event:"):
                        event = line[6:].strip()
                    elif line.startswith("data:") and event == "alert":
                        events[i] += 1
                        subject = str(json.loads(line[5:]).get("subject", ""))
                        if subject.startswith("SRV-INJ"):  # UNIT/BMC...: keyed by the unit
                            subject = subject.split("/", 1)[0]
                        seen[i].setdefault(subject, time.time())
                    if time.monotonic() > stop:
                        return
        except (httpx.HTTPError, asyncio.CancelledError):
            return

    async def one(client: httpx.AsyncClient, path: str) -> None:
        t = time.perf_counter()
        try:
            r = await client.get(path)
            status = r.status_code
        except httpx.HTTPError:
            status = 0
        lat.append((path, (time.perf_counter() - t) * 1000, status))

    limits = httpx.Limits(max_connections=sse + 10, max_keepalive_connections=sse + 10)
    timeout = httpx.Timeout(30.0, read=None)
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits,
                                 timeout=timeout) as sc, \
            httpx.AsyncClient(base_url=url, headers=headers, timeout=30.0) as ac:
        streams = [asyncio.create_task(stream(i, sc)) for i in range(sse)]
        serial = "SRV-A-000000"
        tasks: list[asyncio.Task[None]] = []
        start = time.monotonic()
        k = 0
        while time.monotonic() < stop:
            path = PATHS[k % len(PATHS)]
            if path == "UNIT":
                path = f"/api/v1/units/{serial}"
            elif path == "/api/v1/units" and k % 40 == 2:
                try:
                    units = (await ac.get(path)).json()
                    if isinstance(units, list) and units:
                        serial = str(units[0]["serial"])
                except (httpx.HTTPError, ValueError, KeyError):
                    pass
            tasks.append(asyncio.create_task(one(ac, path)))
            k += 1
            await asyncio.sleep(max(0.0, start + k / rate - time.monotonic()))
        await asyncio.gather(*tasks)
        for s in streams:
            s.cancel()
        await asyncio.gather(*streams, return_exceptions=True)
    out.write_text(json.dumps({"connected": connected[0], "events": events, "seen": seen,
                               "latency": lat}))


# --- one run ---------------------------------------------------------------------------------


def _user_and_token(db: str, data: Path) -> str:
    """Enrol a first admin and a viewer; an API token of the viewer."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from linetrace.ledger.console_auth import create_token
    from linetrace.ledger.db import Ledger
    from linetrace.ledger.keys import load_or_create_plant_key
    from linetrace.ledger.users import enroll_user
    from linetrace.schemas import signing
    from linetrace.schemas.statements import new_statement, sign_statement

    ledger = Ledger(db)
    plant, _ = load_or_create_plant_key(data / "keys")
    admin, viewer = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    for name, role, key in (("bench-admin", "admin", admin), ("board", "viewer", viewer)):
        pub = key.public_key()
        details = {"role": role, "public_key": signing.public_key_b64(pub),
                   "keyid": signing.keyid_of(pub)}
        enroll_user(ledger, plant, sign_statement(
            new_statement("user.add", name, details, user="bench-admin"), admin),
            user=name, role=role, public_key=pub)
    secret, _ = create_token(ledger, "board", "bench board", by="bench-admin")
    ledger.close()
    return secret


def _start_console(data: Path, db: str) -> tuple[subprocess.Popen[bytes], str]:
    log = data / "console.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "linetrace.cli.main", "console", "--port", "0",
         "--data-dir", str(data)], stdout=log.open("wb"), stderr=subprocess.STDOUT,
        start_new_session=True, env={**os.environ, "LINETRACE_DB": db,
                                     "LINETRACE_LOG_LEVEL": "warning"})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        found = re.search(r"(http://127\.0\.0\.1:\d+/)", log.read_text())
        if found:
            return proc, found.group(1)
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    raise RuntimeError(f"the console did not start; see {log}")


def run(args: argparse.Namespace, with_console: bool) -> dict[str, Any]:
    units = args.rate - round(args.rate * 0.1)
    other = args.rate - units
    n = max(2, args.seconds - args.warmup - 2)
    with tempfile.TemporaryDirectory(prefix="bench-console-") as tmpdir:
        tmp = Path(tmpdir)
        data = tmp / "worker"
        data.mkdir()
        db = f"sqlite:///{data / 'ledger.db'}"
        broker = EmbeddedBroker(log_file=tmp / "broker.log")
        broker.start()
        worker = WorkerProc(broker.bootstrap, data, db)
        procs: list[subprocess.Popen[bytes]] = []
        console: subprocess.Popen[bytes] | None = None
        try:
            asyncio.run(ensure_topics(broker.bootstrap, fix_wrong_counts=True))
            prepare_ledger(db, data, None)
            _enroll_firmware(db, data)
            token = _user_and_token(db, data)
            worker.start()
            _wait_ready(worker, broker.bootstrap)
            if with_console:
                console, url = _start_console(data, db)
            gen = subprocess.Popen([sys.executable, "-m", "bench.bench_alert_latency",
                                    "--generate", broker.bootstrap, str(units), str(other),
                                    str(args.seconds), str(tmp / "gen.json")])
            procs.append(gen)
            if with_console:
                procs.append(subprocess.Popen([
                    sys.executable, "-m", "bench.bench_console", "--clients", url, token,
                    str(args.sse), str(args.api), str(args.seconds), str(tmp / "clients.json")]))
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

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            time.sleep(args.warmup)
            sent, seen, _ = asyncio.run(inject(broker.bootstrap, tmp, n, 1.0, 30.0,
                                               float(args.warmup)))
            emitted = {k: w[0] for k, w in walls.items()}
            gen.wait(args.seconds + 120)
            final = lags[-1] if lags else 0
            for p in procs[1:]:
                p.wait(args.seconds + 120)
            stop[0] = True
            sampler.join(5)
            g = json.loads((tmp / "gen.json").read_text())
            c = json.loads((tmp / "clients.json").read_text()) if with_console else None
        finally:
            for p in procs:
                if p.poll() is None:
                    p.kill()
            if console is not None and console.poll() is None:
                os.kill(console.pid, signal.SIGTERM)
                try:
                    console.wait(30)
                except subprocess.TimeoutExpired:
                    console.kill()
            worker.close()
            broker.stop()
    alert_ms = [(seen[k] - sent[k]) * 1000 for k in seen]
    out: dict[str, Any] = {
        "records": g["records"], "rate_in": g["records"] / g["seconds"],
        "lag_median": statistics.median(lags or [0]),
        "lag_max": max(lags or [0]), "lag_final": final, "alerts": len(sent),
        "alert_p50": _pct(alert_ms, 0.5), "alert_p99": _pct(alert_ms, 0.99),
        "load": loadavg()}
    if c is not None:
        ms = [x for _, x, s in c["latency"] if s == 200]
        errors = sum(1 for _, _, s in c["latency"] if s != 200)
        sse_ms = [(t - emitted[subj]) * 1000 for one in c["seen"]
                  for subj, t in one.items() if subj in emitted]
        out.update({"requests": len(c["latency"]), "errors": errors,
                    "api_p50": _pct(ms, 0.5), "api_p95": _pct(ms, 0.95),
                    "api_p99": _pct(ms, 0.99), "api_max": max(ms or [float("nan")]),
                    "sse_connected": c["connected"], "sse_events": sum(c["events"]),
                    "sse_min_events": min(c["events"] or [0]),
                    "sse_alerts": len({s for one in c["seen"] for s in one if s in emitted}),
                    "sse_p50": _pct(sse_ms, 0.5), "sse_p99": _pct(sse_ms, 0.99)})
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate", type=int, default=500, help="records per second of load")
    ap.add_argument("--seconds", type=int, default=45, help="seconds of load per run")
    ap.add_argument("--warmup", type=int, default=5, help="seconds before injecting")
    ap.add_argument("--sse", type=int, default=50, help="SSE clients")
    ap.add_argument("--api", type=float, default=20.0, help="API requests per second")
    ap.add_argument("--clients", nargs=6, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.clients:
        url, token, sse, rate, secs, out = args.clients
        asyncio.run(clients(url, token, int(sse), float(rate), float(secs), Path(out)))
        return 0
    print(f"load: {args.rate} records/s for {args.seconds} s a run; with the console: "
          f"{args.sse} SSE clients and {args.api:g} API requests/s", flush=True)
    without = run(args, with_console=False)
    print(f"without the console: {json.dumps(without)}", flush=True)
    with_ = run(args, with_console=True)
    print(f"with the console:    {json.dumps(with_)}", flush=True)
    w = with_
    print("\n| run | records/s sent | worker lag median | max | at the end of the load | "
          "alert p50 ms | alert p99 ms |")
    print("|---|---|---|---|---|---|---|")
    for name, r in (("without the console", without), ("with the console", with_)):
        print(f"| {name} | {r['rate_in']:,.0f} | "
              f"{r['lag_median']:,.0f} | {r['lag_max']:,} | {r['lag_final']:,} | "
              f"{r['alert_p50']:.0f} | {r['alert_p99']:.0f} |")
    print(f"\nAPI: {w['requests']} requests ({w['requests'] / args.seconds:.1f}/s), "
          f"{w['errors']} not 200; latency p50 {w['api_p50']:.0f} ms, p95 {w['api_p95']:.0f} "
          f"ms, p99 {w['api_p99']:.0f} ms, max {w['api_max']:.0f} ms")
    print(f"SSE: {w['sse_connected']}/{args.sse} streams connected, {w['sse_events']:,} alert "
          f"events received (each stream at least {w['sse_min_events']}); {w['sse_alerts']} "
          f"injected alerts seen; emit -> alert on a stream p50 {w['sse_p50']:.0f} ms, "
          f"p99 {w['sse_p99']:.0f} ms")
    print(f"load average {w['load']:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
