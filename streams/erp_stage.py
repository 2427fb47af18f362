"""The ERP stage: what ERP must hear about the batch, into the outbox (`erp.outbound`).

Yield confirmations, goods receipts at pack, scrap, and hold/release notices per unit, as
`linetrace.ledger.erp` decides them: `load` reads what they need from the ledger (a few
queries, and none for a batch that holds no event ERP hears about), `decide` builds the
messages from that alone. It runs after the other stages, so it also sees the system events
they decided (a `unit.sealed`, a `hold.placed`) in the next round of the same transaction.

The messages are written in the batch transaction with ids derived from their causes: a batch
redone after a crash enqueues nothing new, and the relay publishes each message at least once
with the same `linetrace-message-id` and the same bytes.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy.orm import Session

from linetrace.ledger.erp import ErpState, decide_messages, load_state
from linetrace.ledger.records import Candidate
from linetrace.schemas.routes import RouteBook

from .stages import NO_DECISIONS, Decisions


class ErpStage:
    name = "erp"

    def __init__(self, routes: RouteBook | None = None) -> None:
        self.routes = routes  # None: the routes the writer put in force for the batch

    def load(self, session: Session, batch: Sequence[Candidate]) -> ErpState:
        return load_state(session, [c.event for c in batch], self.routes)

    def decide(self, batch: Sequence[Candidate], state: ErpState) -> Decisions:
        messages = decide_messages([c.event for c in batch], state)
        return Decisions(messages=messages) if messages else NO_DECISIONS
