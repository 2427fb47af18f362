"""Sends a simulated run to the broker: one StationClient per station, events in causal order.

`run_line` plans the run (or takes the plan), starts one `StationClient` per station and, given
the plant key, a `LineCommands` listener on `line.commands`, and hands the events to the
`Dispatcher` (`dispatcher.py`): each station sends its own events in event-time order (so
without holds its `stationseq` numbering is the same on every run of a seed), each event only
after the events it depends on were acknowledged. `speed` > 0 paces sending to simulated
time / speed and `rate` caps events per second; neither changes an event.

Holds (`line.commands`, see `commands.py`; a conducted run listens to them, the dispatcher
obeys what `Holds` says in any run) and the simulated clock:
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
  simulator waiting for its release (stop it with Ctrl-C / SIGTERM; `on_status` says when
  nothing is left to send but what waits on a command or a person).

Conducted (`LineConfig.conducted`), linetrace also routes failed units (`command.route`),
decides dispositions, locks stations (`command.lock`) and answers the interlock after each
arrival; see `dispatcher.py` and docs/simulator.md "Conducted mode".
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ..errors import StationError
from .commands import Holds, LineCommands
from .dispatcher import Dispatcher
from .sending import Dependencies, Emitter, Interlock, LineStatus, OnEvent, dependencies
from .line import LineConfig, LinePlan, generate_line
from .summary import LineSummary
from .products import station_roster

log = logging.getLogger(__name__)

__all__ = ["Dependencies", "Dispatcher", "Emitter", "Interlock", "LineStatus", "OnEvent",
           "dependencies", "run_line"]


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
    interlock: Interlock | None = None,
    on_status: Callable[[LineStatus], None] | None = None,
) -> LineSummary:
    """Simulate `config` and send every event, signed by its station's key, to `bootstrap`.

    `keys` maps station id -> private key (see `station_roster`); each station keeps its
    `stationseq` state in `state_dir / <station id>`. A conducted run (`config.conducted`)
    obeys the commands on `line.commands` signed by `plant_key` (required) and asks the
    `interlock` after each arrival whether the unit may start the step; an unconducted run
    makes every decision itself and obeys no command (linetrace only watches it). `holds`:
    what the line was told (tests may tell it directly). `plan`: `generate_line(config)` if
    already made. `on_status`: told whenever the run becomes idle (only units waiting on
    linetrace or a person left) or stops being. Returns what was sent.
    """
    from ..client import StationClient

    plan = plan if plan is not None else generate_line(config)
    stream = plan.stream()
    # Conducted, a continuation may visit a station the plan never did (scrap at repair), and
    # linetrace may address a command to any station of the line.
    roster = {s for s, _ in station_roster(config.product, config.routes)} \
        if config.conducted else set()
    stations = sorted({e.station_id for e in stream} | roster)
    missing = [s for s in stations if s not in keys]
    if missing:
        raise StationError(
            f"no private key for station(s) {', '.join(missing)}; enrol them first "
            "(`linetrace stations enroll ID --type T --public-key FILE`)",
            code="station.no_key",
        )
    if config.conducted and plant_key is None:
        raise StationError("a conducted line needs the plant key: it obeys linetrace's "
                           "commands on line.commands", code="simulator.invalid_config")
    holds = holds if holds is not None else Holds()
    clients = {s: StationClient(s, keys[s], bootstrap, state_dir / s) for s in stations}
    commands: asyncio.Task[None] | None = None
    if config.conducted and plant_key is not None:
        listener = LineCommands(bootstrap, plant_key, holds, stations=stations)
        commands = asyncio.create_task(listener.run(), name="line-commands")
    started: list[StationClient] = []
    try:
        for c in clients.values():
            await c.start()
            started.append(c)
        dispatcher = Dispatcher(stream, clients, speed=config.speed, rate=config.rate,
                                holds=holds, on_event=on_event, plan=plan, interlock=interlock,
                                on_status=on_status)
        sent = await dispatcher.run()
    finally:
        if commands is not None:
            commands.cancel()
            await asyncio.gather(commands, return_exceptions=True)
        await asyncio.gather(*(c.stop() for c in started), return_exceptions=True)
    log.info("line run seed %d: %d events sent for %d units", config.seed, sum(sent.values()),
             config.units)
    return plan.summary(dict(sent))
