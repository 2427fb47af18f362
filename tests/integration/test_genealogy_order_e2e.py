"""End to end through the real broker and worker (issue 8 item 9): a run whose partitions are
consumed in another order, with the worker SIGKILLed mid-run, has the same genealogy and
byte-identical system events as the same records written in log order.

Phase 1: every record except those on the partitions that carry the mainboard PCBAs is
produced and consumed; the servers there are packed before their boards are read, so their
seals wait (pending rows). The worker is then SIGKILLed. Phase 2: the boards' partitions are
produced and a new worker reads them; the waiting seals are written. The reference is the
same records written in log order with batches of 500 through the same stage pipeline.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
from collections import Counter
from pathlib import Path

import pytest
from sqlalchemy import func, select

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_event, encode_event
from linetrace.schemas.topics import ALL_TOPICS, EVENTS, TOPIC_OF_TYPE
from linetrace.stations.client import partition_of
from linetrace.stations.simulator import station_roster
from linetrace.streams.processor import default_stages
from linetrace.streams.stages import Pipeline
from tests.conftest import Proc, linetrace_cmd, run_cli, wait_for
from tests.unit.test_log_line import ENROLLED_AT, line, station_key

from .partition_orders import genealogy, hboms, system_events
from .test_ingest import produce
from .test_system_event_determinism import pending_seals

pytestmark = [pytest.mark.integration, pytest.mark.slow]

Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def records(units: int, seed: int) -> tuple[list[Record], list[Candidate]]:
    """The line's records as the stations send them, and as the worker will read them (the
    murmur2 partition, the offset each gets on a fresh topic)."""
    seqs: Counter[tuple[str, str]] = Counter()
    offsets: Counter[tuple[str, int]] = Counter()
    out: list[Record] = []
    cands: list[Candidate] = []
    for ev in line(units, seed).stream():
        topic = TOPIC_OF_TYPE[ev.event_type]
        seqs[(ev.station_id, topic)] += 1
        value = encode_event(event_type=ev.event_type, source=ev.station_id, subject=ev.subject,
                             body=ev.body, time=ev.time, event_id=ev.event_id,
                             stationseq=seqs[(ev.station_id, topic)])
        headers = signing.sign_value(value, station_key(ev.station_id))
        kid, sig = signing.read_signature(headers)
        key = ev.subject.encode()
        partition = partition_of(key, ALL_TOPICS[topic])
        offset = offsets[(topic, partition)]
        offsets[(topic, partition)] += 1
        out.append((topic, key, value, headers))
        cands.append(Candidate(SourceRecord(topic, partition, offset, key, value, headers),
                               decode_event(value), kid, sig))
    return out, cands


def stored(ledger: Ledger) -> int:
    with ledger.reader() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.source != SYSTEM_SOURCE)) or 0)


def sealed(ledger: Ledger) -> int:
    with ledger.reader() as s:
        return int(s.scalar(select(func.count()).select_from(EventRow)
                            .where(EventRow.type == "unit.sealed")) or 0)


def worker(line_dir: Path, n: int) -> Proc:
    return Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / f"worker-{n}.out",
                env={"LINETRACE_BATCH_WINDOW": "0.02"})


def cli_json(data_dir: Path, *args: str) -> object:
    r = run_cli(*args, "--json", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_genealogy_and_seals_are_the_same_whatever_partition_order_and_worker_restarts(
        broker: str, line_dir: Path, tmp_path: Path) -> None:
    units, seed = 4, 11
    plan = line(units, seed)
    recs, cands = records(units, seed)
    boards = {c.record.partition for c in cands
              if c.record.topic == EVENTS and c.event.subject.startswith("PCBA-")}
    later = [c.record.topic == EVENTS and c.record.partition in boards for c in cands]
    first_servers = {c.event.subject for c, late in zip(cands, later, strict=True)
                     if not late and c.event.type == "unit.packed"}
    assert first_servers, "every server shares a partition with a board: nothing is reordered"

    plant, _ = load_or_create_plant_key(line_dir / "keys")
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, plant, sid, stype, station_key(sid).public_key(), now=ENROLLED_AT)

    phase1 = [r for r, late in zip(recs, later, strict=True) if not late]
    asyncio.run(produce(broker, phase1))
    first = worker(line_dir, 1)
    try:
        wait_for(lambda: stored(ledger) >= len(phase1), timeout=180,
                 what="the worker to store phase 1")
        wait_for(lambda: pending_seals(ledger) == len(first_servers), timeout=60,
                 what="the seals of servers read before their boards to wait")
        assert sealed(ledger) == 0
    except AssertionError:
        raise AssertionError(first.tail()) from None
    finally:
        os.killpg(first.proc.pid, signal.SIGKILL)  # a crash mid-run, seals pending
        first.proc.wait()

    asyncio.run(produce(broker, [r for r, late in zip(recs, later, strict=True) if late]))
    second = worker(line_dir, 2)
    try:
        wait_for(lambda: stored(ledger) >= len(recs) and sealed(ledger) == len(plan.servers),
                 timeout=180, what="the second worker to store phase 2 and write every seal")
        assert pending_seals(ledger) == 0
    except AssertionError:
        raise AssertionError(second.tail()) from None
    finally:
        second.stop()

    ref_dir = tmp_path / "reference"
    ref_dir.mkdir()
    reference = Ledger(f"sqlite:///{ref_dir / 'ledger.db'}")
    for sid, stype in station_roster(plan.config.product):
        enroll_station(reference, plant, sid, stype, station_key(sid).public_key(),
                       now=ENROLLED_AT)
    ctx = SystemContext(plant_key=plant)
    pipeline = Pipeline(default_stages(ctx))
    for i in range(0, len(cands), 500):
        assert not write_batch(reference, cands[i:i + 500], ctx=ctx, stages=pipeline).rejections

    assert system_events(ledger) == system_events(reference)
    assert hboms(ledger) == hboms(reference)
    assert genealogy(ledger) == genealogy(reference)
    assert cli_json(line_dir, "units") == cli_json(ref_dir, "units")
    for server in plan.servers:
        assert cli_json(line_dir, "trace", server.serial) == cli_json(ref_dir, "trace",
                                                                       server.serial)
    states = {u["serial"]: u["state"] for u in cli_json(line_dir, "units")}  # type: ignore[union-attr]
    assert {s for u, s in states.items() if u.startswith("PCBA-")} == {"installed"}
    audit = run_cli("verify-ledger", data_dir=line_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    ledger.close()
    reference.close()
