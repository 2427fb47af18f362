"""Replaying the same 10,000 events twice leaves the ledger unchanged (SQLite and PostgreSQL)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import Base, load_all_tables
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import ALL_TOPICS, TOPIC_OF_TYPE
from linetrace.stations.client import partition_of
from linetrace.stations.simulator import LineConfig, generate_line, station_roster

pytestmark = [pytest.mark.integration, pytest.mark.slow]

# Columns that record when a row was written, not what happened.
WALL_CLOCK = {"recorded", "updated"}


def signed_events(ledger: Ledger, tmp_path: Path, n: int) -> tuple[list[Candidate], SystemContext]:
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    keys = {sid: signing.generate_key() for sid, _ in station_roster()}
    for sid, typ in station_roster():
        enroll_station(ledger, plant, sid, typ, keys[sid].public_key())
    stream = generate_line(LineConfig(units=130, seed=11)).stream()[:n]
    assert len(stream) == n
    seqs: dict[tuple[str, str], int] = {}
    offsets: dict[tuple[str, int], int] = {}
    out = []
    for e in stream:
        topic = TOPIC_OF_TYPE[e.event_type]
        seqs[(e.station_id, topic)] = seq = seqs.get((e.station_id, topic), 0) + 1
        v = encode_event(event_type=e.event_type, source=e.station_id, subject=e.subject,
                         body=e.body, time=e.time, event_id=e.event_id, stationseq=seq)
        part = partition_of(e.subject.encode(), ALL_TOPICS[topic])
        offsets[(topic, part)] = off = offsets.get((topic, part), -1) + 1
        headers = signing.sign_value(v, keys[e.station_id])
        kid, sig = signing.read_signature(headers)
        out.append(Candidate(SourceRecord(topic, part, off, e.subject.encode(), v, headers),
                             decode_event(v), kid, sig))
    return out, SystemContext(plant_key=plant)


def snapshot(ledger: Ledger) -> dict[str, list[tuple[object, ...]]]:
    load_all_tables()
    snap = {}
    with ledger.reader() as s:
        for table in Base.metadata.sorted_tables:
            cols = [c for c in table.columns if c.name not in WALL_CLOCK]
            rows = s.execute(select(*cols)).all()
            snap[table.name] = sorted((tuple(r) for r in rows), key=repr)
    return snap


def test_replaying_ten_thousand_events_twice_changes_nothing(ledger: Ledger, tmp_path: Path) -> None:
    events, ctx = signed_events(ledger, tmp_path, 10_000)

    def feed() -> tuple[int, int, int]:
        stored = dups = rejected = 0
        for i in range(0, len(events), 500):
            out = write_batch(ledger, events[i:i + 500], ctx=ctx)
            stored, dups, rejected = stored + len(out.stored), dups + out.duplicates, rejected + len(out.rejections)
        return stored, dups, rejected

    assert feed() == (10_000, 0, 0)
    first = snapshot(ledger)
    assert len(first["events"]) > 10_000  # plus enrolments and the system events they caused
    assert feed() == (0, 10_000, 0)
    assert snapshot(ledger) == first
    assert feed() == (0, 10_000, 0)
    assert snapshot(ledger) == first
