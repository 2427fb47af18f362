"""The first stage: the system events the plant itself answers with.

`material.received` -> `material.checked` (the receipt against the approved vendor list) and
`unit.packed` -> `unit.sealed` (the frozen HBOM and the chain heads it covers). The ledger
knows how to build them (`linetrace.ledger.system_events`); as a stage, a failure to build
one (say, a bug in HBOM generation) never dead-letters the valid event that caused it: the
event is stored, the failure recorded, and the seal retried.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table
from sqlalchemy.orm import Session

from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import (
    SealedHbom,
    SealPlan,
    SystemContext,
    decide_system_events,
    plan_system_events,
)

from .stages import Decisions


class SystemEventsStage:
    name = "system-events"

    def __init__(self, ctx: SystemContext) -> None:
        self.ctx = ctx

    def load(self, session: Session, batch: Sequence[Candidate]) -> dict[str, SealPlan]:
        return plan_system_events(session, batch)

    def decide(self, batch: Sequence[Candidate], state: dict[str, SealPlan]) -> Decisions:
        events, hboms = decide_system_events(batch, state, self.ctx)
        table: Table = SealedHbom.__table__  # type: ignore[assignment]
        rows: list[tuple[Table, dict[str, Any]]] = [(table, dict(r)) for r in hboms]
        return Decisions(system=events, rows=rows)
