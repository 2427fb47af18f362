"""Telemetry volume: bytes per GPU-sample of burn-in telemetry as the ledger stores it.

N units x M seconds of 8-GPU `burnin.telemetry` (one event per unit-second, validly signed
by enrolled-style station keys, in the style of `bench_pipeline.mix`) are written into the
`events` table twice per database, side by side in one run:

- raw: `value` = the event bytes, no digest (how telemetry was stored before issue 10);
- stored: `telemetry_store.stored_columns` (zlib + preset dictionary, SHA-256 digest);
- pruned: the stored table after `retention.prune_telemetry` (the digest and ids remain),
  then compacted (SQLite `VACUUM`, PostgreSQL `VACUUM FULL`).

Footprint = table + index bytes of `events` after minus before (SQLite: `dbstat` pages;
PostgreSQL: `pg_total_relation_size`, TOAST included). Two value profiles: `regular` is
bench_pipeline's `_sample` (values that repeat: the best case for compression), `noisy`
carries sensor noise in the last digits of every reading (closer to a real GPU).
Also compress / decompress microseconds per event. Writes the "Telemetry volume" section of
docs/benchmarks.md.

    .venv/bin/python -m bench.bench_telemetry_store [--units 8] [--seconds 600] [--pg URL | --pg '']
"""

from __future__ import annotations

import argparse
import hashlib
import os
import random
import sqlite3
import tempfile
import textwrap
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import Table, create_engine, insert, text

from linetrace.ledger.db import Ledger, normalise_url
from linetrace.ledger.models import EventRow
from linetrace.ledger.retention import prune_telemetry
from linetrace.ledger.telemetry_store import compress, decode, stored_columns
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event

from .report import machine, table, tree, write_section

PG = "postgresql://postgres@127.0.0.1:5432/test"
T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
SECTION = "## Telemetry volume: bytes per GPU-sample"
HOURS_72 = 72 * 3600
Row = dict[str, Any]


def _sample(g: int, unit: int, t: int, rng: random.Random | None) -> b.GpuSample:
    """bench_pipeline's sample; with `rng`, every reading carries sensor noise."""
    def n(x: float, spread: float, digits: int) -> float:
        return x if rng is None else round(x + rng.uniform(-spread, spread), digits)

    return b.GpuSample(gpu_index=g, gpu_serial=f"GPU-{unit:06d}-{g}",
                       gpu_uuid=f"GPU-{uuid.UUID(int=unit * 8 + g)}",
                       temp_c=n(60.0 + (t % 17), 1.5, 1), mem_temp_c=n(70.0 + (t % 11), 1.5, 1),
                       temp_margin_c=n(20.0, 1.5, 1), power_w=n(650.0 + g, 25.0, 2),
                       sm_clock_mhz=n(1980.0, 15.0, 0), mem_clock_mhz=2619.0,
                       util_pct=n(99.0, 1.0, 1))


def rows(units: int, seconds: int, noisy: bool) -> list[Row]:
    """Event rows of `units` x `seconds` of 8-GPU telemetry, signed, in time order."""
    keys = {s: Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"pipe " + s.encode()).digest())
            for s in ("burnin-01", "burnin-02")}
    rng = random.Random(7) if noisy else None
    runs = {u: str(uuid.UUID(int=1 << 64 | u)) for u in range(units)}
    out: list[Row] = []
    now = datetime.now(UTC)
    for i in range(seconds):
        t = T0 + timedelta(seconds=i)
        for u in range(units):
            station = f"burnin-0{1 + u % 2}"
            serial = f"SRV-P-{u:06d}"
            seq = int(t.timestamp() * 1_000_000) + u
            value = encode_event(event_type="burnin.telemetry", source=station, subject=serial,
                                 body=b.BurninTelemetry(run_id=runs[u], samples=[
                                     _sample(g, u, i, rng) for g in range(8)]),
                                 time=t, stationseq=seq, event_id=str(uuid.uuid4()))
            kid, sig = signing.read_signature(signing.sign_value(value, keys[station]))
            out.append({"source": station, "event_id": str(uuid.uuid4()), "type": "burnin.telemetry",
                        "subject": serial, "time": t, "stationseq": seq, "topic": "line.telemetry",
                        "partition": u % 8, "offset": len(out), "cause": None, "keyid": kid,
                        "signature": sig, "value": value, "recorded": now, "digest": None})
    return out


def _sqlite_path(url: str) -> str:
    return url[len("sqlite:///"):]


def _sqlite_bytes(url: str) -> int:
    with sqlite3.connect(_sqlite_path(url)) as c:
        names = [r[0] for r in c.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'events'")]
        marks = ",".join("?" * len(names))
        return int(c.execute(f"SELECT SUM(pgsize) FROM dbstat WHERE name IN ({marks})", names)
                   .fetchone()[0] or 0)


def _pg_bytes(url: str) -> int:
    engine = create_engine(normalise_url(url))
    with engine.connect() as c:
        out = int(c.execute(text("SELECT pg_total_relation_size('events')")).scalar() or 0)
    engine.dispose()
    return out


def _vacuum(url: str, pg: bool, full: bool) -> None:
    if not pg:
        lite = sqlite3.connect(_sqlite_path(url), isolation_level=None)
        lite.execute("VACUUM")
        lite.close()
        return
    engine = create_engine(normalise_url(url), isolation_level="AUTOCOMMIT")
    with engine.connect() as c:
        c.execute(text("VACUUM FULL ANALYZE events" if full else "VACUUM ANALYZE events"))
    engine.dispose()


def footprint(url: str, data: list[Row], store: Callable[[Row], Row], pg: bool,
              prune: bool) -> tuple[int, int | None]:
    """Bytes `events` grew by when `data` is written (and after pruning + compaction)."""
    ledger = Ledger(url)
    size = _pg_bytes if pg else _sqlite_bytes
    _vacuum(url, pg, full=True)
    before = size(url)
    events: Table = EventRow.__table__  # type: ignore[assignment]
    for i in range(0, len(data), 1000):
        with ledger.transaction() as s:
            s.connection().execute(insert(events), [store(r) for r in data[i:i + 1000]])
    _vacuum(url, pg, full=False)
    grown = size(url) - before
    pruned = None
    if prune:
        prune_telemetry(ledger, datetime.now(UTC) + timedelta(days=1))
        _vacuum(url, pg, full=True)
        pruned = size(url) - before
    ledger.close()
    return grown, pruned


def _stored(r: Row) -> Row:
    return {**r, **stored_columns(r["topic"], r["value"])}


def codec_us(values: list[bytes], rounds: int = 5) -> tuple[float, float]:
    """Best of `rounds` (the machine is shared): microseconds per event."""
    packed = [compress(v) for v in values]
    best_c = best_d = float("inf")
    for _ in range(rounds):
        t = time.perf_counter()
        for v in values:
            compress(v)
        best_c = min(best_c, time.perf_counter() - t)
        t = time.perf_counter()
        for p in packed:
            decode(p)
        best_d = min(best_d, time.perf_counter() - t)
    return best_c / len(values) * 1e6, best_d / len(values) * 1e6


def _pg_schema(pg: str) -> tuple[str, Callable[[], None]]:
    base = normalise_url(pg)
    admin = create_engine(base, isolation_level="AUTOCOMMIT")
    schema = f"bench_tel_{uuid.uuid4().hex[:8]}"
    with admin.connect() as c:
        c.execute(text(f"CREATE SCHEMA {schema}"))

    def drop() -> None:
        with admin.connect() as c:
            c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()

    sep = "&" if "?" in pg else "?"
    return f"{pg}{sep}options=-csearch_path%3D{schema}", drop


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--units", type=int, default=8)
    ap.add_argument("--seconds", type=int, default=600)
    ap.add_argument("--pg", default=PG, help="PostgreSQL URL ('' skips PostgreSQL)")
    ap.add_argument("--docs", default="docs/benchmarks.md", help="'' leaves the docs untouched")
    a = ap.parse_args()
    n = a.units * a.seconds
    load = os.getloadavg()[0]
    results: list[tuple[str, ...]] = [("profile", "database", "form", "bytes / event",
                                       "bytes / GPU-sample", "72 h unit (8 GPUs)", "vs raw")]
    codec: list[tuple[str, ...]] = [("profile", "event bytes (avg)", "stored value (avg)",
                                     "ratio", "compress us/event", "decompress us/event")]
    print(f"{n:,} events per profile ({a.units} units x {a.seconds} s, 8 GPUs); load {load:.2f}")
    for profile in ("regular", "noisy"):
        data = rows(a.units, a.seconds, noisy=profile == "noisy")
        values = [r["value"] for r in data]
        avg = sum(map(len, values)) / n
        packed = sum(len(stored_columns("line.telemetry", v)["value"]) for v in values) / n
        c_us, d_us = codec_us(values)
        codec.append((profile, f"{avg:,.0f}", f"{packed:,.0f}", f"{avg / packed:.1f}x",
                      f"{c_us:.1f}", f"{d_us:.1f}"))
        with tempfile.TemporaryDirectory() as tmp:
            dbs = [("SQLite", f"sqlite:///{tmp}/raw.db", f"sqlite:///{tmp}/stored.db", False)]
            drops: list[Callable[[], None]] = []
            if a.pg:
                (raw_url, d1), (stored_url, d2) = _pg_schema(a.pg), _pg_schema(a.pg)
                drops += [d1, d2]
                dbs.append(("PostgreSQL", raw_url, stored_url, True))
            try:
                for name, raw_url, stored_url, pg in dbs:
                    raw, _ = footprint(raw_url, data, lambda r: r, pg, prune=False)
                    stored, pruned = footprint(stored_url, data, _stored, pg, prune=True)
                    for form, size in (("raw (before)", raw), ("stored", stored),
                                       ("pruned, digest kept", pruned or 1)):
                        per = size / n
                        results.append((profile, name, form, f"{per:,.0f}",
                                        f"{per / 8:,.1f}", f"{per * HOURS_72 / 1e6:,.1f} MB",
                                        "1x" if size == raw else f"{raw / size:.1f}x smaller"))
                        print(results[-1])
            finally:
                for drop in drops:
                    drop()
    body = "\n".join([
        SECTION, "",
        textwrap.fill(f"{tree()}, {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {machine()}; 1-min load "
        f"{load:.2f}. {n:,} events per profile ({a.units} units x {a.seconds} s of 8-GPU "
        "`burnin.telemetry`, validly signed), written to `events` as raw bytes (before issue "
        "10), as stored now (`telemetry_store.stored_columns`: zlib level 6 + preset "
        "dictionary, raw DEFLATE, plus the 32-byte SHA-256 digest), and after `linetrace "
        "telemetry prune` (marker + digest; table compacted). Footprint = table + index bytes "
        "of `events` grown (SQLite `dbstat`; PostgreSQL `pg_total_relation_size`, TOAST "
        "included: PostgreSQL already pglz-compresses raw values over ~2 KB itself). "
        "`regular` is bench_pipeline's `_sample` (repeating values: best case); `noisy` "
        "carries sensor noise in every reading. 72 h unit = 259,200 events.", 96), "",
        "```", f".venv/bin/python -m bench.bench_telemetry_store --units {a.units} "
        f"--seconds {a.seconds}" + ("" if a.pg else " --pg ''"), "```", "",
        table(results), "", table(codec), ""])
    print(body)
    if a.docs:
        write_section(Path(a.docs), body)


if __name__ == "__main__":
    main()
