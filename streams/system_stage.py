"""The first stage: the system events the plant itself answers with.

`material.received` -> `material.checked` (the receipt against the approved vendor list) and
`unit.packed` -> `unit.sealed` (the frozen HBOM and the chain heads it covers). The ledger
knows how to build them (`linetrace.ledger.system_events`); as a stage, a failure to build
one (say, a bug in HBOM generation) never dead-letters the valid event that caused it: the
event is stored, the failure recorded, and the seal retried.

A seal covers its unit's chain up to the `unit.packed` and each sub-assembly's chain up to the
event its install names. If the worker has not read that event yet (the board's partition is
behind the server's), `decide` returns a pending row instead of the seal; `load` finds the
pending seals that the events of a later batch wait for, plans them again, and `decide` then
returns the seal, with the id, time and bytes it would have had without the wait.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import (
    SystemContext,
    SystemPlans,
    decide_system_events,
    plan_system_events,
)

from .stages import Decisions


class SystemEventsStage:
    name = "system-events"

    def __init__(self, ctx: SystemContext) -> None:
        self.ctx = ctx

    def load(self, session: Session, batch: Sequence[Candidate]) -> SystemPlans:
        return plan_system_events(session, batch)

    def decide(self, batch: Sequence[Candidate], state: SystemPlans) -> Decisions:
        events, rows = decide_system_events(batch, state, self.ctx)
        return Decisions(system=events, rows=rows)
