"""Sends a simulated run to the broker: one StationClient per station, events in causal order.

Each station sends its own events in event-time order (so without holds its `stationseq`
numbering is the same on every run of a seed). An event is sent only after the events it
depends on were acknowledged: the unit's previous event (one unit's events reach its partition
in order, even when consecutive ones come from different stations), the receipt of every lot it
installs, and the last event of a sub-assembly it installs. `speed` > 0 paces sending to
simulated time / speed and `rate` caps events per second; neither changes an event.

Holds (`line.commands`, see `commands.py`) and the simulated clock:
- a hold takes effect at the unit's next `unit.arrived`: a unit in the middle of an operation
  finishes it and leaves the station, then waits in front of the next one and sends nothing;
- the line goes on: the station skips the held unit's events and sends the other units';
  a unit that depends on a held one (a server waiting for its PCBA) waits with it;
- the line clock is the highest event time sent so far (at `speed` > 0, at least the paced
  simulated now). On release the unit arrives at the line clock's present, if that is later
  than its planned arrival: every later event of the unit, and of units that waited for it,
  is shifted by the time it was held on the line clock. Ids and bodies never change; a run
  with a hold is reproducible except for the shifted times of the held unit (and its
  dependants). A shifted unit may share a station lane with another for a while: the
  schedule was planned without the hold.
- the run ends when every unit has sent its last event: a unit held until the end keeps the
  simulator waiting for its release (stop it with Ctrl-C / SIGTERM).
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from linetrace.schemas.bodies import Body, MaterialsInstalled

from ..errors import StationError
from .commands import Holds, LineCommands
from .line import LineConfig, LinePlan, LineSummary, generate_line
from .units import SimEvent

log = logging.getLogger(__name__)

OnEvent = Callable[[SimEvent, bytes], None]
_MS = timedelta(milliseconds=1)


class Emitter(Protocol):
    """What the runner needs of a StationClient."""

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes: ...

    async def flush(self) -> None:
        """Return once the broker has acknowledged everything emitted so far."""


def dependencies(stream: list[SimEvent]) -> list[tuple[int, ...]]:
    """For each event, the indexes (all earlier) of the events that must be acknowledged first."""
    last_of_subject: dict[str, int] = {}
    receipt_of_lot: dict[str, int] = {}
    deps: list[tuple[int, ...]] = []
    for i, ev in enumerate(stream):
        need: set[int] = set()
        if ev.event_type == "material.received":
            receipt_of_lot[ev.subject] = i
        elif ev.subject in last_of_subject:
            need.add(last_of_subject[ev.subject])
        if isinstance(ev.body, MaterialsInstalled):
            for item in ev.body.items:
                if item.lot in receipt_of_lot:
                    need.add(receipt_of_lot[item.lot])
                if item.serial is not None and item.serial in last_of_subject:
                    need.add(last_of_subject[item.serial])
        if ev.event_type != "material.received":
            last_of_subject[ev.subject] = i
        deps.append(tuple(sorted(need)))
    return deps


class Dispatcher:
    """Sends `stream` through per-station emitters, honouring dependencies, pacing and holds."""

    def __init__(self, stream: list[SimEvent], clients: Mapping[str, Emitter], *,
                 speed: float = 0.0, rate: float = 0.0, holds: Holds | None = None,
                 on_event: OnEvent | None = None) -> None:
        self.stream = stream
        self.deps = dependencies(stream)
        self.clients = clients
        self.speed, self.rate = speed, rate
        self.holds = holds if holds is not None else Holds()
        self.on_event = on_event
        self.settled = [asyncio.Event() for _ in stream]  # sent, or set aside for a held unit
        self.acked = [asyncio.Event() for _ in stream]
        self.times = [e.time for e in stream]  # the times actually sent (shifted after a hold)
        self.backlog: dict[str, list[int]] = {}  # parked unit -> its events set aside
        self.shift: dict[str, timedelta] = {}
        self.released: set[str] = set()  # parked units that were held: re-enter at the present
        self.draining: dict[str, asyncio.Task[None]] = {}
        self.changed = asyncio.Event()
        self.sent: Counter[str] = Counter()
        self.clock = stream[0].time if stream else None  # the line clock
        self.failure: BaseException | None = None
        self._next_slot = 0.0
        self._rate_lock = asyncio.Lock()
        self._t0 = 0.0
        self.holds.listeners.append(self._on_hold)

    # --- the line clock and pacing ---------------------------------------------------------

    def line_clock(self) -> datetime | None:
        if self.clock is None or self.speed <= 0 or not self.stream:
            return self.clock
        paced = self.stream[0].time + timedelta(
            seconds=(asyncio.get_running_loop().time() - self._t0) * self.speed)
        return max(self.clock, paced)

    async def _pace(self, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        if self.speed > 0:
            due = self._t0 + (when - self.stream[0].time).total_seconds() / self.speed
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
        if self.rate > 0:
            async with self._rate_lock:
                wait = self._next_slot - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._next_slot = max(loop.time(), self._next_slot) + 1 / self.rate

    # --- sending ---------------------------------------------------------------------------

    async def _send(self, i: int) -> bool:
        """Send event `i` when its time comes; False if its unit was held meanwhile."""
        ev = self.stream[i]
        t = ev.time + self.shift.get(ev.subject, timedelta(0))
        for d in self.deps[i]:  # after whatever it waited for, even if that was shifted
            if self.times[d] >= t:
                self.shift[ev.subject] = self.times[d] + _MS - ev.time
                t = self.times[d] + _MS
        self.times[i] = t
        await self._pace(t)
        if ev.event_type == "unit.arrived" and ev.subject in self.holds:
            return False
        client = self.clients[ev.station_id]
        value = await client.emit(ev.event_type, ev.subject, ev.body, time=t,
                                  event_id=ev.event_id)
        # `emit` returns once the event is in the station's spool; the events that depend on
        # this one (the unit's next step, often at another station) wait for the broker's ack,
        # so a unit's events reach its partition in order across stations.
        await client.flush()
        self.sent[ev.event_type] += 1
        if self.clock is None or t > self.clock:
            self.clock = t
        self.settled[i].set()
        self.acked[i].set()
        if self.on_event is not None:
            self.on_event(ev, value)
        return True

    def _defer(self, i: int) -> None:
        unit = self.stream[i].subject
        bisect.insort(self.backlog.setdefault(unit, []), i)
        self.settled[i].set()
        if unit not in self.holds:
            self._drain_later(unit)
        self.changed.set()

    def _must_wait(self, i: int) -> bool:
        ev = self.stream[i]
        return (ev.subject in self.backlog
                or (ev.event_type == "unit.arrived" and ev.subject in self.holds)
                or any(not self.acked[d].is_set() for d in self.deps[i]))

    async def _station(self, events: list[int]) -> None:
        for i in events:
            for d in self.deps[i]:
                await self.settled[d].wait()
            if self._must_wait(i) or not await self._send(i):
                self._defer(i)

    # --- holds -----------------------------------------------------------------------------

    def _on_hold(self, unit: str, held: bool) -> None:
        log.info("unit %s %s", unit, "held" if held else "released")
        if not held and unit in self.backlog:
            self.released.add(unit)
            self._drain_later(unit)
        self.changed.set()

    def _drain_later(self, unit: str) -> None:
        if unit not in self.draining:
            self.draining[unit] = asyncio.create_task(self._drain(unit), name=f"drain-{unit}")

    async def _drain(self, unit: str) -> None:
        """Send a parked unit's events in order once what they wait for is sent."""
        try:
            backlog = self.backlog[unit]
            while backlog:
                i = backlog[0]
                ev = self.stream[i]
                for d in self.deps[i]:
                    await self.acked[d].wait()
                if ev.event_type == "unit.arrived" and unit in self.holds:
                    return  # held again: stays parked until the next release
                if ev.event_type == "unit.arrived" and unit in self.released:
                    self.released.discard(unit)
                    now = self.line_clock()
                    planned = ev.time + self.shift.get(unit, timedelta(0))
                    if now is not None and now > planned:
                        self.shift[unit] = now - ev.time
                if not await self._send(i):
                    return  # held again while it waited for its time
                backlog.pop(0)
            del self.backlog[unit]
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError) and self.failure is None:
                self.failure = e
            raise
        finally:
            self.draining.pop(unit, None)
            self.changed.set()

    # --- the run ---------------------------------------------------------------------------

    async def run(self) -> Counter[str]:
        self._t0 = asyncio.get_running_loop().time()
        queues: dict[str, list[int]] = {}
        for i, ev in enumerate(self.stream):
            queues.setdefault(ev.station_id, []).append(i)
        tasks = [asyncio.create_task(self._station(q), name=f"station-{s}")
                 for s, q in sorted(queues.items())]
        try:
            if tasks:
                done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
                for t in done:
                    if (exc := t.exception()) is not None:
                        raise exc
            waiting_logged = False
            while self.backlog or self.draining:
                if self.failure is not None:
                    raise self.failure
                if not self.draining and not waiting_logged:
                    log.warning("%d unit(s) on hold (%s); waiting for command.release",
                                len(self.backlog), ", ".join(sorted(self.backlog)))
                    waiting_logged = True
                self.changed.clear()
                await self.changed.wait()
            if self.failure is not None:
                raise self.failure
        finally:
            for t in [*tasks, *self.draining.values()]:
                t.cancel()
            await asyncio.gather(*tasks, *self.draining.values(), return_exceptions=True)
            self.holds.listeners.remove(self._on_hold)
        return self.sent


async def run_line(
    config: LineConfig,
    keys: Mapping[str, Ed25519PrivateKey],
    bootstrap: str,
    state_dir: Path,
    *,
    on_event: OnEvent | None = None,
    plant_key: Ed25519PublicKey | None = None,
    holds: Holds | None = None,
    plan: LinePlan | None = None,
) -> LineSummary:
    """Simulate `config` and send every event, signed by its station's key, to `bootstrap`.

    `keys` maps station id -> private key (see `station_roster`); each station keeps its
    `stationseq` state in `state_dir / <station id>`. With `plant_key`, the stations obey the
    plant-signed commands on `line.commands`. `plan`: `generate_line(config)` if already made.
    Returns what was sent.
    """
    from ..client import StationClient

    plan = plan if plan is not None else generate_line(config)
    stream = plan.stream()
    stations = sorted({e.station_id for e in stream})
    missing = [s for s in stations if s not in keys]
    if missing:
        raise StationError(
            f"no private key for station(s) {', '.join(missing)}; enrol them first "
            "(`linetrace stations enroll ID --type T --public-key FILE`)",
            code="station.no_key",
        )
    holds = holds if holds is not None else Holds()
    clients = {s: StationClient(s, keys[s], bootstrap, state_dir / s) for s in stations}
    commands: asyncio.Task[None] | None = None
    if plant_key is not None:
        listener = LineCommands(bootstrap, plant_key, holds, stations=stations)
        commands = asyncio.create_task(listener.run(), name="line-commands")
    started: list[StationClient] = []
    try:
        for c in clients.values():
            await c.start()
            started.append(c)
        dispatcher = Dispatcher(stream, clients, speed=config.speed, rate=config.rate,
                                holds=holds, on_event=on_event)
        sent = await dispatcher.run()
    finally:
        if commands is not None:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
    log.info("line run seed %d: %d events sent for %d units", config.seed, sum(sent.values()),
             config.units)
    return plan.summary(dict(sent))
