"""The batch writer on real SQLite and PostgreSQL: rules 3 and 4, projections, trace."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import list_units, trace
from linetrace.ledger.views import to_data
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow, Rejected, StationPosition
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event

pytestmark = pytest.mark.integration

KEY = signing.generate_key()


@pytest.fixture
def ledger(db_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with gpu-install-01 enrolled (signing with KEY)."""
    lg = Ledger(db_url)
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    enroll_station(lg, plant, "gpu-install-01", "gpu-install", KEY.public_key())
    yield lg
    lg.close()


class Station:
    def __init__(self, sid: str) -> None:
        self.sid, self.seq = sid, 0

    def cand(self, etype: str, subject: str, body: b.Body, *, t: str, partition: int = 0,
             seq: int | None = None, event_id: str | None = None) -> Candidate:
        self.seq = seq if seq is not None else self.seq + 1
        v = encode_event(event_type=etype, source=self.sid, subject=subject, body=body, time=t,
                         stationseq=self.seq, event_id=event_id or str(uuid.uuid4()))
        kid, sig = signing.read_signature(signing.sign_value(v, KEY))
        return Candidate(SourceRecord("line.events", partition, self.seq, subject.encode(), v),
                         decode_event(v), kid, sig)


def gpu(i: int, serial: str | None = None) -> b.InstalledItem:
    return b.InstalledItem(lot="LOT-GPU-1", mpn="699-2G520-0200-000", category="gpu",
                           serial=serial or f"GPU-{i}", slot=i, parent="BB-1")


def test_identical_replay_is_dropped_and_changed_bytes_are_equivocation(ledger: Ledger) -> None:
    st = Station("gpu-install-01")
    txn = str(uuid.uuid4())
    c1 = st.cand("work.started", "SRV-1", b.WorkStarted(
        transaction_id=txn, step=60, operation="GPU install", work_order="WO-9",
        product="HGX-B300"), t="2026-01-01T10:00:00Z")
    assert len(write_batch(ledger, [c1]).stored) == 1
    again = write_batch(ledger, [c1])
    assert again.duplicates == 1 and not again.stored and not again.rejections
    forged = st.cand("work.started", "SRV-1", b.WorkStarted(
        transaction_id=txn, step=60, operation="GPU install (edited)", work_order="WO-9",
        product="HGX-B300"), t="2026-01-01T10:00:00Z", event_id=c1.event.id)
    out = write_batch(ledger, [forged])
    assert [r.code for r in out.rejections] == ["event.equivocation"]
    with ledger.reader() as s:
        assert s.scalar(select(func.count()).select_from(EventRow)
                        .where(EventRow.source == "gpu-install-01")) == 1
        assert s.scalar(select(Rejected.code)) == "event.equivocation"


def test_an_id_reused_with_a_new_stationseq_is_equivocation_and_the_batch_is_kept(
        ledger: Ledger) -> None:
    """The writer looks up only events that may be stored already (stationseq not past the
    partition's last); an id reused with a fresh stationseq meets the unique key instead, and
    must still be quarantined as equivocation while the rest of its batch is stored."""
    st = Station("gpu-install-01")
    body = b.UnitArrived(step=60)
    first = st.cand("unit.arrived", "SRV-1", body, t="2026-01-01T10:00:00Z", partition=1)
    assert len(write_batch(ledger, [first]).stored) == 1
    good = st.cand("unit.arrived", "SRV-2", body, t="2026-01-01T10:00:01Z", partition=2)
    reused = st.cand("unit.arrived", "SRV-3", b.UnitArrived(step=70), t="2026-01-01T10:00:02Z",
                     partition=3, event_id=first.event.id)
    after = st.cand("unit.arrived", "SRV-4", body, t="2026-01-01T10:00:03Z", partition=4)
    out = write_batch(ledger, [good, reused, after])
    assert [c.event.subject for c in out.stored] == ["SRV-2", "SRV-4"]
    assert [(r.code, r.destination) for r in out.rejections] == [
        ("event.equivocation", "line.quarantine")]
    with ledger.reader() as s:
        assert sorted(s.scalars(select(EventRow.subject).where(
            EventRow.source == "gpu-install-01")).all()) == ["SRV-1", "SRV-2", "SRV-4"]


def test_stationseq_must_advance_per_topic_partition(ledger: Ledger) -> None:
    st = Station("gpu-install-01")
    body = b.UnitArrived(step=60)
    a = st.cand("unit.arrived", "SRV-1", body, t="2026-01-01T10:00:00Z", partition=1, seq=10)
    other_partition = st.cand("unit.arrived", "SRV-2", body, t="2026-01-01T10:00:00Z",
                              partition=2, seq=3)
    stale = st.cand("unit.arrived", "SRV-1", body, t="2026-01-01T10:00:01Z", partition=1, seq=10)
    gap = st.cand("unit.arrived", "SRV-1", body, t="2026-01-01T10:00:02Z", partition=1, seq=25)
    out = write_batch(ledger, [a, other_partition, stale, gap])
    assert [c.event.seq for c in out.stored] == [10, 3, 25]
    assert [(r.code, r.destination) for r in out.rejections] == [("seq.reordered", "line.quarantine")]
    late = st.cand("unit.arrived", "SRV-1", body, t="2026-01-01T10:00:03Z", partition=1, seq=20)
    assert [r.code for r in write_batch(ledger, [late]).rejections] == ["seq.reordered"]
    with ledger.reader() as s:
        pos = {(p.partition): p.last_seq for p in s.scalars(select(StationPosition))
               .all() if p.station_id == "gpu-install-01"}
    assert pos == {1: 25, 2: 3}


def test_trace_shows_gpus_in_slots_under_the_baseboard_and_operations_in_order(
        ledger: Ledger) -> None:
    st = Station("gpu-install-01")
    txn = str(uuid.uuid4())
    batch = [
        st.cand("work.started", "SRV-1", b.WorkStarted(
            transaction_id=txn, step=60, operation="GPU install", work_order="WO-9",
            product="HGX-B300", operator="op-17"), t="2026-01-01T10:00:00Z"),
        st.cand("materials.installed", "SRV-1", b.MaterialsInstalled(items=[
            b.InstalledItem(lot="LOT-BB-1", mpn="935-24287-0000-000", category="baseboard",
                            serial="BB-1")] + [gpu(i) for i in range(8)]),
            t="2026-01-01T10:05:00Z"),
        st.cand("work.completed", "SRV-1", b.WorkCompleted(transaction_id=txn, step=60,
                                                            result="Completed"),
                t="2026-01-01T10:09:00Z"),
    ]
    write_batch(ledger, batch)
    with ledger.reader() as s:
        t = to_data(trace(s, "SRV-1"))
        units = to_data(list_units(s))
    gpus = [p for p in t["parts"] if p["category"] == "gpu"]
    assert sorted(p["slot"] for p in gpus) == list(range(8))
    assert {p["parent"] for p in gpus} == {"BB-1"}
    assert [p["parent"] for p in t["parts"] if p["category"] == "baseboard"] == ["SRV-1"]
    assert t["operations"] == [{"step": 60, "operation": "GPU install", "station": "gpu-install-01",
                                "operator": "op-17", "result": "Completed",
                                "started": "2026-01-01T10:00:00.000Z",
                                "completed": "2026-01-01T10:09:00.000Z"}]
    assert units == [{"serial": "SRV-1", "product": "HGX-B300", "kind": "server",
                      "state": "in_progress", "step": 60, "updated": "2026-01-01T10:09:00.000Z"}]
