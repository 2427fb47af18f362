"""What sending a run needs besides the dispatcher: the emitters' protocol, the dependencies
between events, the interlock's signature and the run's status.

Dependencies: an event is sent only after the events it depends on were acknowledged: its
subject's previous event (one unit's events reach its partition in order, even when
consecutive ones come from different stations), the receipt of every lot it installs, and the
last event of a sub-assembly it installs (which the installing unit's `unit.arrived` waits
for too, so a server waits for its PCBA in front of the station that installs it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from linetrace.schemas.bodies import Body, MaterialsInstalled

from .units import SimEvent

OnEvent = Callable[[SimEvent, bytes], None]
#: (serial, step, station id, id of the unit.arrived event) -> (allowed, reasons).
Interlock = Callable[[str, int, str, str], Awaitable[tuple[bool, Sequence[str]]]]


class Emitter(Protocol):
    """What the runner needs of a StationClient."""

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes: ...

    async def flush(self) -> None:
        """Return once the broker has acknowledged everything emitted so far."""


@dataclass(frozen=True)
class LineStatus:
    """Where a run stands. `idle`: nothing is left to send but what waits on a command or a
    person (or on a unit that does); `waiting`: unit -> why it waits."""

    idle: bool
    waiting: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, object]:
        return {"idle": self.idle, "waiting": dict(sorted(self.waiting.items()))}


class Dependencies:
    """For each event added, the indexes (all earlier) of the events to be acknowledged first:
    the subject's previous event, the receipt of every lot it installs, and the last event of a
    sub-assembly it installs (which the installing unit's `unit.arrived` waits for too)."""

    def __init__(self) -> None:
        self.deps: list[tuple[int, ...]] = []
        self.last_of_subject: dict[str, int] = {}
        self.receipt_of_lot: dict[str, int] = {}
        self.arrival_of: dict[str, int] = {}

    def add(self, ev: SimEvent) -> tuple[int, ...]:
        i = len(self.deps)
        need: set[int] = set()
        if ev.event_type == "material.received":
            self.receipt_of_lot[ev.subject] = i
        elif ev.subject in self.last_of_subject:
            need.add(self.last_of_subject[ev.subject])
        if isinstance(ev.body, MaterialsInstalled):
            for item in ev.body.items:
                if item.lot in self.receipt_of_lot:
                    need.add(self.receipt_of_lot[item.lot])
                if item.serial is not None and item.serial in self.last_of_subject:
                    built = self.last_of_subject[item.serial]
                    need.add(built)
                    arrived = self.arrival_of.get(ev.subject)
                    if arrived is not None and built < arrived:
                        self.deps[arrived] = tuple(sorted({*self.deps[arrived], built}))
        if ev.event_type != "material.received":
            self.last_of_subject[ev.subject] = i
        if ev.event_type == "unit.arrived":
            self.arrival_of[ev.subject] = i
        self.deps.append(tuple(sorted(need)))
        return self.deps[i]


def dependencies(stream: list[SimEvent]) -> list[tuple[int, ...]]:
    """For each event, the indexes (all earlier) of the events that must be acknowledged first."""
    d = Dependencies()
    for ev in stream:
        d.add(ev)
    return d.deps


