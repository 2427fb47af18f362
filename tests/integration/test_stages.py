"""The stage pipeline and poison-record isolation, on real SQLite and PostgreSQL.

No broker is needed: `BatchProcessor.write_isolating` and the writer are driven directly, as
the worker's writer thread drives them.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import msgspec
import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.ledger import outbox
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow, IngestPosition, Rejected
from linetrace.ledger.outbox import OutboxRow
from linetrace.ledger.positions import resume_offset, stored_positions
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.stage_failures import StageFailure
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.streams.processor import UNSTORABLE, BatchProcessor
from linetrace.streams.stages import Decisions, Pipeline

from .test_ledger_writer import KEY, Station

pytestmark = pytest.mark.integration

T0 = "2026-03-01T08:00:00.000Z"


@pytest.fixture
def ledger(db_url: str, tmp_path: Path) -> Iterator[Ledger]:
    """A ledger with gpu-install-01 enrolled (signing with KEY)."""
    lg = Ledger(db_url)
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    enroll_station(lg, plant, "gpu-install-01", "gpu-install", KEY.public_key())
    yield lg
    lg.close()


def started(st: Station, serial: str, step: int = 40) -> Candidate:
    return st.cand("work.started", serial, b.WorkStarted(
        transaction_id=f"00000000-0000-4000-8000-{st.seq + 1:012d}", step=step,
        operation="GPU install", work_order="WO-1", product="A", kind="server"), t=T0)


class AlertOnEachStart:
    """A detector-like stage: one outbox message per work.started; it fails on a chosen unit
    until `healed`."""

    name = "alert-on-start"

    def __init__(self, broken_for: str | None = None) -> None:
        self.broken_for = broken_for
        self.calls = 0

    def load(self, session: Session, batch: Sequence[Candidate]) -> int:
        return int(session.scalar(select(func.count()).select_from(EventRow)) or 0)

    def decide(self, batch: Sequence[Candidate], state: Any) -> Decisions:
        self.calls += 1
        out = []
        for c in batch:
            if c.event.subject == self.broken_for:
                raise RuntimeError(f"detector bug on {c.event.subject}")
            out.append(outbox.Message("alert", "line.alerts", c.event.subject.encode(),
                                      c.event.id.encode(), [],
                                      outbox.message_id("alert", c.event.subject, c.event.id)))
        return Decisions(messages=out)


def _alerts(ledger: Ledger) -> list[bytes]:
    with ledger.reader() as s:
        return [r.key for r in s.scalars(select(OutboxRow).where(OutboxRow.kind == "alert")
                                         .order_by(OutboxRow.seq))]


def test_a_stage_that_raises_never_rejects_events_and_is_retried_until_it_succeeds(
        ledger: Ledger) -> None:
    st = Station("gpu-install-01")
    stage = AlertOnEachStart(broken_for="SRV-2")
    pipeline = Pipeline([stage])
    batch = [started(st, f"SRV-{i}") for i in range(1, 5)]
    out = write_batch(ledger, batch, stages=pipeline)

    assert len(out.stored) == 4 and not out.rejections  # every valid event is stored
    assert sorted(_alerts(ledger)) == [b"SRV-1", b"SRV-3", b"SRV-4"]  # the others decided
    with ledger.reader() as s:
        fails = s.scalars(select(StageFailure)).all()
        assert [(f.stage, f.source, f.event_id, f.resolved) for f in fails] == [
            ("alert-on-start", "gpu-install-01", batch[1].event.id, None)]
        assert "detector bug on SRV-2" in fails[0].error
        assert s.scalar(select(func.count()).select_from(Rejected)) == 0

    with ledger.transaction() as s:  # still broken: the retry records a second attempt
        assert pipeline.retry(s, now=_far_future()) == []
    with ledger.reader() as s:
        assert s.scalars(select(StageFailure.attempts)).all() == [2]

    stage.broken_for = None  # the fix is deployed
    with ledger.transaction() as s:
        pipeline.retry(s, now=_far_future())
    assert sorted(_alerts(ledger)) == [b"SRV-1", b"SRV-2", b"SRV-3", b"SRV-4"]
    with ledger.reader() as s:
        assert s.scalars(select(StageFailure.resolved)).one() is not None


def _far_future():  # type: ignore[no-untyped-def]
    from datetime import UTC, datetime

    return datetime(2100, 1, 1, tzinfo=UTC)


def test_the_system_events_stage_seals_and_checks_through_the_pipeline(ledger: Ledger,
                                                                        tmp_path: Path) -> None:
    """material.received -> material.checked via the worker's default stages, into the outbox."""
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    ctx = SystemContext(plant_key=plant)
    proc = BatchProcessor(ledger, "127.0.0.1:1", ctx)
    recv_key = signing.generate_key()
    enroll_station(ledger, plant, "receiving-01", "receiving", recv_key.public_key())
    value = encode_event(event_type="material.received", source="receiving-01", subject="LOT-1",
                         time=T0, stationseq=1, event_id=str(uuid.uuid4()),
                         body=b.MaterialReceived(lot="LOT-1", mpn="699-2G520-0200-000",
                                                 supplier="NVIDIA", date_code="2026-08", qty=8))
    kid, sig = signing.read_signature(signing.sign_value(value, recv_key))
    rec = Candidate(SourceRecord("line.receipts", 0, 0, b"LOT-1", value), decode_event(value),
                    kid, sig)
    out = proc.write_isolating([rec], [], {("line.receipts", 0): 1})
    assert [c.event.type for c in out.system] == ["material.checked"]
    with ledger.reader() as s:
        sys_rows = s.scalars(select(OutboxRow).where(OutboxRow.kind == "system")).all()
    checked = [r for r in sys_rows if r.topic == "line.receipts"]
    assert len(checked) == 1 and checked[0].value == out.system[0].event.value
    assert checked[0].message_id == outbox.message_id("material.checked", "LOT-1", rec.event.id)


def test_a_record_the_database_cannot_store_is_isolated_and_the_rest_of_its_batch_written(
        ledger: Ledger, tmp_path: Path) -> None:
    st = Station("gpu-install-01")
    before = [started(st, f"SRV-{i}") for i in range(1, 4)]
    # A quantity no database integer holds. Ingest now refuses such values by schema, so the
    # record is made as one that slipped past screening would look to the writer: the decoded
    # body the projections store carries it.
    valid = st.cand("materials.installed", "SRV-9", b.MaterialsInstalled(
        transaction_id="00000000-0000-4000-8000-00000000beef",
        items=[b.InstalledItem(lot="LOT-X", mpn="MPN-X", qty=5)]), t=T0)
    body = valid.event.body
    assert isinstance(body, b.MaterialsInstalled)
    huge = msgspec.structs.replace(body, items=[msgspec.structs.replace(body.items[0],
                                                                        qty=2 ** 63)])
    poison = Candidate(valid.record, msgspec.structs.replace(valid.event, body=huge),
                       valid.keyid, valid.signature)
    after = [started(st, f"SRV-{i}") for i in range(4, 7)]
    batch = before + [poison] + after
    positions = {("line.events", 0): batch[-1].record.offset + 1}  # type: ignore[operator]
    proc = BatchProcessor(ledger, "127.0.0.1:1")
    proc.incarnation = "cluster-A"

    out = proc.write_isolating(batch, [], positions)

    assert [c.event.id for c in out.stored] == [c.event.id for c in before + after]
    assert [(r.code, r.destination, r.event_id) for r in out.rejections] == [
        (UNSTORABLE, "line.events.dlq", poison.event.id)]
    with ledger.reader() as s:
        ids = set(s.scalars(select(EventRow.event_id).where(EventRow.source == "gpu-install-01")))
        assert ids == {c.event.id for c in before + after}
        rej = s.scalars(select(Rejected)).one()
        assert (rej.code, rej.destination, rej.value) == (UNSTORABLE, "line.events.dlq",
                                                          poison.record.value)
        assert "could not store" in rej.message
        dlq = s.scalars(select(OutboxRow).where(OutboxRow.kind == "dlq")).one()
        assert dlq.value == poison.record.value and dlq.topic == "line.events.dlq"
        headers = {k: bytes.fromhex(v) for k, v in dlq.headers["headers"]}
        assert headers["error.code"] == UNSTORABLE.encode()
        pos = s.scalars(select(IngestPosition)).one()
        assert (pos.next_offset, pos.incarnation) == (positions[("line.events", 0)], "cluster-A")
        stored = stored_positions(s, ["line.events"])
    assert resume_offset(stored[("line.events", 0)], "cluster-A") == pos.next_offset
    assert resume_offset(stored[("line.events", 0)], "cluster-B") == 0  # a new broker log


def test_a_transient_database_error_is_raised_for_the_whole_batch_to_be_retried(
        tmp_path: Path) -> None:
    """An outage must never turn valid events into dead letters."""
    from sqlalchemy.exc import OperationalError

    home = tmp_path / "db"
    home.mkdir()
    lg = Ledger(f"sqlite:///{home / 'l.db'}")
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    enroll_station(lg, plant, "gpu-install-01", "gpu-install", KEY.public_key())
    st = Station("gpu-install-01")
    batch = [started(st, "SRV-1"), started(st, "SRV-2")]
    proc = BatchProcessor(lg, "127.0.0.1:1")
    lg.engine.dispose()
    home.rename(tmp_path / "away")  # the database cannot be opened: an outage, not bad data
    try:
        with pytest.raises(OperationalError):
            proc.write_isolating(batch, [], {("line.events", 0): 2})
    finally:
        (tmp_path / "away").rename(home)
    out = proc.write_isolating(batch, [], {("line.events", 0): 2})
    assert len(out.stored) == 2 and not out.rejections
    with lg.reader() as s:
        assert s.scalar(select(func.count()).select_from(Rejected)) == 0
    lg.close()
