"""Unit state is a function of the events, never of the order partitions are consumed in
(issue 8 item 9), and `verify-ledger` catches a projection that depends on that order.

A mainboard PCBA's own events travel on its partition; the server's `materials.installed` of
it on the server's. The same simulated line is written through the real batch writer with
the partitions read in turn, ascending and descending (so each board is read before and
after the server that installs it), with batches of 1 and 500, on SQLite and PostgreSQL.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import pytest
from sqlalchemy.orm import Session

from linetrace.ledger import projections
from linetrace.ledger.audit import audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.models import Unit
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event
from linetrace.stations.simulator import LinePlan, station_roster
from tests.unit.test_log_line import (
    ENROLLED_AT,
    PLANT,
    SIGNER,
    line,
    station_candidates,
    station_key,
)

from .partition_orders import LedgerMaker, genealogy, ledgers, partitions_in_turn

pytestmark = pytest.mark.integration
__all__ = ["ledgers"]  # the fixture


def write(ledger: Ledger, plan: LinePlan, cands: Sequence[Candidate], batch: int) -> None:
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(), now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT)
    for i in range(0, len(cands), batch):
        out = write_batch(ledger, cands[i:i + batch], ctx=ctx)
        assert not out.rejections, out.rejections[:1]
        assert len(out.stored) + out.duplicates == len(cands[i:i + batch])


def boards_read_after_their_server(plan: LinePlan, cands: Sequence[Candidate]) -> set[str]:
    """PCBAs whose first event comes after the install that names them, in `cands`."""
    first: dict[str, int] = {}
    installed: dict[str, int] = {}
    for n, c in enumerate(cands):
        first.setdefault(c.event.subject, n)
        if isinstance(c.event.body, b.MaterialsInstalled):
            for item in c.event.body.items:
                if item.serial is not None and item.serial.startswith("PCBA-"):
                    installed.setdefault(item.serial, n)
    return {s for s, n in installed.items() if first.get(s, len(cands)) > n}


def test_installed_boards_show_installed_whatever_order_the_partitions_are_read_in(
        ledgers: LedgerMaker) -> None:
    plan = line(3, 7)
    cands = station_candidates(plan)
    orders = {
        "log order, batches of 40": (cands, 40),
        "partitions ascending, batches of 500": (partitions_in_turn(cands, descending=False), 500),
        "partitions descending, batches of 1": (partitions_in_turn(cands, descending=True), 1),
    }
    late = set().union(*(boards_read_after_their_server(plan, c) for c, _ in orders.values()))
    assert late, "no order reads a board after the server that installs it: the test tests nothing"
    results = {}
    for name, (order, batch) in orders.items():
        lg = ledgers()
        write(lg, plan, order, batch)
        results[name] = genealogy(lg)
    first = results.pop("log order, batches of 40")
    boards = {u[0]: u for u in first["units"] if u[2] == "assembly"}
    assert len(boards) == 3 and {u[3] for u in boards.values()} == {"installed"}, boards
    assert {u[5] for u in boards.values()} == {s.serial for s in plan.servers}
    for name, got in results.items():
        for table in first:
            assert got[table] == first[table], f"{table} differ when written in {name}"


def _installed_before_the_fix(s: Session, e: Event, t: datetime) -> None:
    """The projection of issue 8 item 9: the install marks the board installed only if the
    board's own partition happened to be read already (and nothing settles it later)."""
    body = e.body
    assert isinstance(body, b.MaterialsInstalled)
    projections._installed(s, e, t)
    for item in body.items:
        sub = s.get(Unit, item.serial) if item.serial is not None else None
        if sub is not None:
            sub.state, sub.installed_in = "installed", e.subject


def test_verify_ledger_reports_a_projection_that_depends_on_the_order_of_partitions(
        ledgers: LedgerMaker, monkeypatch: pytest.MonkeyPatch) -> None:
    plan = line(3, 7)
    cands = station_candidates(plan)
    keyid = signing.keyid_of(PLANT.public_key())

    sound = ledgers()
    write(sound, plan, cands, 40)
    assert audit_ledger(sound, SIGNER.verifier, keyid).findings == []

    monkeypatch.setitem(projections.PROJECTIONS, "materials.installed", _installed_before_the_fix)
    monkeypatch.setattr(projections, "settle_units", lambda session: 0)
    faulty = ledgers()
    write(faulty, plan, cands, 40)
    findings = audit_ledger(faulty, SIGNER.verifier, keyid).findings
    assert findings, "verify-ledger did not see the order-dependent projection"
    assert {f.kind for f in findings} == {"order"}, findings[:3]  # the log replays identically
    flagged = {f.key for f in findings if f.table == "units"}
    assert flagged and all(k.startswith("PCBA-") for k in flagged), findings[:3]
    assert any("state: 'installed' in log order, 'in_progress'" in f.detail for f in findings)
