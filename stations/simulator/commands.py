"""A conducted line obeys `line.commands`: holds, releases, routes and locks.

`LineCommands` reads every partition of `line.commands` from the beginning (a hold published
before the run started still applies) with a plain aiokafka consumer, keeps only commands that
carry a valid signature of the plant key, come from source `linetrace` and are addressed to one
of the simulator's stations (the Kafka key), and applies them to `Holds`, what the line was
told:

- `command.hold` / `command.release`: a unit is held while any hold on it is in force. A hold
  is known by its `hold_id`: once released it stays released (a late copy of its
  `command.hold`, read from another partition, is ignored). Commands without a hold id are
  ordered by event time: one older than the last applied for its unit is ignored.
- `command.lock`: a station is locked while any lock on it is in force, by the same rules
  (per hold id; without one, by time per station).
- `command.route`: kept per unit, oldest first, until the runner carries it
  out (`take_route`); a copy with an event id already seen is ignored. A disposition
  (`scrap`, `repair`, `use-as-is`) that names the hold it ended releases that hold.

The simulator treats a hold addressed to any of its stations as a hold of the unit on the
whole line: it is one line. How commands meet the simulated clock is the runner's business
(see `runner.py` and `dispatcher.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from linetrace.schemas.bodies import CommandHold, CommandLock, CommandRelease, CommandRoute
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_event, parse_time
from linetrace.schemas.errors import ForgedEvent, MalformedEvent
from linetrace.schemas.signing import keyid_of, read_signature, verify_value
from linetrace.schemas.topics import ALL_TOPICS, COMMANDS

log = logging.getLogger(__name__)

Listener = Callable[[str, bool], None]  # (unit or station, held / locked now)
RouteListener = Callable[[str], None]  # unit
DISPOSITIONS = frozenset({"scrap", "repair", "use-as-is"})


@dataclass
class _InForce:
    """Holds (or locks) of one unit (or station), by hold id (None: a command without one)."""

    reasons: dict[str | None, str] = field(default_factory=dict)
    ended: set[str] = field(default_factory=set)  # hold ids released: they stay released
    last: datetime | None = None  # time of the last command without a hold id

    def place(self, hold_id: str | None, reason: str, when: datetime | None) -> bool:
        """Apply a hold/lock; False if it is stale (ended, or older than the last)."""
        if hold_id is not None:
            if hold_id in self.ended:
                return False
        elif not self._newest(when):
            return False
        self.reasons[hold_id] = reason
        return True

    def end(self, hold_id: str | None, when: datetime | None) -> bool:
        """Apply a release/unlock; False if it is stale. A release naming a hold also ends a
        hold placed without an id (there is nothing else to match it by)."""
        if hold_id is not None:
            self.ended.add(hold_id)
            self.reasons.pop(hold_id, None)
            self.reasons.pop(None, None)
            return True
        if not self._newest(when):
            return False
        self.reasons.clear()
        return True

    def _newest(self, when: datetime | None) -> bool:
        if when is None:
            return True
        if self.last is not None and when < self.last:
            return False
        self.last = when
        return True


@dataclass
class Holds:
    """What the line was told: held units, locked stations and routes not yet carried out.
    Listeners hear every change: `listeners` (unit, held now), `lock_listeners` (station,
    locked now), `route_listeners` (unit with a new route)."""

    units: dict[str, _InForce] = field(default_factory=dict)
    stations: dict[str, _InForce] = field(default_factory=dict)
    routes: dict[str, list[CommandRoute]] = field(default_factory=dict)
    route_ids: set[str] = field(default_factory=set)
    listeners: list[Listener] = field(default_factory=list)
    lock_listeners: list[Listener] = field(default_factory=list)
    route_listeners: list[RouteListener] = field(default_factory=list)

    def __contains__(self, unit: object) -> bool:
        return isinstance(unit, str) and bool(self.units.get(unit, _InForce()).reasons)

    def reason(self, unit: str) -> str | None:
        """Why the unit is held (its holds' reasons), None if it is not."""
        held = self.units.get(unit)
        return "; ".join(sorted(held.reasons.values())) if held and held.reasons else None

    def locked(self, station: str) -> str | None:
        """Why the station is locked, None if it is not."""
        lock = self.stations.get(station)
        return "; ".join(sorted(lock.reasons.values())) if lock and lock.reasons else None

    def hold(self, unit: str, reason: str, hold_id: str | None = None,
             when: datetime | None = None) -> bool:
        """Hold `unit`; False if the command was stale and ignored."""
        return self._change(self.units, self.listeners, unit, True, hold_id, reason, when)

    def release(self, unit: str, hold_id: str | None = None, when: datetime | None = None) -> bool:
        """End the hold `hold_id` on `unit` (None: every hold on it); False if stale."""
        return self._change(self.units, self.listeners, unit, False, hold_id, "", when)

    def lock(self, station: str, locked: bool, reason: str, hold_id: str | None = None,
             when: datetime | None = None) -> bool:
        return self._change(self.stations, self.lock_listeners, station, locked, hold_id,
                            reason, when)

    def route(self, command: CommandRoute, event_id: str | None = None) -> bool:
        """Keep a route for the runner; False for a copy already seen. A disposition that
        names its hold releases it."""
        if event_id is not None:
            if event_id in self.route_ids:
                return False
            self.route_ids.add(event_id)
        if command.decision in DISPOSITIONS and command.hold_id is not None:
            self.release(command.unit, command.hold_id)
        self.routes.setdefault(command.unit, []).append(command)
        for listen in self.route_listeners:
            listen(command.unit)
        return True

    def has_route(self, unit: str) -> bool:
        return bool(self.routes.get(unit))

    def take_route(self, unit: str) -> CommandRoute | None:
        """The oldest route for `unit` not yet carried out (removed), or None."""
        pending = self.routes.get(unit)
        if not pending:
            return None
        route = pending.pop(0)
        if not pending:
            del self.routes[unit]
        return route

    @staticmethod
    def _change(table: dict[str, _InForce], listeners: list[Listener], key: str, on: bool,
                hold_id: str | None, reason: str, when: datetime | None) -> bool:
        state = table.setdefault(key, _InForce())
        before = bool(state.reasons)
        applied = state.place(hold_id, reason, when) if on else state.end(hold_id, when)
        after = bool(state.reasons)
        if before != after:
            for listen in listeners:
                listen(key, after)
        return applied


class LineCommands:
    """Applies plant-signed commands from `line.commands` to `holds` (a conducted line)."""

    def __init__(self, bootstrap: str, plant_key: Ed25519PublicKey, holds: Holds, *,
                 stations: Collection[str], poll_ms: int = 200,
                 topic_poll_s: float = 0.5) -> None:
        self.bootstrap = bootstrap
        self.plant_key = plant_key
        self.keyid = keyid_of(plant_key)
        self.holds = holds
        self.stations = frozenset(stations)
        self.poll_ms = poll_ms
        self.topic_poll_s = topic_poll_s

    def apply(self, value: bytes, headers: Sequence[tuple[str, bytes]] | None) -> str:
        """Verify and apply one record; returns what was done (for logs and tests)."""
        try:
            keyid, signature = read_signature(headers)
            if keyid != self.keyid:
                return f"ignored: signed by key {keyid}, not the plant's {self.keyid}"
            verify_value(value, signature, self.plant_key)
            event = decode_event(value)
        except (ForgedEvent, MalformedEvent) as e:
            return f"ignored: {e}"
        body = event.body
        if event.source != SYSTEM_SOURCE or not isinstance(
                body, (CommandHold, CommandRelease, CommandRoute, CommandLock)):
            return f"ignored: {event.type} from {event.source} is not a line command"
        if event.subject not in self.stations:
            return f"ignored: addressed to {event.subject}, not a simulated station"
        when = parse_time(event.envelope.time)
        if isinstance(body, CommandRoute):
            if not self.holds.route(body, event.id):
                return f"ignored: {event.type} {event.id} was already applied"
            return f"route {body.unit} to step {body.step} ({body.decision}: {body.reason})"
        if isinstance(body, CommandLock):
            what = "lock" if body.locked else "unlock"
            if not self.holds.lock(body.station, body.locked, body.reason, body.hold_id, when):
                return f"ignored: {event.type} for {body.station} is stale"
            return f"{what} {body.station} ({body.reason})"
        if isinstance(body, CommandHold):
            if not self.holds.hold(body.unit, body.reason, body.hold_id, when):
                return f"ignored: {event.type} for {body.unit} is stale (older than its last " \
                       "command, or its hold was released)"
            return f"hold {body.unit} ({body.reason})"
        if not self.holds.release(body.unit, body.hold_id, when):
            return f"ignored: {event.type} for {body.unit} is older than its last command"
        return f"release {body.unit} ({body.reason})"

    async def run(self) -> None:
        """Consume until cancelled."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        consumer = AIOKafkaConsumer(bootstrap_servers=self.bootstrap, enable_auto_commit=False,
                                    auto_offset_reset="earliest",
                                    client_id="linetrace-simulator-commands")
        await consumer.start()
        try:
            want = ALL_TOPICS[COMMANDS]
            while True:  # never consume a topic whose partition count differs (CONTRACTS.md)
                await consumer.topics()
                found = len(consumer.partitions_for_topic(COMMANDS) or ())
                if found == want:
                    break
                log.warning("waiting for topic %s: it has %d partition(s), linetrace needs %d "
                            "(`linetrace broker` fixes it)", COMMANDS, found, want)
                await asyncio.sleep(self.topic_poll_s)
            tps = [TopicPartition(COMMANDS, p) for p in range(want)]
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            while True:
                batches = await consumer.getmany(timeout_ms=self.poll_ms)
                for records in batches.values():
                    for r in records:
                        if r.value is not None:
                            log.info("line.commands: %s", self.apply(r.value, list(r.headers)))
        finally:
            await consumer.stop()
