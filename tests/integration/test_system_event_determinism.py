"""System events are a function of their cause alone (issue 8 item 9, CONTRACTS.md "Keys and
system events"): the same records written with batches of 1, 7 and 500, with the partitions
read in other orders and with restarts that redo records, give byte-identical `unit.sealed`
and `material.checked` events and HBOMs, and identical `units --json` and `trace --json`.

A server read before its mainboard PCBA has its seal wait in a pending row until the event
its install names arrives; the seal is then written with the same id, time and bytes.
On SQLite and PostgreSQL, through the worker's own stage pipeline (no broker needed).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from sqlalchemy import func, select

from linetrace.ledger.audit import audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.evidence import write_evidence
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.pending import PendingSystemEvent, PendingWait
from linetrace.ledger.proof.verify import verify_bundle
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, deterministic_id
from linetrace.stations.simulator import LinePlan, station_roster
from linetrace.streams.processor import default_stages
from linetrace.streams.stages import Pipeline
from tests.conftest import run_cli
from tests.unit.test_log_line import ENROLLED_AT, PLANT, SIGNER, VKEY, line, station_candidates
from tests.unit.test_log_line import station_key

from .partition_orders import LedgerMaker, genealogy, hboms, ledgers, partitions_in_turn
from .partition_orders import system_events

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["ledgers"]  # the fixture

Restart = tuple[int, int]  # every N records a new pipeline, redoing the last M records


def pending_seals(ledger: Ledger) -> int:
    with ledger.reader() as s:
        return int(s.scalar(select(func.count()).select_from(PendingSystemEvent)) or 0)


def feed(ledger: Ledger, plan: LinePlan, cands: Sequence[Candidate], batch: int,
         restart: Restart | None = None) -> int:
    """Write `cands` as the worker does (stage pipeline, one transaction per batch); returns
    the most seals that were pending after a batch."""
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(), now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT)
    pipeline = Pipeline(default_stages(ctx))
    i = since = most = redone = 0
    while i < len(cands):
        chunk = cands[i:i + batch]
        out = write_batch(ledger, chunk, ctx=ctx, stages=pipeline)
        assert not out.rejections, out.rejections[:1]
        assert len(out.stored) + out.duplicates == len(chunk)
        i += len(chunk)
        most = max(most, pending_seals(ledger))
        if restart is not None and i - since >= restart[0] and i < len(cands):
            pipeline = Pipeline(default_stages(ctx))  # a new worker process...
            i = since = i - restart[1]  # ...resuming behind what the ledger holds
            redone += 1
    assert restart is None or redone > 1
    return most


def cli_json(ledger: Ledger, *args: str, tmp: Path) -> object:
    r = run_cli(*args, "--json", data_dir=tmp, env={"LINETRACE_DB": ledger.url})
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_the_same_records_give_the_same_system_events_whatever_the_batches_order_and_restarts(
        ledgers: LedgerMaker, tmp_path: Path) -> None:
    plan = line(3, 7)
    cands = station_candidates(plan)
    assert all(item.last_event for c in cands if isinstance(c.event.body, b.MaterialsInstalled)
               for item in c.event.body.items if (item.serial or "").startswith("PCBA-"))
    scenarios: dict[str, tuple[list[Candidate], int, Restart | None]] = {
        "log order, batches of 500": (cands, 500, None),
        "log order, batches of 7": (cands, 7, None),
        "log order, batches of 1": (cands, 1, None),
        "partitions ascending, batches of 7, restarts redoing 50 records every 120":
            (partitions_in_turn(cands, descending=False), 7, (120, 50)),
        "partitions descending, batches of 500": (partitions_in_turn(cands, descending=True),
                                                  500, None),
    }
    seen: dict[str, dict[str, object]] = {}
    waited = 0
    for name, (order, batch, restart) in scenarios.items():
        lg = ledgers()
        waited = max(waited, feed(lg, plan, order, batch, restart))
        assert pending_seals(lg) == 0, f"{name}: a seal is still pending"
        events = system_events(lg)
        sealed = [decode_event(v).body for v in events.values()]
        assert sum(isinstance(x, b.UnitSealed) for x in sealed) == len(plan.servers), name
        assert sum(isinstance(x, b.MaterialChecked) for x in sealed) == 18, name
        seen[name] = {"system events": events, "hboms": hboms(lg), **genealogy(lg),
                      "units --json": cli_json(lg, "units", tmp=tmp_path),
                      **{f"trace {s.serial} --json": cli_json(lg, "trace", s.serial,
                                                              tmp=tmp_path)
                         for s in plan.servers}}
        if restart is not None:  # seals that waited still make evidence that verifies
            report = audit_ledger(lg, SIGNER.verifier, signing.keyid_of(PLANT.public_key()))
            assert report.findings == [], report.findings[:3]
            for server in plan.servers:
                write_evidence(lg, server.serial, tmp_path / server.serial, SIGNER)
                verify_bundle(tmp_path / server.serial, VKEY)
    assert waited > 0, "no scenario read a server before its board: the wait is untested"
    first_name, first = next(iter(seen.items()))
    for name, got in seen.items():
        for what, value in first.items():
            assert got[what] == value, f"{what}: {name} differs from {first_name}"


def test_a_seal_waits_durably_for_the_board_event_its_install_names(ledgers: LedgerMaker
                                                                     ) -> None:
    plan = line(3, 7)
    cands = station_candidates(plan)
    server = plan.servers[0]
    assert server.mainboard is not None
    board = server.mainboard.serial
    install = next(c for c in cands if isinstance(c.event.body, b.MaterialsInstalled)
                   and any(i.serial == board for i in c.event.body.items))
    named = next(i.last_event for i in install.event.body.items  # type: ignore[union-attr]
                 if i.serial == board)
    packed = next(c for c in cands if c.event.type == "unit.packed"
                  and c.event.subject == server.serial)
    boards = [c for c in cands if c.event.subject == board]
    rest = [c for c in cands if c.event.subject != board]

    reference = ledgers()
    feed(reference, plan, cands, 500)
    lg = ledgers()
    feed(lg, plan, rest, 40)  # the worker reads every partition but the board's, then stops
    with lg.reader() as s:
        waiting = s.scalars(select(PendingSystemEvent)).all()
        waits = s.scalars(select(PendingWait)).all()
    sealed_id = deterministic_id("unit.sealed", server.serial, packed.event.id)
    assert [(p.event_id, p.cause_id, p.subject) for p in waiting] == [
        (sealed_id, packed.event.id, server.serial)]
    assert [(w.subject, w.awaited) for w in waits] == [(board, named)]
    assert sealed_id not in system_events(lg)
    keyid = signing.keyid_of(PLANT.public_key())
    assert audit_ledger(lg, SIGNER.verifier, keyid).findings == []  # waiting is no finding

    feed(lg, plan, boards, 7)  # a new worker reads the board's partition
    assert pending_seals(lg) == 0
    assert system_events(lg)[sealed_id] == system_events(reference)[sealed_id]
    assert decode_event(system_events(lg)[sealed_id]).envelope.time == packed.event.envelope.time
    assert hboms(lg) == hboms(reference)

    with lg.transaction() as s:  # a seal stuck although what it waits for is here
        s.add(PendingSystemEvent(event_id=str(packed.event.id), type="unit.sealed",
                                 subject=server.serial, cause_source=packed.event.source,
                                 cause_id=packed.event.id, since=ENROLLED_AT))
        s.add(PendingWait(event_id=str(packed.event.id), subject=board, awaited=named))
    findings = audit_ledger(lg, SIGNER.verifier, keyid).findings
    assert [(f.kind, f.table) for f in findings] == [("invalid", "pending_system_events")]
    assert "yet it was not written" in findings[0].detail
