"""One visit of a unit to a station, and what every operation draws on.

Every visit is: `unit.arrived`, `work.started`, the operation's own events, `work.completed`
(result), `unit.departed`. An operation returns an `Outcome`: its events (spread evenly over
the cycle, or at the offsets it gives, as burn-in does), the result and why the unit must go to
repair. A repair that ends in scrap records `unit.repaired` (result Scrap) and `unit.scrapped`
before `work.completed`; conducted, a repair that cannot fix the unit records `unit.repaired`
(result UnableToRepair) and `work.completed` Failed, and linetrace decides.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

from linetrace.schemas.bodies import Body, UnitArrived, UnitDeparted, WorkCompleted, WorkStarted
from linetrace.schemas.routes import Step

from .faults import NEAR_TARGETS, FaultPlan, Strike
from .parts import Stock
from .products import Product, StationSpec
from .units import Failure, Recorder, Unit


@dataclass
class LineContext:
    """Everything an operation draws on: one seeded RNG for results, one for ids, the stock,
    the faults of the run and which of them already left their evidence (`fired`)."""

    products: dict[str, Product]
    seed: int
    rng: random.Random
    rec: Recorder
    stock: Stock
    faults: FaultPlan
    burnin_seconds: int
    #: Conducted (`LineConfig.conducted`): linetrace routes failed units; the plan stops a
    #: unit where a disposition is needed instead of scrapping it.
    conducted: bool = False
    #: False in a conducted continuation: no natural failure, no fault (docs/simulator.md).
    failures: bool = True
    defects: int = 0
    ict_tests_drifting: int = 0
    ict_tests_wobbling: int = 0
    server_repairs: int = 0  # successful server repairs so far (near miss golden-reflash)
    fired: set[str] = field(default_factory=set)
    servers: list[Unit] = field(default_factory=list)
    #: What each fault and near miss struck (`LinePlan.truth`), in the order they fired.
    truth: list[Strike] = field(default_factory=list)

    def strike(self, fault: str, *, unit: str | None = None, gpu: int | None = None,
               gpu_serial: str | None = None, lot: str | None = None,
               station: str | None = None, details: Mapping[str, object] | None = None
               ) -> None:
        """Record the truth about a fault that left its evidence (and mark it fired)."""
        self.fired.add(fault)
        self.truth.append(Strike(
            fault, unit=unit, gpu=gpu, gpu_serial=gpu_serial, lot=lot, station=station,
            near_miss=fault in NEAR_TARGETS,
            details={**self.faults.params.get(fault, {}), **(details or {})}))

    def param(self, fault: str, key: str, default: float | None = None) -> float | None:
        return self.faults.param(fault, key, default)

    def defect_id(self) -> str:
        self.defects += 1
        return f"DEF-S{self.seed}-{self.defects:06d}"

    def product_of(self, unit: Unit) -> Product:
        return self.products[unit.product]

    def batch(self, unit: Unit) -> int:
        return unit.build // self.product_of(unit).units_per_work_order + 1

    def side_rng(self, *what: object) -> random.Random:
        """A seeded RNG of its own for a fault's draws, so a fault never shifts the draws of
        the rest of the run."""
        return random.Random(":".join(["linetrace-sim", str(self.seed), *map(str, what)]))

    def strikes(self, fault: str, unit: Unit) -> bool:
        return unit.kind == "server" and self.faults.strikes(fault, unit.number)


TimedEvent = tuple[int, str, Body]  # (ms after work.started, type, body)


@dataclass
class Outcome:
    events: list[tuple[str, Body]] = field(default_factory=list)  # spread over the cycle
    timed: list[TimedEvent] = field(default_factory=list)  # at their own offsets
    cycle_ms: int | None = None  # the operation's own duration (default: the station's)
    result: Literal["Completed", "Failed"] = "Completed"
    failure: Failure | None = None
    scrapped: bool = False
    unable: bool = False  # conducted: the repair could not fix it (awaits a disposition)


Operation = Callable[[LineContext, Unit, Step, str], Outcome]


def visit(ctx: LineContext, unit: Unit, step: Step, station: StationSpec, start_ms: int,
          lane: int, operations: dict[str, Operation], *, stall_ms: int = 0
          ) -> tuple[int, Outcome]:
    """Record one visit of `unit` to `step`'s station; returns (departure ms, outcome).

    `stall_ms` (fault `stuck-unit`): the unit goes silent that long after `work.started`.
    """
    rng, rec, sid = ctx.rng, ctx.rec, station.station_id
    unit.visits[step.step] = unit.visits.get(step.step, 0) + 1
    t = start_ms
    rec.add(unit, t, sid, "unit.arrived", UnitArrived(step=step.step, lane=lane))
    t += rng.randint(5_000, 30_000)
    tx = rec.new_id()
    rec.add(unit, t, sid, "work.started", WorkStarted(
        transaction_id=tx, step=step.step, operation=step.operation, work_order=unit.work_order,
        product=unit.product, kind=unit.kind, recipe=step.recipe, recipe_revision=step.recipe_revision,
        operator=f"OP-{100 + step.step // 10}{rng.randint(1, 3)}",
    ))
    cycle = int(station.cycle_s * 1000 * rng.uniform(0.85, 1.15))
    outcome = operations[step.station_type](ctx, unit, step, tx)
    t += stall_ms
    if outcome.cycle_ms is not None:
        cycle = outcome.cycle_ms
    for offset, event_type, body in outcome.timed:
        rec.add(unit, t + offset, sid, event_type, body)
    n = len(outcome.events)
    for i, (event_type, body) in enumerate(outcome.events):
        rec.add(unit, t + cycle * (i + 1) // (n + 1), sid, event_type, body)
    t += cycle
    rec.add(unit, t, sid, "work.completed",
            WorkCompleted(transaction_id=tx, step=step.step, result=outcome.result))
    t += rng.randint(3_000, 15_000)
    rec.add(unit, t, sid, "unit.departed", UnitDeparted(step=step.step, lane=lane))
    return t, outcome
