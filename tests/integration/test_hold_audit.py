"""`verify-ledger` audits the holds: `holds`, `hold_approvals` and `hold_units` are rebuilt from
the hold.* leaves and compared row by row, and a unit the route stage joined to a lot hold
must be justified by its install leaf. Editing a hold in the database (releasing it by SQL,
moving it in the log, adding or dropping a unit or an approval) is reported by table and key;
a clean ledger passes. On SQLite and PostgreSQL; the CLI on SQLite.

The ledger: people enrolled; SRV-1 installs a GPU of LOT-AUD-GPU; q1 holds the lot (it names
SRV-1) and approves its release alone (the hold stays in force); SRV-2 installs a GPU of the
held lot, so the worker's route stage joins it to the hold; a supervisor holds and releases
SRV-2 itself (an operational hold).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.ledger.audit import Finding, audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, Hold, HoldApproval, HoldUnit
from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.schemas import bodies as b
from linetrace.schemas import signing

from ..conftest import run_cli
from .route_line import Batches, serial_on
from .test_holds import Line, enrol_people

pytestmark = pytest.mark.integration

LOT = "LOT-AUD-GPU"


def gpu(serial: str) -> b.InstalledItem:
    return b.InstalledItem(lot=LOT, mpn="699-2G520", category="gpu", serial=serial, slot=0)


@dataclass
class Built:
    ledger: Ledger
    batches: Batches
    srv1: str
    srv2: str
    lot_hold: str
    unit_hold: str

    def findings(self) -> list[Finding]:
        signer = plant_signer(self.batches.plant, "test.plant/linetrace/v1")
        return audit_ledger(self.ledger, signer.verifier,
                            signing.keyid_of(self.batches.plant.public_key())).findings


def build(ledger: Ledger, keys: Path) -> Built:
    batches = Batches(ledger, keys)
    enrol_people(ledger, batches.plant)
    people = Line(ledger, batches.plant)
    srv1, srv2 = serial_on("SRV-AUD-A"), serial_on("SRV-AUD-B")
    batches.flow.visit(srv1, 50)
    batches.flow.visit(srv1, 60, installs=[gpu("GPU-AUD-1")])
    assert batches.write() == []
    lot_hold = people.place("q1", "lot", LOT, "GPU lot recalled by supplier")
    assert lot_hold["affected_units"] == [srv1]
    assert people.release("q1", lot_hold["id"], "retest passed").in_force  # one approval
    batches.flow.visit(srv2, 50)
    batches.flow.visit(srv2, 60, installs=[gpu("GPU-AUD-2")])
    assert [c.event.type for c in batches.write()] == ["command.hold"]
    unit_hold = people.place("sup", "unit", srv2, "torque check")
    assert not people.release("sup", unit_hold["id"]).in_force
    with ledger.reader() as s:
        joined = s.get(HoldUnit, (lot_hold["id"], srv2))
        assert joined is not None and joined.event_id != s.get(Hold, lot_hold["id"]).placed_event  # type: ignore[union-attr]
    return Built(ledger, batches, srv1, srv2, lot_hold["id"], unit_hold["id"])


@pytest.fixture
def built(ledger: Ledger, tmp_path: Path) -> Built:
    return build(ledger, tmp_path / "keys")


Tamper = Callable[[Session, Built], Callable[[Session], None]]


def _release_by_sql(s: Session, x: Built) -> Callable[[Session], None]:
    hold = s.get(Hold, x.lot_hold)
    assert hold is not None
    before = (hold.state, hold.released_by)
    hold.state, hold.released_by = "released", "q1"

    def undo(s: Session) -> None:
        h = s.get(Hold, x.lot_hold)
        assert h is not None
        h.state, h.released_by = before
    return undo


def _move_in_the_log(s: Session, x: Built) -> Callable[[Session], None]:
    hold = s.get(Hold, x.lot_hold)
    assert hold is not None and hold.placed_seq is not None
    before = hold.placed_seq
    hold.placed_seq = before + 1  # placed after the events it should stop

    def undo(s: Session) -> None:
        h = s.get(Hold, x.lot_hold)
        assert h is not None
        h.placed_seq = before
    return undo


def _drop(model: type[HoldUnit] | type[HoldApproval], key: Callable[[Built], tuple[str, str]]
          ) -> Tamper:
    def tamper(s: Session, x: Built) -> Callable[[Session], None]:
        row = s.get(model, key(x))
        assert row is not None
        values = {c.key: getattr(row, c.key) for c in model.__table__.columns}
        s.delete(row)
        return lambda s: s.add(model(**values))
    return tamper


def _add_unit(serial: Callable[[Built], str], event: Callable[[Session, Built], str]) -> Tamper:
    def tamper(s: Session, x: Built) -> Callable[[Session], None]:
        hold = s.get(Hold, x.lot_hold)
        assert hold is not None
        s.add(HoldUnit(hold_id=x.lot_hold, serial=serial(x), added=hold.placed,
                       event_id=event(s, x)))

        def undo(s: Session) -> None:
            row = s.get(HoldUnit, (x.lot_hold, serial(x)))
            assert row is not None
            s.delete(row)
        return undo
    return tamper


def _placed_event(s: Session, x: Built) -> str:
    hold = s.get(Hold, x.lot_hold)
    assert hold is not None
    return hold.placed_event


def _some_event_of(serial: Callable[[Built], str]) -> Callable[[Session, Built], str]:
    def event(s: Session, x: Built) -> str:
        found = s.scalar(select(EventRow.event_id).where(
            EventRow.subject == serial(x), EventRow.type == "work.started").limit(1))
        assert found is not None
        return found
    return event


def _shift_join(s: Session, x: Built) -> Callable[[Session], None]:
    row = s.get(HoldUnit, (x.lot_hold, x.srv2))
    assert row is not None
    before = row.added
    row.added = before - timedelta(minutes=5)

    def undo(s: Session) -> None:
        r = s.get(HoldUnit, (x.lot_hold, x.srv2))
        assert r is not None
        r.added = before
    return undo


#: name -> (tamper, (kind, table, key), a piece of the detail)
TAMPERS: dict[str, tuple[Tamper, Callable[[Built], tuple[str, str, str]], str]] = {
    "hold released by SQL": (_release_by_sql, lambda x: ("edited", "holds", x.lot_hold),
                             "state: 'released' in the table, 'active' from the leaves"),
    "hold moved in the log": (_move_in_the_log, lambda x: ("edited", "holds", x.lot_hold),
                              "placed_seq"),
    "unit the hold named dropped": (
        _drop(HoldUnit, lambda x: (x.lot_hold, x.srv1)),
        lambda x: ("deleted", "hold_units", f"{x.lot_hold}, {x.srv1}"), "missing"),
    "unit added as if the hold named it when placed": (
        _add_unit(lambda x: "SRV-AUD-OTHER", _placed_event),
        lambda x: ("inserted", "hold_units", f"{x.lot_hold}, SRV-AUD-OTHER"),
        "not derivable"),
    "unit added as if joined on an event that installs nothing held": (
        _add_unit(lambda x: x.srv2 + "-X", _some_event_of(lambda x: x.srv1)),
        lambda x: ("inserted", "hold_units", f"{x.lot_hold}, {x.srv2}-X"),
        "is not a materials.installed event"),
    "joined unit's time edited": (
        _shift_join, lambda x: ("inserted", "hold_units", f"{x.lot_hold}, {x.srv2}"),
        "the install"),
    "approval dropped": (
        _drop(HoldApproval, lambda x: (x.lot_hold, "q1")),
        lambda x: ("deleted", "hold_approvals", f"{x.lot_hold}, q1"), "missing"),
    "release's approval dropped": (
        _drop(HoldApproval, lambda x: (x.unit_hold, "sup")),
        lambda x: ("deleted", "hold_approvals", f"{x.unit_hold}, sup"), "missing"),
}


def test_a_ledger_with_holds_audits_clean_and_every_hold_edit_is_named(built: Built) -> None:
    assert built.findings() == []
    for name, (tamper, where, detail) in TAMPERS.items():
        with built.ledger.transaction() as s:
            undo = tamper(s, built)
        found = [(f.kind, f.table, f.key) for f in built.findings()]
        assert where(built) in found, (name, found)
        assert any(detail in f.detail for f in built.findings()
                   if (f.kind, f.table, f.key) == where(built)), name
        with built.ledger.transaction() as s:
            undo(s)
        assert built.findings() == [], name  # undone: clean again


def test_linetrace_verify_ledger_reports_a_hold_released_by_sql(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        x = build(ledger, data / "keys")
    finally:
        ledger.close()
    done = run_cli("verify-ledger", data_dir=data)
    assert done.returncode == 0, done.stdout + done.stderr
    with sqlite3.connect(data / "ledger.db") as db:
        db.execute("UPDATE holds SET state = 'released', released_by = 'q1' WHERE hold_id = ?",
                   (x.lot_hold,))
        db.execute("DELETE FROM hold_units WHERE hold_id = ? AND serial = ?",
                   (x.lot_hold, x.srv1))
    done = run_cli("verify-ledger", data_dir=data)
    assert done.returncode == 1, done.stdout + done.stderr
    assert (f"FAIL  edited holds [{x.lot_hold}]: state: 'released' in the table, 'active' "
            "from the leaves") in done.stdout
    assert f"FAIL  deleted hold_units [{x.lot_hold}, {x.srv1}]" in done.stdout


def test_a_release_forged_with_the_plant_key_and_the_database_fails_both_verifications(
        db_url: str, tmp_path: Path) -> None:
    """Whoever holds the plant key and the database records a quality hold's release carrying
    only the first quality user's approval: the event is validly plant-signed and the tables
    agree with it, yet `verify-ledger` and `verify` of the unit's evidence bundle refuse it."""
    from datetime import UTC, datetime

    from linetrace.ledger.evidence import write_evidence
    from linetrace.ledger.genealogy import trace
    from linetrace.ledger.proof.verify import VerificationFailed, verify_bundle
    from linetrace.ledger.system_events import signed_system_event
    from linetrace.ledger.writer import record_system_event
    from linetrace.schemas.envelope import decode_stored_event
    from tests.unit.test_log_line import PLANT, SIGNER, VKEY, feed_line
    from tests.unit.test_log_line import line as line_plan

    ledger = Ledger(db_url)
    try:
        fed = feed_line(ledger, line_plan())
        enrol_people(ledger, PLANT)
        people = Line(ledger, PLANT)
        with ledger.reader() as s:
            lot = next(p.lot for p in trace(s, fed.server).parts if p.category == "gpu")
        hold = people.place("q1", "lot", lot, "GPU lot recalled by supplier")
        assert people.release("q1", hold["id"]).in_force
        with ledger.reader() as s:
            value = s.scalar(select(EventRow.value).where(EventRow.type == "hold.approved"))
        approval = decode_stored_event(value).body
        assert isinstance(approval, b.HoldApproved)
        with ledger.transaction() as s:
            assert record_system_event(s, signed_system_event(
                "hold.released", hold["id"], b.HoldReleased(
                    hold_id=hold["id"], released_by=["q1"], statements=[approval.statement]),
                time=datetime.now(UTC), cause_id="0f0f0f0f-0f0f-4f0f-8f0f-0f0f0f0f0f0f",
                plant_key=PLANT))
        with ledger.reader() as s:
            assert s.get(Hold, hold["id"]).state == "released"  # type: ignore[union-attr]
        report = audit_ledger(ledger, SIGNER.verifier, signing.keyid_of(PLANT.public_key()))
        assert [(f.kind, f.table) for f in report.findings] == [("invalid", "statements")]
        assert "2 different quality users" in report.findings[0].detail
        write_evidence(ledger, fed.server, tmp_path / "bundle", SIGNER)
        with pytest.raises(VerificationFailed, match="2 different quality users") as e:
            verify_bundle(tmp_path / "bundle", VKEY)
        assert e.value.check == "statements"
    finally:
        ledger.close()
