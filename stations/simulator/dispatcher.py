"""The dispatcher: sends a run's events through per-station emitters in causal order, and
obeys what the line is told (holds; conducted, routes, locks and the interlock).

Each station sends its own events in event-time order. An event is sent only after the events
it depends on were acknowledged (`dependencies`). A unit that must wait is parked: its events
are set aside (`backlog`) while the station goes on with the others, and one task per parked
unit (`_drain`) sends them, in order, once nothing stops it any more. What stops a unit:

- a hold (`command.hold`), at its next `unit.arrived`;
- conducted: a locked station (`command.lock`), at the unit's `unit.arrived` there;
- conducted: a gate, the planned repair visit of a failed unit, until linetrace's
  `command.route` for it came (`LinePlan.gates`); a route other than the plan's (a
  disposition, another step) drops the plan's rest of the unit and sends what
  `LinePlan.continue_unit` plans instead;
- conducted: the end of a unit's plan while it waits for a disposition (`LinePlan.awaiting`),
  until the disposition's `command.route` comes (its continuation is planned then);
- conducted, with an interlock: after each `unit.arrived`, until the interlock answers that
  the unit may start the step (IPC-CFX ValidateUnits); refused, it asks again when a command
  comes and every `retry_s` seconds;
- an event it depends on not yet acknowledged (a server waits for its PCBA, and for a PCBA it
  installs, already in front of the station that installs it).

The line clock is the highest event time sent so far (with `speed`, at least the paced
simulated now). A unit that was stopped by a hold, a lock, a gate or a refusal goes on at the
line clock's present if that is later than its plan: its later events are shifted by the
difference. A continuation starts at the line clock. Ids and bodies of planned events never
change; only the times of units that waited.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta

from .commands import Holds
from .conducted import AWAITING
from .line import LinePlan
from .sending import Dependencies, Emitter, Interlock, LineStatus, OnEvent
from .units import SimEvent

log = logging.getLogger(__name__)
_MS = timedelta(milliseconds=1)

__all__ = ["Dependencies", "Dispatcher", "Emitter", "Interlock", "LineStatus", "OnEvent"]

class Dispatcher:
    """Sends `stream` through per-station emitters, honouring dependencies, pacing, holds and,
    with a conducted `plan`, routes, locks and the `interlock`."""

    def __init__(self, stream: list[SimEvent], clients: Mapping[str, Emitter], *,
                 speed: float = 0.0, rate: float = 0.0, holds: Holds | None = None,
                 on_event: OnEvent | None = None, plan: LinePlan | None = None,
                 interlock: Interlock | None = None,
                 on_status: Callable[[LineStatus], None] | None = None,
                 retry_s: float = 1.0) -> None:
        self.stream = list(stream)
        self.dependencies = Dependencies()
        for ev in self.stream:
            self.dependencies.add(ev)
        self.deps = self.dependencies.deps
        self.clients = clients
        self.speed, self.rate = speed, rate
        self.holds = holds if holds is not None else Holds()
        self.on_event, self.on_status = on_event, on_status
        self.plan = plan
        self.conducted = plan is not None and plan.config.conducted
        self.interlock = interlock if self.conducted else None
        self.retry_s = retry_s
        self.settled = [asyncio.Event() for _ in self.stream]  # sent, or set aside
        self.acked = [asyncio.Event() for _ in self.stream]
        self.times = [e.time for e in self.stream]  # the times actually sent
        self.of_subject: dict[str, list[int]] = {}
        for i, ev in enumerate(self.stream):
            self.of_subject.setdefault(ev.subject, []).append(i)
        ids = {e.event_id: i for i, e in enumerate(self.stream)} if self.conducted else {}
        self.gates = {ids[e]: step for e, step in plan.gates.items() if e in ids} \
            if plan is not None and self.conducted else {}
        self.awaiting = set(plan.awaiting) if plan is not None and self.conducted else set()
        self.dropped: set[int] = set()
        self.backlog: dict[str, list[int]] = {}  # parked unit -> its events set aside
        self.parked: dict[str, str] = {}  # unit -> why it waits
        self.shift: dict[str, timedelta] = {}
        self.released: set[str] = set()  # waited: go on at the line clock's present
        self.last_sent: dict[str, int] = {}
        self.draining: dict[str, asyncio.Task[None]] = {}
        self.checks: dict[str, asyncio.Task[None]] = {}  # interlock: unit -> its check
        self.refused: dict[str, Sequence[str]] = {}
        self.pokes: dict[str, asyncio.Event] = {}
        self.changed = asyncio.Event()
        self.sent: Counter[str] = Counter()
        self.clock = self.stream[0].time if self.stream else None  # the line clock
        self.failure: BaseException | None = None
        self.stations_done = False
        self._reported: LineStatus | None = None
        self._next_slot = 0.0
        self._rate_lock = asyncio.Lock()
        self._t0 = 0.0
        self._origin = self.stream[0].time if self.stream else None
        self.holds.listeners.append(self._on_hold)
        self.holds.lock_listeners.append(self._on_lock)
        self.holds.route_listeners.append(self._on_route)

    # --- the line clock and pacing ---------------------------------------------------------

    def line_clock(self) -> datetime | None:
        if self.clock is None or self.speed <= 0 or self._origin is None:
            return self.clock
        paced = self._origin + timedelta(
            seconds=(asyncio.get_running_loop().time() - self._t0) * self.speed)
        return max(self.clock, paced)

    async def _pace(self, when: datetime) -> None:
        loop = asyncio.get_running_loop()
        if self.speed > 0 and self._origin is not None:
            due = self._t0 + (when - self._origin).total_seconds() / self.speed
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
        if self.rate > 0:
            async with self._rate_lock:
                wait = self._next_slot - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                self._next_slot = max(loop.time(), self._next_slot) + 1 / self.rate

    # --- what stops a unit -----------------------------------------------------------------

    def _blocked(self, i: int) -> str | None:
        """Why event `i` may not be sent now (a command or the interlock), None if it may."""
        ev = self.stream[i]
        unit = ev.subject
        if unit in self.checks:
            reasons = self.refused.get(unit)
            return "refused by the interlock: " + "; ".join(reasons) if reasons is not None \
                else "asking the interlock"
        if ev.event_type != "unit.arrived":
            return None
        if (why := self.holds.reason(unit)) is not None:
            return f"on hold ({why})"
        if self.conducted and (why := self.holds.locked(ev.station_id)) is not None:
            return f"station {ev.station_id} is locked ({why})"
        if i in self.gates and not self.holds.has_route(unit):
            return f"waits for linetrace's command.route (repair at step {self.gates[i]})"
        return None

    def _must_wait(self, i: int) -> bool:
        return (self.stream[i].subject in self.backlog or self._blocked(i) is not None
                or i in self.gates or any(not self.acked[d].is_set() for d in self.deps[i]))

    # --- sending ---------------------------------------------------------------------------

    async def _send(self, i: int) -> bool:
        """Send event `i` when its time comes; False if its unit was stopped meanwhile."""
        ev = self.stream[i]
        if ev.subject in self.released:  # it waited: it goes on at the line clock's present
            self.released.discard(ev.subject)
            now = self.line_clock()
            if now is not None and now > ev.time + self.shift.get(ev.subject, timedelta(0)):
                self.shift[ev.subject] = now - ev.time
        t = ev.time + self.shift.get(ev.subject, timedelta(0))
        for d in self.deps[i]:  # after whatever it waited for, even if that was shifted
            if self.times[d] >= t:
                self.shift[ev.subject] = self.times[d] + _MS - ev.time
                t = self.times[d] + _MS
        self.times[i] = t
        await self._pace(t)
        if self._blocked(i) is not None:
            return False
        client = self.clients[ev.station_id]
        value = await client.emit(ev.event_type, ev.subject, ev.body, time=t,
                                  event_id=ev.event_id)
        # `emit` returns once the event is in the station's spool; the events that depend on
        # this one (the unit's next step, often at another station) wait for the broker's ack,
        # so a unit's events reach its partition in order across stations.
        await client.flush()
        self.sent[ev.event_type] += 1
        self.last_sent[ev.subject] = i
        if self.clock is None or t > self.clock:
            self.clock = t
        if ev.event_type == "unit.arrived" and self.interlock is not None:
            self.checks[ev.subject] = asyncio.create_task(self._check(i), name=f"check-{ev.subject}")
        self.settled[i].set()
        self.acked[i].set()
        if ev.subject in self.awaiting and i == self.of_subject[ev.subject][-1]:
            self._drain_later(ev.subject)  # its plan ends here: it waits for a disposition
        if self.on_event is not None:
            self.on_event(ev, value)
        return True

    def _defer(self, i: int) -> None:
        unit = self.stream[i].subject
        bisect.insort(self.backlog.setdefault(unit, []), i)
        self.settled[i].set()
        self._drain_later(unit)
        self.changed.set()

    async def _station(self, events: list[int]) -> None:
        for i in events:
            for d in self.deps[i]:
                await self.settled[d].wait()
            if i in self.dropped:
                continue
            if self._must_wait(i) or not await self._send(i):
                self._defer(i)

    # --- parked units ----------------------------------------------------------------------

    def _drain_later(self, unit: str) -> None:
        if unit not in self.draining:
            self.parked.pop(unit, None)  # it moves, until its drain finds out otherwise
            self.draining[unit] = asyncio.create_task(self._drain(unit), name=f"drain-{unit}")

    async def _drain(self, unit: str) -> None:
        """Send a parked unit's events in order once nothing stops them; then, if its plan
        ended waiting for linetrace, what linetrace's route makes of it."""
        try:
            while True:
                backlog = self.backlog.get(unit)
                if not backlog:
                    if not self._continue(unit):
                        break
                    continue
                i = backlog[0]
                if i in self.dropped:
                    backlog.pop(0)
                    continue
                for d in self.deps[i]:
                    if not self.acked[d].is_set():
                        self.parked[unit] = f"waits for {self.stream[d].subject}"
                        self.changed.set()
                        await self.acked[d].wait()
                self.parked.pop(unit, None)
                if (why := self._blocked(i)) is not None:
                    self.parked[unit] = why
                    return
                if i in self.gates:
                    self._open_gate(i)
                    continue
                if await self._send(i):
                    backlog.pop(0)
            self.backlog.pop(unit, None)
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError) and self.failure is None:
                self.failure = e
            raise
        finally:
            self.draining.pop(unit, None)
            self.changed.set()

    def _open_gate(self, i: int) -> None:
        """The unit at gate `i` has a route: the plan's, or another (its rest is replaced)."""
        unit, step = self.stream[i].subject, self.gates.pop(i)
        route = self.holds.take_route(unit)
        assert route is not None
        if route.decision in ("rework", "repair") and route.step == step:
            log.info("unit %s routed to step %d (%s)", unit, step, route.reason)
            self.released.add(unit)
            return
        log.info("unit %s: linetrace decided %s to step %d (%s), not the planned repair at "
                 "step %d", unit, route.decision, route.step, route.reason, step)
        self._drop_from(unit, i)
        assert self.plan is not None and self.clock is not None
        self._append(unit, self.plan.continue_unit(
            unit, route.decision, route.step, route.reason, self.line_clock() or self.clock,
            gate=self.stream[i].event_id))
        self.awaiting.discard(unit)  # whatever the plan's rest ended in, this one decides
        if self.plan.unit(unit).outcome in AWAITING:
            self.awaiting.add(unit)

    def _continue(self, unit: str) -> bool:
        """A unit whose plan ended waiting for linetrace: plan what its route makes of it.
        False if it has none yet (it waits) or does not wait."""
        if unit not in self.awaiting or self.plan is None:
            return False
        mine = [j for j in self.of_subject[unit] if j not in self.dropped]
        if mine and not self.acked[mine[-1]].is_set():
            return False  # its last planned event is still on its way
        route = self.holds.take_route(unit)
        if route is None:
            what = self.plan.unit(unit).outcome.replace("awaiting_", "")
            self.parked[unit] = f"waits for linetrace's decision ({what})"
            return False
        self.parked.pop(unit, None)
        self.awaiting.discard(unit)
        log.info("unit %s: %s to step %d (%s)", unit, route.decision, route.step, route.reason)
        assert self.clock is not None
        self._append(unit, self.plan.continue_unit(unit, route.decision, route.step,
                                                   route.reason, self.line_clock() or self.clock))
        if self.plan.unit(unit).outcome in AWAITING:
            self.awaiting.add(unit)
        return True

    def _drop_from(self, unit: str, i: int) -> None:
        """Drop the unit's planned events from `i` on: never sent (dependants go on)."""
        last = self.last_sent.get(unit)
        for j in self.of_subject[unit]:
            if j >= i and not self.acked[j].is_set():
                self.dropped.add(j)
                self.gates.pop(j, None)
                if last is not None:
                    self.times[j] = self.times[last]
                self.settled[j].set()
                self.acked[j].set()
        self.backlog[unit] = [j for j in self.backlog.get(unit, []) if j not in self.dropped]

    def _append(self, unit: str, events: list[SimEvent]) -> None:
        """Park a continuation's events (receipts first) for the unit's drain to send."""
        if (last := self.last_sent.get(unit)) is not None:
            self.dependencies.last_of_subject[unit] = last
        self.shift.pop(unit, None)  # planned at the line clock: no shift
        self.released.discard(unit)
        backlog = self.backlog.setdefault(unit, [])
        for ev in events:
            i = len(self.stream)
            self.stream.append(ev)
            self.dependencies.add(ev)
            self.settled.append(asyncio.Event())
            self.acked.append(asyncio.Event())
            self.times.append(ev.time)
            self.of_subject.setdefault(ev.subject, []).append(i)
            backlog.append(i)
        self.changed.set()

    # --- the interlock ---------------------------------------------------------------------

    async def _check(self, i: int) -> None:
        """Ask the interlock whether the unit that arrived (event `i`) may start the step,
        until it says yes; then its parked events go on."""
        assert self.interlock is not None
        ev = self.stream[i]
        unit, step = ev.subject, getattr(ev.body, "step")
        told: Sequence[str] | None = None
        try:
            while True:
                poke = self.pokes[unit] = asyncio.Event()
                try:
                    allowed, reasons = await self.interlock(unit, step, ev.station_id,
                                                            ev.event_id)
                except Exception as e:  # the ledger may be restarting: ask again
                    allowed, reasons = False, [f"the interlock did not answer ({e})"]
                if allowed:
                    break
                if list(reasons) != told:
                    log.info("interlock: %s may not start step %d at %s: %s", unit, step,
                             ev.station_id, "; ".join(reasons))
                    told = list(reasons)
                self.refused[unit] = told
                self.parked[unit] = "refused by the interlock: " + "; ".join(told)
                self.changed.set()
                try:
                    await asyncio.wait_for(poke.wait(), self.retry_s)
                except TimeoutError:
                    pass
        except BaseException as e:
            if not isinstance(e, asyncio.CancelledError) and self.failure is None:
                self.failure = e
            raise
        finally:
            self.pokes.pop(unit, None)
            self.checks.pop(unit, None)
            self.changed.set()
        if self.refused.pop(unit, None) is not None:
            self.released.add(unit)  # it stood at the station: it starts at the present
        self.parked.pop(unit, None)
        if unit in self.backlog:
            self._drain_later(unit)

    def _poke(self, unit: str) -> None:
        if (poke := self.pokes.get(unit)) is not None:
            poke.set()

    # --- commands --------------------------------------------------------------------------

    def _on_hold(self, unit: str, held: bool) -> None:
        log.info("unit %s %s", unit, "held" if held else "released")
        if not held and unit in self.backlog:
            self.released.add(unit)
            self._drain_later(unit)
        self._poke(unit)
        self.changed.set()

    def _on_lock(self, station: str, locked: bool) -> None:
        log.info("station %s %s", station, "locked" if locked else "unlocked")
        if not locked:
            for unit, backlog in list(self.backlog.items()):
                if backlog and self.stream[backlog[0]].station_id == station:
                    self.released.add(unit)
                    self._drain_later(unit)
        for unit in list(self.pokes):
            self._poke(unit)
        self.changed.set()

    def _on_route(self, unit: str) -> None:
        self._poke(unit)
        if unit in self.backlog or unit in self.awaiting:
            self._drain_later(unit)
        self.changed.set()

    # --- the run ---------------------------------------------------------------------------

    def status(self) -> LineStatus:
        """Idle: the stations went through their events and every unit left is parked (a
        command, a person, or a unit that does, holds it)."""
        busy = any(u not in self.parked for u in self.draining) or any(
            u not in self.refused for u in self.checks)
        waiting = dict(self.parked)
        return LineStatus(idle=self.stations_done and not busy, waiting=waiting)

    def _report(self) -> None:
        if self.on_status is None:
            return
        now = self.status()
        if now != self._reported:
            self._reported = now
            self.on_status(now)

    def _unfinished(self) -> bool:
        return bool(self.backlog or self.draining or self.checks or self.awaiting)

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
            self.stations_done = True
            waiting_logged: set[str] = set()
            while self._unfinished():
                if self.failure is not None:
                    raise self.failure
                self._report()
                status = self.status()
                if status.idle and set(status.waiting) != waiting_logged:
                    held = sorted(u for u, w in status.waiting.items() if w.startswith("on hold"))
                    if held:
                        log.warning("%d unit(s) on hold (%s); waiting for command.release",
                                    len(held), ", ".join(held))
                    if others := {u: w for u, w in status.waiting.items() if u not in held}:
                        log.warning("%d unit(s) wait for linetrace or a person: %s", len(others),
                                    "; ".join(f"{u} {w}" for u, w in sorted(others.items())))
                    waiting_logged = set(status.waiting)
                self.changed.clear()
                await self.changed.wait()
            if self.failure is not None:
                raise self.failure
            self._report()
        finally:
            for t in [*tasks, *self.draining.values(), *self.checks.values()]:
                t.cancel()
            await asyncio.gather(*tasks, *self.draining.values(), *self.checks.values(),
                                 return_exceptions=True)
            self.holds.listeners.remove(self._on_hold)
            self.holds.lock_listeners.remove(self._on_lock)
            self.holds.route_listeners.remove(self._on_route)
        return self.sent
