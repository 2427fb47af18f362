"""Conducted runs: what linetrace's decision makes of a unit that waits on it, planned when the
decision comes.

The plan (`line.py`) already holds every repair linetrace is expected to order within a
rework's `max_loops`; the runner only sends each once linetrace's `command.route` for it
arrived. What the plan cannot know is a person's disposition of a unit held for one, nor a
route linetrace decided otherwise than the plan expected. `plan_continuation` plans that part
when its command arrives, from the unit's state at the end of what was sent:

- `scrap`: the unit goes to the repair station (the command's step) and is scrapped there
  (`unit.scrapped`, the command's reason);
- `repair` (or `rework`): one more repair loop at the repair station, then back to the
  rework's `return_to` and on along the route;
- `use-as-is`: on to the command's step (the one after the step it failed) and along the route.

A continuation is seeded by the run's seed, the unit's serial, the decision and how many
continuations the run planned before it, and its times start at the line clock when the
command came (plus a transport). It passes its steps without natural failures and without
faults: what linetrace decided is carried out, and the run ends. A replacement part comes from
the run's stock; a lot opened for it is received (its `material.received`) when the
continuation starts. A step that consumes a sub-assembly the unit does not have yet ends the
continuation there, the unit waiting (the packaged routes never need it: their failures are all
after integration or on the PCBA itself). A continued PCBA that passes is a spare: its server
already took a new board.
"""

from __future__ import annotations

import logging
import random
from dataclasses import replace
from datetime import datetime

from linetrace.schemas.routes import Route, Step

from .context import LineContext, Operation, visit
from .faults import NO_FAULTS
from .line import OPERATIONS
from .products import RECEIVING_STATION, station_of
from .quality_ops import scrap
from .units import Failure, Recorder, SimEvent, Unit

log = logging.getLogger(__name__)

#: What a unit still waiting on linetrace is waiting for, as `Unit.outcome`.
AWAITING = frozenset({"awaiting_disposition", "awaiting_route"})


def plan_continuation(base: LineContext, unit: Unit, decision: str, step: int, reason: str,
                      now: datetime, n: int) -> list[SimEvent]:
    """The events `decision` (a `command.route`'s) makes `unit` send from `now` on: receipts
    of lots it opened first, then its own."""
    key = f"linetrace-sim:{base.seed}:continue:{unit.serial}:{n}:{decision}"
    ctx = replace(base, rng=random.Random(key),
                  rec=Recorder(base.rec.start, random.Random(f"{key}:ids")),
                  faults=NO_FAULTS, failures=False, fired=set())
    route = ctx.product_of(unit).route_of(unit.kind)
    lots_before, first = len(ctx.stock.lots), len(unit.events)
    start = max(int((now - ctx.rec.start).total_seconds() * 1000), unit.last_ms)
    ms = start + ctx.rng.randint(30_000, 120_000)
    if decision == "scrap":
        _visit(ctx, unit, _repair_step(route, step, unit), ms, scrap(reason))
        unit.outcome = "scrapped"
    else:
        failure = unit.failure or Failure(_last_step(unit), ctx.defect_id(), "functional",
                                          f"repaired as decided: {reason}")
        if decision == "use-as-is":
            index = _flow_index(route, step)
            if index is None:
                index = _after(route, failure.step)
        else:  # repair, rework: one more loop, then back to where the rework returns
            unit.failure = failure
            ms = _visit(ctx, unit, _repair_step(route, step, unit), ms, OPERATIONS["repair"])
            target = route.rework_target(failure.step) if route.has_step(failure.step) else None
            index = _flow_index(route, target.step if target else failure.step)
        unit.failure = None
        _along(ctx, unit, route, index, ms)
    base.defects = ctx.defects
    receipts = [ctx.rec.event(start + i, RECEIVING_STATION[0], "material.received", lot.lot_id,
                              lot.receipt())
                for i, lot in enumerate(ctx.stock.lots[lots_before:], start=1)]
    return receipts + unit.events[first:]


def _along(ctx: LineContext, unit: Unit, route: Route, index: int | None, ms: int) -> None:
    """Visit the route's steps from `index` to the end (no failures: see the module doc)."""
    while index is not None and index < len(route.steps):
        step = route.steps[index]
        if step.consumes and unit.mainboard is None:
            log.warning("%s: step %d needs a sub-assembly the continuation has none of; the "
                        "unit waits", unit.serial, step.step)
            unit.outcome = "awaiting_route"
            return
        ms = _visit(ctx, unit, step, ms, OPERATIONS[step.station_type])
        if unit.failure is not None:  # not planned, but obeyed: linetrace routes it
            unit.outcome = "awaiting_route"
            return
        if step.station_type == "pack":
            unit.outcome = "packed"
        index += 1
    unit.outcome = "shipped" if unit.kind == "server" else "passed"


def _visit(ctx: LineContext, unit: Unit, step: Step, ms: int, operation: Operation) -> int:
    """One visit; returns when the unit is at its next station."""
    station = station_of(step)
    lane = ctx.rng.randrange(station.capacity)
    depart, outcome = visit(ctx, unit, step, station, ms, lane, {step.station_type: operation})
    if outcome.failure is not None:
        unit.failure = outcome.failure
    return depart + ctx.rng.randint(30_000, 120_000)


def _repair_step(route: Route, step: int, unit: Unit) -> Step:
    """The command's step if it is one of the route's repair steps, else the repair step of
    the unit's failure, else the route's first repair step."""
    if route.has_step(step) and route.step(step).station_type == "repair":
        return route.step(step)
    if unit.failure is not None and route.has_step(unit.failure.step):
        repair = route.repair_for(unit.failure.step)
        if repair is not None:
            return repair
    return route.repair_steps[0] if route.repair_steps else route.step(step)


def _flow_index(route: Route, step: int) -> int | None:
    return next((i for i, s in enumerate(route.steps) if s.step == step), None)


def _after(route: Route, step: int) -> int | None:
    index = _flow_index(route, step)
    return None if index is None else index + 1


def _last_step(unit: Unit) -> int:
    """The step of the unit's last visit."""
    for ev in reversed(unit.events):
        step = getattr(ev.body, "step", None)
        if isinstance(step, int):
            return step
    return 0
