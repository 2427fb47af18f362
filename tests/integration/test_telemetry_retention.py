"""Telemetry stored compressed, pruned under the retention policy, its hash kept forever: on
real SQLite and PostgreSQL, through the real batch writer and the `linetrace` command."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from linetrace.ledger.audit import audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.models import EventRow
from linetrace.ledger.proof.telemetry import commitment, commitment_of_events
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.telemetry_store import COMPRESSED, PRUNED, TelemetryPruned, digest
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.streams.stages import stored_candidate
from tests.conftest import run_cli
from tests.unit.test_log_line import PLANT, SIGNER, station_key

pytestmark = pytest.mark.integration

STATION = "burnin-07"
KEY = station_key(STATION)
SERIAL = "SRV-RT-000001"
RUN = str(uuid.UUID(int=42))
NOW = datetime.now(UTC).replace(microsecond=0)
OLD = NOW - timedelta(days=40)  # beyond a 30-day retention
RECENT = NOW - timedelta(days=2)


def telemetry(i: int, t: datetime, power: float = 650.0) -> Candidate:
    samples = [b.GpuSample(gpu_index=g, gpu_serial=f"GPU-RT-{g}", gpu_uuid=f"GPU-{uuid.UUID(int=g)}",
                           temp_c=61.0 + i % 7, power_w=power + g, sm_clock_mhz=1980.0,
                           mem_clock_mhz=2619.0, util_pct=99.0) for g in range(8)]
    v = encode_event(event_type="burnin.telemetry", source=STATION, subject=SERIAL,
                     body=b.BurninTelemetry(run_id=RUN, samples=samples), time=t,
                     stationseq=1_000 + i, event_id=str(uuid.UUID(int=10_000 + i)))
    kid, sig = signing.read_signature(signing.sign_value(v, KEY))
    return Candidate(SourceRecord("line.telemetry", 3, i, SERIAL.encode(), v), decode_event(v),
                     kid, sig)


def events() -> list[Candidate]:
    return ([telemetry(i, OLD + timedelta(seconds=i)) for i in range(6)]
            + [telemetry(6 + i, RECENT + timedelta(seconds=i)) for i in range(4)])


@pytest.fixture
def ledger(db_url: str) -> Ledger:
    lg = Ledger(db_url)
    enroll_station(lg, PLANT, STATION, "burnin", KEY.public_key())
    return lg


def stored(lg: Ledger) -> list[tuple[str, bytes, bytes | None]]:
    with lg.reader() as s:
        return [(r[0], bytes(r[1]), r[2] and bytes(r[2])) for r in s.execute(text(
            "SELECT event_id, value, digest FROM events WHERE topic = 'line.telemetry' "
            "ORDER BY seq"))]


def test_telemetry_is_stored_compressed_pruned_by_age_and_its_hash_kept(
        ledger: Ledger, db_url: str, tmp_path: Path) -> None:
    batch = events()
    originals = [c.record.value for c in batch]
    assert len(write_batch(ledger, batch).stored) == 10
    raw = stored(ledger)
    assert all(v.startswith(COMPRESSED) and len(v) * 3 < len(o)
               for (_, v, _), o in zip(raw, originals, strict=True))
    assert [d for _, _, d in raw] == [digest(o) for o in originals]
    with ledger.reader() as s:  # ORM and Core reads give the exact signed bytes
        assert list(s.scalars(select(EventRow.value).where(EventRow.topic == "line.telemetry")
                              .order_by(EventRow.seq))) == originals
        row = s.scalars(select(EventRow).where(EventRow.event_id == batch[0].event.id)).one()
        assert stored_candidate(row).record.value == originals[0]

    r = run_cli("telemetry", "prune", "--older-than-days", "30", "--json", data_dir=tmp_path,
                env={"LINETRACE_DB": db_url})
    assert r.returncode == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["pruned"] == 6 and report["mismatched"] == []
    assert report["bytes_dropped"] == sum(map(len, originals[:6]))
    after = stored(ledger)
    assert [v for _, v, _ in after[:6]] == [PRUNED] * 6
    assert [v for _, v, _ in after[6:]] == [v for _, v, _ in raw[6:]]  # recent ones untouched
    assert [d for _, _, d in after] == [d for _, _, d in raw]  # every digest kept
    again = run_cli("telemetry", "prune", "--older-than-days", "30", "--json",
                    data_dir=tmp_path, env={"LINETRACE_DB": db_url})
    assert json.loads(again.stdout)["pruned"] == 0

    # the commitment a burn-in verdict makes stays checkable from the digests alone
    assert commitment([d for _, _, d in after if d]) == commitment_of_events(originals)
    with ledger.reader() as s:
        row = s.scalars(select(EventRow).where(EventRow.event_id == batch[0].event.id)).one()
        assert row.value == PRUNED
        with pytest.raises(TelemetryPruned, match="retention policy"):
            stored_candidate(row)

    # a replay of the same events is a duplicate, pruned or not; other bytes are equivocation
    out = write_batch(ledger, events())
    assert out.duplicates == 10 and not out.stored and not out.rejections
    forged = telemetry(0, OLD, power=700.0)
    assert forged.event.id == batch[0].event.id and forged.record.value != originals[0]
    assert [x.code for x in write_batch(ledger, [forged]).rejections] == ["event.equivocation"]
    assert stored(ledger) == after


def test_verify_ledger_accepts_pruned_rows_and_reports_edited_telemetry(ledger: Ledger,
                                                                       db_url: str,
                                                                       tmp_path: Path) -> None:
    write_batch(ledger, events())
    plant = signing.keyid_of(PLANT.public_key())
    assert run_cli("telemetry", "prune", "--older-than-days", "30", data_dir=tmp_path,
                   env={"LINETRACE_DB": db_url}).returncode == 0
    assert audit_ledger(ledger, SIGNER.verifier, plant).findings == []
    last = events()[-1]
    edited = telemetry(9, RECENT + timedelta(seconds=3), power=1.0).record.value
    with ledger.transaction() as s:
        s.execute(update(EventRow).where(EventRow.event_id == last.event.id)
                  .values(value=edited))  # raw bytes, as someone editing the table would
    findings = audit_ledger(ledger, SIGNER.verifier, plant).findings
    assert [(f.kind, f.table) for f in findings] == [("edited", "events")]
    assert "SHA-256 digest" in findings[0].detail
    r = run_cli("telemetry", "prune", "--older-than-days", "1", "--json", data_dir=tmp_path,
                env={"LINETRACE_DB": db_url})
    assert r.returncode == 1 and "no longer match" in r.stderr  # the edited row is kept
    assert json.loads(r.stdout)["mismatched"] == [f"{STATION}/{last.event.id}"]


def test_a_retention_under_one_day_is_refused(tmp_path: Path) -> None:
    r = run_cli("telemetry", "prune", "--older-than-days", "0.5", data_dir=tmp_path)
    assert r.returncode == 2 and "at least 1 day" in r.stderr
