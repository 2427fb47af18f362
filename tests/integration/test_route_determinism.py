"""The route stage's decisions are a function of the events alone (CONTRACTS.md "Keys and system
events"): the same station records written with other batch sizes, with the partitions read in
another order, and with a new worker redoing records, give byte-identical `hold.placed`,
`command.hold` and `command.route` events, and the same holds, route violations and commands.

The records cover the route stage's paths: a skipped step (held on arrival, started anyway), a
failed burn-in routed to repair twice and then held for a disposition (max_loops), a repair
that could not repair, a unit whose first event is not at its route's first step, a server
whose PCBA (on another partition) has no passed ICT, installed naming the board's last event.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate
from linetrace.schemas.envelope import SYSTEM_SOURCE

from .partition_orders import LedgerMaker, ledgers, partitions_in_turn
from .route_line import Batches, commands, holds, mainboard, serial_on, violations, waits

pytestmark = [pytest.mark.integration, pytest.mark.slow]
__all__ = ["ledgers"]  # the fixture

def _records(line: Batches) -> list[Candidate]:
    f = line.flow
    skip = serial_on("SRV-DSKIP")
    for s in (50, 60, 70):
        f.visit(skip, s)
    f.arrive(skip, 90)
    f.start(skip, 90)

    fail = serial_on("SRV-DFAIL")
    for s in (50, 60, 70, 80):
        f.visit(fail, s)
    for _ in range(2):
        f.visit(fail, 90, "Failed", test="Failed")
        f.repair(fail, 80)
        f.visit(fail, 80)
    f.visit(fail, 90, "Failed", test="Failed")  # after max_loops: held for a disposition

    unable = serial_on("SRV-DUNABLE")
    for s in (50, 60, 70, 80):
        f.visit(unable, s)
    f.visit(unable, 90, "Failed", test="Failed")
    f.repair(unable, 80, result="UnableToRepair")

    first = serial_on("SRV-DFIRST")
    f.arrive(first, 90)

    pcba = serial_on("PCBA-DNOICT")
    for s in (20, 30):
        f.visit(pcba, s, product="A-PCBA", kind="assembly")
    srv = serial_on("SRV-DPCB")
    for s in (50, 60):
        f.visit(srv, s)
    f.visit(srv, 70, installs=[mainboard(pcba, line.last_id[pcba])])
    out, line.pending = line.pending, []
    return out


def _feed(ledger: Ledger, keys: Path, cands: Sequence[Candidate], batch: int,
          redo: int = 0) -> None:
    line = Batches(ledger, keys)
    i = 0
    while i < len(cands):
        line.pending = list(cands[i:i + batch])
        line.write()
        i += batch
        if redo and i < len(cands) and (i // batch) % 3 == 0:
            line = Batches(ledger, keys)  # a new worker, resuming behind what the ledger holds
            i -= redo


def route_events(ledger: Ledger) -> dict[str, bytes]:
    """The route stage's system events, by id: their exact bytes."""
    with ledger.reader() as s:
        rows = s.execute(select(EventRow.event_id, EventRow.value).where(
            EventRow.source == SYSTEM_SOURCE,
            EventRow.type.in_(["hold.placed", "command.hold", "command.route"]))).all()
    return {r[0]: r[1] for r in rows}


def _state(ledger: Ledger) -> dict[str, Any]:
    return {
        "system events": route_events(ledger),
        "holds": sorted((h.hold_id, h.scope, h.target, h.code, h.step, h.station, h.reason,
                         h.state) for h in holds(ledger)),
        "violations": sorted(violations(ledger)),
        "commands": sorted((k, sorted(v.items())) for k, v in commands(ledger)),
        "open waits": [w for w in waits(ledger) if w[2] is None],  # a wait is bookkeeping
    }


def test_route_decisions_are_the_same_whatever_the_batches_order_and_redo(
        ledgers: LedgerMaker, tmp_path: Path) -> None:
    keys = tmp_path / "keys"
    cands = _records(Batches(ledgers(), keys))
    scenarios: dict[str, tuple[list[Candidate], int, int]] = {
        "log order, one batch": (cands, 10_000, 0),
        "log order, batches of 1": (cands, 1, 0),
        "log order, batches of 5, redoing 4": (cands, 5, 4),
        "partitions descending, batches of 7": (partitions_in_turn(cands, descending=True), 7, 0),
        "partitions ascending, batches of 3, redoing 2": (
            partitions_in_turn(cands, descending=False), 3, 2),
    }
    seen: dict[str, dict[str, Any]] = {}
    for name, (order, batch, redo) in scenarios.items():
        lg = ledgers()
        _feed(lg, keys, order, batch, redo)
        seen[name] = _state(lg)
    first_name, first = next(iter(seen.items()))
    codes = {h[3] for h in first["holds"]}
    assert {"route.skipped_step", "route.max_loops", "route.unable_to_repair",
            "route.unknown_unit", "route.assembly_incomplete"} <= codes, codes
    routed = [c for c in first["commands"] if dict(c[1])["type"] == "command.route"]
    assert len(routed) == 3, routed
    for name, got in seen.items():
        for what, value in first.items():
            assert got[what] == value, f"{what}: {name} differs from {first_name}"
