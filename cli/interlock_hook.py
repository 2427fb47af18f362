"""The simulator's interlock in a conducted run: linetrace's answer to "may unit S start step N
at station X?" (IPC-CFX ValidateUnits), asked by the simulated station after each arrival.

The answer must include what linetrace decided about that arrival (a route violation holds
the unit), so it waits until the ledger has the arrival event itself: the worker stores an
event and the route stage's decisions about it in one transaction. Then it asks
`linetrace.ledger.interlock.validate`, as `linetrace validate` does. An arrival that ingest
rejected is answered no, with the reason: it will never be stored.

The simulator (`linetrace.stations`) must not import the ledger; it takes this as a callable
(`stations.simulator.dispatcher.Interlock`). Reads run in a worker thread, so the simulator's
event loop keeps sending the other units' events meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, Rejected
from linetrace.schemas.routes import RouteBook

#: How often the ledger is asked whether the arrival is stored yet.
POLL_S = 0.15


class LedgerInterlock:
    """`await interlock(serial, step, station, arrival_event_id)` -> (allowed, reasons)."""

    def __init__(self, ledger: Ledger, routes: RouteBook, *, poll_s: float = POLL_S) -> None:
        self.ledger, self.routes, self.poll_s = ledger, routes, poll_s

    async def __call__(self, serial: str, step: int, station: str, arrival: str
                       ) -> tuple[bool, Sequence[str]]:
        while True:
            stored, rejected = await asyncio.to_thread(self._arrival, station, arrival)
            if stored:
                break
            if rejected is not None:
                return False, [f"arrival.rejected: the arrival {arrival} from {station} was "
                               f"rejected by ingest ({rejected}); it will never be stored"]
            await asyncio.sleep(self.poll_s)
        return await asyncio.to_thread(self._validate, serial, step, station)

    def _arrival(self, station: str, arrival: str) -> tuple[bool, str | None]:
        """(stored, why it was rejected if it was)."""
        with self.ledger.reader() as s:
            if s.scalar(select(EventRow.seq).where(EventRow.source == station,
                                                   EventRow.event_id == arrival)) is not None:
                return True, None
            why = s.execute(select(Rejected.code, Rejected.message).where(
                Rejected.source == station, Rejected.event_id == arrival).limit(1)).first()
            return False, None if why is None else f"{why[0]}: {why[1]}"

    def _validate(self, serial: str, step: int, station: str) -> tuple[bool, list[str]]:
        from linetrace.ledger.interlock import validate

        with self.ledger.reader() as s:
            verdict = validate(s, serial, step, station, routes=self.routes)
        return verdict.allowed, [f"{r.code}: {r.message}" for r in verdict.reasons]
