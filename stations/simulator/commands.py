"""The simulated stations obey `line.commands`: `command.hold` stops a unit, `command.release`
lets it go on.

`LineCommands` reads every partition of `line.commands` from the beginning (a hold published
before the run started still applies) with a plain aiokafka consumer, keeps only commands that
carry a valid signature of the plant key, come from source `linetrace` and are addressed to one
of the simulator's stations (the Kafka key), and applies them to `Holds`. Commands for one
unit addressed to different stations travel on different partitions, so a command older (by
event time) than the last one applied for its unit is ignored. The simulator treats a hold
addressed to any of its stations as a hold of the unit on the whole line: it is one line.

How a hold meets the simulated clock is the runner's business (see `runner.py`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from linetrace.schemas.bodies import CommandHold, CommandRelease
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_event, parse_time
from linetrace.schemas.errors import ForgedEvent, MalformedEvent
from linetrace.schemas.signing import keyid_of, read_signature, verify_value
from linetrace.schemas.topics import ALL_TOPICS, COMMANDS

log = logging.getLogger(__name__)

Listener = Callable[[str, bool], None]  # (unit, held now)


@dataclass
class Holds:
    """Which units are held, by which command; listeners hear every change."""

    held: dict[str, str] = field(default_factory=dict)  # unit -> reason
    last: dict[str, datetime] = field(default_factory=dict)  # unit -> time of its last command
    listeners: list[Listener] = field(default_factory=list)

    def __contains__(self, unit: object) -> bool:
        return unit in self.held

    def hold(self, unit: str, reason: str) -> None:
        new = unit not in self.held
        self.held[unit] = reason
        if new:
            for listen in self.listeners:
                listen(unit, True)

    def release(self, unit: str) -> None:
        if self.held.pop(unit, None) is not None:
            for listen in self.listeners:
                listen(unit, False)


class LineCommands:
    """Applies plant-signed `command.hold` / `command.release` from `line.commands` to `holds`."""

    def __init__(self, bootstrap: str, plant_key: Ed25519PublicKey, holds: Holds, *,
                 stations: Collection[str], poll_ms: int = 200, topic_poll_s: float = 0.5) -> None:
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
        if event.source != SYSTEM_SOURCE or not isinstance(body, (CommandHold, CommandRelease)):
            return f"ignored: {event.type} from {event.source} is not a line command"
        if event.subject not in self.stations:
            return f"ignored: addressed to {event.subject}, not a simulated station"
        when = parse_time(event.envelope.time)
        if (last := self.holds.last.get(body.unit)) is not None and when < last:
            return f"ignored: {event.type} for {body.unit} is older than its last command"
        self.holds.last[body.unit] = when
        if isinstance(body, CommandHold):
            self.holds.hold(body.unit, body.reason)
            return f"hold {body.unit} ({body.reason})"
        self.holds.release(body.unit)
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
