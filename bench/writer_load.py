"""Writer throughput: `write_batch` over realistic signed events vs a bare executemany ceiling.

The events are the build plans of servers not yet in the seeded ledger, interleaved in time as
a line emits them, encoded with the one canonical encoder, signed with enrolled station keys
and decoded as ingest would. The ceiling inserts the same event rows (fresh ids, so the unique
key is not hit) with the driver's executemany, one transaction per batch: the most any writer
could do on that database with that batch size, with no projections and no checks.
"""

from __future__ import annotations

import hashlib
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event, parse_time
from linetrace.schemas.topics import TOPIC_OF_TYPE

from . import plant
from .seed import ts

EVENT_COLUMNS = ("source", "event_id", "type", "subject", "time", "stationseq", "topic",
                 "partition", "offset", "cause", "keyid", "signature", "value", "recorded")


def station_key(station: str) -> Ed25519PrivateKey:
    """A derived (never secret) key per bench station, the same on every run."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"bench " + station.encode())
                                                .digest())


def enroll(ledger: Ledger, keys_dir: Path) -> SystemContext:
    """Enroll every bench station; the plant's context, as the worker passes to the writer."""
    plant_key, _ = load_or_create_plant_key(keys_dir)
    for station, kind in sorted(plant.STATION_TYPES.items()):
        enroll_station(ledger, plant_key, station, kind, station_key(station).public_key())
    return SystemContext(plant_key=plant_key)


def candidates(first_server: int, servers: int, events: int, gpu_lot_units: int
               ) -> list[Candidate]:
    """About `events` signed events of the servers from `first_server` on, in time order."""
    planned: list[plant.Planned] = []
    i = first_server
    while len(planned) < events:
        planned.extend(plant.build_plan(i, servers, gpu_lot_units, f"WO-{i // 200:05d}"))
        i += 1
    planned.sort(key=lambda p: p.t_us)
    planned = planned[:events]
    keys = {s: station_key(s) for s in plant.STATION_TYPES}
    last_seq: dict[str, int] = {}
    offsets: dict[int, int] = {}
    out = []
    for p in planned:
        seq = max(p.t_us, last_seq.get(p.source, 0) + 1)
        last_seq[p.source] = seq
        value = encode_event(event_type=p.type, source=p.source, subject=p.subject, body=p.body,
                             time=datetime.fromtimestamp(p.t_us / 1e6, UTC), stationseq=seq)
        headers = signing.sign_value(value, keys[p.source])
        kid, sig = signing.read_signature(headers)
        part = zlib.crc32(p.subject.encode()) % 8
        offsets[part] = offsets.get(part, -1) + 1
        rec = SourceRecord(TOPIC_OF_TYPE[p.type], part, offsets[part], p.subject.encode(), value,
                           headers)
        out.append(Candidate(rec, decode_event(value), kid, sig))
    return out


def event_rows(cands: Sequence[Candidate], sqlite: bool) -> list[tuple[Any, ...]]:
    """The rows the writer stores in `events`, with fresh ids, as the driver takes them."""
    now = datetime.now(UTC)
    rows = []
    for c in cands:
        t = parse_time(c.event.envelope.time)
        rows.append((c.event.source, str(uuid.uuid4()), c.event.type, c.event.subject,
                     ts(int(t.timestamp() * 1e6)) if sqlite else t, c.event.seq, c.record.topic,
                     c.record.partition, c.record.offset, c.cause, c.keyid, c.signature,
                     c.record.value, ts(int(now.timestamp() * 1e6)) if sqlite else now))
    return rows


@dataclass
class Throughput:
    events: int
    seconds: float
    batch: int

    @property
    def per_s(self) -> float:
        return self.events / self.seconds


def ceiling(ledger: Ledger, cands: Sequence[Candidate], batch: int) -> Throughput:
    sqlite = ledger.dialect == "sqlite"
    rows = event_rows(cands, sqlite)
    cols = ", ".join(f'"{c}"' for c in EVENT_COLUMNS)
    marks = ", ".join(("?" if sqlite else "%s") for _ in EVENT_COLUMNS)
    sql = f"INSERT INTO events ({cols}) VALUES ({marks})"
    raw = ledger.engine.raw_connection()
    try:
        cur = raw.cursor()
        t = time.perf_counter()
        for n in range(0, len(rows), batch):
            if sqlite:
                cur.execute("BEGIN IMMEDIATE")
            cur.executemany(sql, rows[n:n + batch])
            if sqlite:
                cur.execute("COMMIT")
            else:
                raw.commit()
        seconds = time.perf_counter() - t
        cur.close()
    finally:
        raw.close()
    return Throughput(len(rows), seconds, batch)


def writer(ledger: Ledger, cands: Sequence[Candidate], batch: int, ctx: SystemContext
           ) -> Throughput:
    """As the worker writes: batches in order, with the plant context (system events, log)."""
    t = time.perf_counter()
    stored = 0
    for n in range(0, len(cands), batch):
        out = write_batch(ledger, cands[n:n + batch], ctx=ctx)
        stored += len(out.stored)
        if out.rejections:
            raise RuntimeError(f"writer rejected bench events: {out.rejections[0].message}")
    seconds = time.perf_counter() - t
    if stored != len(cands):
        raise RuntimeError(f"writer stored {stored} of {len(cands)} bench events")
    return Throughput(stored, seconds, batch)
