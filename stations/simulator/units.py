"""The simulated units and the recorder that writes their events on the simulated clock.

Event times are milliseconds after the run's start on a simulated clock; event ids are UUIDs
drawn from a seeded `random.Random`. Nothing here reads the wall clock or `uuid4`, so a seed
reproduces every event exactly.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Literal, NamedTuple

from linetrace.schemas.bodies import Body

from .parts import Lot
from .products import Kind

FailureKind = Literal["solder", "component", "gpu", "functional"]


class SimEvent(NamedTuple):
    """One event a station will emit, exactly as the StationClient gets it."""

    station_id: str
    event_type: str
    subject: str
    body: Body
    time: datetime
    event_id: str


@dataclass(frozen=True)
class Failure:
    """Why a unit goes to repair, and what the repair must do."""

    step: int
    defect: str
    kind: FailureKind
    note: str
    ref: str | None = None  # board component to replace (ICT)
    slots: tuple[int, ...] = ()  # GPU slots to replace (burn-in)


@dataclass
class Unit:
    """A server or a sub-assembly (the mainboard PCBA) moving along its route."""

    serial: str
    kind: Kind
    product: str
    work_order: str
    build: int  # index of the server build this unit belongs to
    order: int  # creation order: the tie-break when two events share a time
    number: int = 0  # 1-based: the n-th server, or the n-th PCBA, of the run
    events: list[SimEvent] = field(default_factory=list)
    last_ms: int = -1
    route_index: int = 0
    failure: Failure | None = None
    repairs: dict[int, int] = field(default_factory=dict)  # step -> repairs done for it
    visits: dict[int, int] = field(default_factory=dict)  # step -> times started
    outcome: str = "in_progress"
    # sub-assembly: lots placed per reference designator group
    placed: dict[str, Lot] = field(default_factory=dict)
    # server: the kit picked at kitting (category -> serials) and what is installed
    kit: dict[str, list[tuple[str, Lot]]] = field(default_factory=dict)
    installed: dict[str, str] = field(default_factory=dict)  # category -> serial (count 1 parts)
    gpus: dict[int, tuple[str, Lot]] = field(default_factory=dict)
    mainboard: Unit | None = None  # the sub-assembly built on this line for it

    def snapshot(self) -> Unit:
        """A copy of the unit as it is now (containers copied): what it can go back to."""
        return replace(self, events=list(self.events), repairs=dict(self.repairs),
                       visits=dict(self.visits), placed=dict(self.placed),
                       kit={c: list(v) for c, v in self.kit.items()},
                       installed=dict(self.installed), gpus=dict(self.gpus))

    def restore(self, snapshot: Unit) -> None:
        """Go back to `snapshot` (which stays as it is)."""
        copy = snapshot.snapshot()
        for f in fields(self):
            setattr(self, f.name, getattr(copy, f.name))


class Recorder:
    """Stamps events with simulated times and seeded ids."""

    def __init__(self, start: datetime, ids: random.Random) -> None:
        self.start = start
        self._ids = ids

    def new_id(self) -> str:
        return str(uuid.UUID(int=self._ids.getrandbits(128), version=4))

    def time_at(self, ms: int) -> datetime:
        return self.start + timedelta(milliseconds=ms)

    def add(self, unit: Unit, ms: int, station_id: str, event_type: str, body: Body) -> None:
        if ms <= unit.last_ms:
            raise AssertionError(f"{unit.serial}: event at {ms} ms is not after {unit.last_ms} ms")
        unit.last_ms = ms
        unit.events.append(
            SimEvent(station_id, event_type, unit.serial, body, self.time_at(ms), self.new_id())
        )

    def event(self, ms: int, station_id: str, event_type: str, subject: str, body: Body) -> SimEvent:
        return SimEvent(station_id, event_type, subject, body, self.time_at(ms), self.new_id())
