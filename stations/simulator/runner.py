"""Sends a simulated run to the broker: one StationClient per station, events in causal order.

Each station sends its own events in event-time order (so its `stationseq` numbering is the
same on every run of a seed). An event is sent only after the events it depends on were
acknowledged: the unit's previous event (one unit's events reach its partition in order, even
when consecutive ones come from different stations), the receipt of every lot it installs, and
the last event of a sub-assembly it installs. `speed` > 0 paces sending to
simulated time / speed; it never changes event times.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.bodies import MaterialsInstalled

from ..client import StationClient
from ..errors import StationError
from .line import LineConfig, LineSummary, generate_line
from .units import SimEvent

log = logging.getLogger(__name__)

OnEvent = Callable[[SimEvent, bytes], None]


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


async def run_line(
    config: LineConfig,
    keys: Mapping[str, Ed25519PrivateKey],
    bootstrap: str,
    state_dir: Path,
    *,
    on_event: OnEvent | None = None,
) -> LineSummary:
    """Simulate `config` and send every event, signed by its station's key, to `bootstrap`.

    `keys` maps station id -> private key (see `station_roster`); each station keeps its
    `stationseq` state in `state_dir / <station id>`. Returns what was sent.
    """
    plan = generate_line(config)
    stream = plan.stream()
    stations = sorted({e.station_id for e in stream})
    missing = [s for s in stations if s not in keys]
    if missing:
        raise StationError(
            f"no private key for station(s) {', '.join(missing)}; enrol them first "
            "(`linetrace stations enroll ID --type T --public-key FILE`)",
            code="station.no_key",
        )
    deps = dependencies(stream)
    acked = [asyncio.Event() for _ in stream]
    queues: dict[str, list[int]] = {s: [] for s in stations}
    for i, ev in enumerate(stream):
        queues[ev.station_id].append(i)
    clients = {s: StationClient(s, keys[s], bootstrap, state_dir / s) for s in stations}
    sent: Counter[str] = Counter()
    loop = asyncio.get_running_loop()

    async def station(sid: str) -> None:
        client = clients[sid]
        for i in queues[sid]:
            ev = stream[i]
            for d in deps[i]:
                await acked[d].wait()
            if config.speed > 0:
                due = t0 + (ev.time - stream[0].time).total_seconds() / config.speed
                if due > loop.time():
                    await asyncio.sleep(due - loop.time())
            value = await client.emit(ev.event_type, ev.subject, ev.body, time=ev.time,
                                      event_id=ev.event_id)
            sent[ev.event_type] += 1
            acked[i].set()
            if on_event is not None:
                on_event(ev, value)

    started: list[StationClient] = []
    try:
        for c in clients.values():
            await c.start()
            started.append(c)
        t0 = loop.time()
        tasks = [asyncio.create_task(station(s), name=f"station-{s}") for s in stations]
        try:
            done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
        finally:
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for t in done:
            if (exc := t.exception()) is not None:
                raise exc
    finally:
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
    log.info("line run seed %d: %d events sent for %d units", config.seed, sum(sent.values()),
             config.units)
    return plan.summary(dict(sent))
