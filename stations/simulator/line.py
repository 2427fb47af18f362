"""The pure line simulation: which unit is where, when, and what each station records.

A small discrete-event schedule over simulated time that follows the route files. Mainboard
PCBAs (route A-PCBA) start at SMT every `PCBA_TAKT_S`; servers start at kitting every
`SERVER_TAKT_S` (`mix` alternates A and B, server 1 being A); each unit waits for a free lane
at each station, so units move through the line interleaved as on a real line. A step that
consumes a sub-assembly waits for its build's PCBA to finish its route; a scrapped PCBA is
replaced by a new one. A unit that fails a step goes to the route's repair step and returns to
the step its rework names. Every station reports PRD (SEMI E10) when the run starts.

Conducted (`LineConfig.conducted`, docs/simulator.md "Conducted mode"), linetrace makes the
line's decisions: the plan still says where a failed unit would be repaired, but each such
repair visit is a gate (`LinePlan.gates`) the runner opens only on linetrace's
`command.route`; and where the unconducted line would scrap a unit (a failure after
`max_loops` repairs, a repair that finds more damage) the plan stops instead, the unit
awaiting a disposition (`LinePlan.awaiting`; a PCBA is replaced at once by a new board). What
a disposition makes of it is planned when it comes (`conducted.plan_continuation`).

Everything is decided by the seed (and the faults): results, timings, serials, lots and event
ids come from seeded `random.Random` streams and event times from the simulated clock (default
start 2026-01-05T06:00:00Z). No Kafka here: `generate_line` returns the events, `run_line`
sends them.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from linetrace.schemas.bodies import StationState
from linetrace.schemas.routes import RouteBook

from ..errors import StationError
from . import build_ops, burnin_rack, quality_ops
from .context import LineContext, Operation, Outcome, visit
from .faults import (
    STATION_DOWN_S, STATION_DOWN_TYPE, STUCK_STEP, SKIPPED_STEP, UNAPPROVED_SUPPLIERS, FaultSpec,
    Strike, plan_faults,
)
from .parts import Stock
from .summary import LineSummary, followed_routes
from .products import RECEIVING_STATION, Product, products_of, station_of, station_roster
from .units import Recorder, SimEvent, Unit

DEFAULT_START = datetime(2026, 1, 5, 6, 0, 0, tzinfo=UTC)
RECEIVING_WINDOW_S = 3600  # all lots are received before production starts
PCBA_TAKT_S = 600
SERVER_TAKT_S = 900
SERVER_LEAD_S = 2400  # the first server starts kitting this long after the first PCBA
DEFAULT_BURNIN_SECONDS = 60

OPERATIONS: dict[str, Operation] = {
    "smt": build_ops.smt, "aoi": build_ops.aoi, "ict": build_ops.ict,
    "kitting": build_ops.kitting, "gpu-install": build_ops.install,
    "integration": build_ops.install, "firmware": build_ops.firmware,
    "burnin": burnin_rack.burnin, "final-qa": quality_ops.final_qa, "pack": quality_ops.pack,
    "shipping": quality_ops.ship, "repair": quality_ops.repair,
}


@dataclass(frozen=True)
class LineConfig:
    """One simulator run. `speed` paces wall time only (0 = as fast as possible); `rate` caps
    the events sent per second (0 = no cap); neither changes any event."""

    units: int
    seed: int
    speed: float = 0.0
    start: datetime | None = None
    product: str = "A"  # A, B or mix
    faults: tuple[FaultSpec, ...] = ()
    burnin_seconds: int = DEFAULT_BURNIN_SECONDS
    rate: float = 0.0
    #: Conducted by linetrace (`command.route`, dispositions, locks, the interlock), or
    #: routing and scrapping units on its own (False).
    conducted: bool = False
    #: Every fault's parameters not given in its spec drawn from the seed (as `@vary`).
    fault_variation: bool = False
    #: The routes in force (a plant's LINETRACE_ROUTES folder); None: the packaged routes.
    routes: RouteBook | None = field(default=None, compare=False)

    def validate(self) -> None:
        problems = []
        if self.units < 0:
            problems.append(f"units must be >= 0, not {self.units}")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, not {self.seed}")
        if self.speed < 0:
            problems.append(f"speed must be >= 0 (0 = as fast as possible), not {self.speed}")
        if self.rate < 0:
            problems.append(f"rate must be >= 0 events/s (0 = no cap), not {self.rate}")
        if not 5 <= self.burnin_seconds <= 86_400:
            problems.append(f"burn-in seconds must be 5..86400, not {self.burnin_seconds}")
        if self.start is not None and self.start.tzinfo is None:
            problems.append("start must carry a time zone (e.g. 2026-01-05T06:00:00Z)")
        if problems:
            raise StationError("; ".join(problems), code="simulator.invalid_config")
        products = products_of(self.product, self.routes)
        plan_faults(self.faults, self.units, len(products))
        if any(f.name in ("ict-drift", "ict-wobble") for f in self.faults) and not any(
                p.assembly_route for p in products):
            raise StationError(f"ict-drift needs a product with an ICT step (A or mix), not "
                               f"{self.product}", code="simulator.invalid_fault")

    @property
    def start_time(self) -> datetime:
        return (self.start or DEFAULT_START).astimezone(UTC)


@dataclass
class LinePlan:
    """Every event of one run: station states, lot receipts, then each unit's own events.

    Conducted: `gates` maps the event id of each repair visit's `unit.arrived` to its repair
    step (sent only once linetrace routed the unit there); `awaiting` lists the units whose
    plan ends waiting for a disposition; `context` is what continuations draw on."""

    config: LineConfig
    receipts: list[SimEvent]
    units: list[Unit]  # in the order they were started
    station_events: list[SimEvent] = field(default_factory=list)
    gates: dict[str, int] = field(default_factory=dict)
    awaiting: list[str] = field(default_factory=list)
    context: LineContext | None = field(default=None, compare=False, repr=False)
    #: The unit as it was in front of each gate (a decision other than the plan's starts
    #: from there).
    before_gate: dict[str, Unit] = field(default_factory=dict, compare=False, repr=False)
    continuations: int = 0
    #: What each fault and near miss struck (unit, GPU, lot, station, parameters): the truth
    #: benches score detectors against; nothing of it is sent.
    truth: list[Strike] = field(default_factory=list, compare=False)

    def unit(self, serial: str) -> Unit:
        return next(u for u in self.units if u.serial == serial)

    def continue_unit(self, serial: str, decision: str, step: int, reason: str,
                      now: datetime, *, gate: str | None = None) -> list[SimEvent]:
        """Plan what linetrace's `decision` for a unit waiting on it makes of it, from `now`
        (the line clock): its events, after the receipt of any lot it opened. `gate`: the
        planned gate (event id) the unit waits at, whose planned rest is not sent; the unit
        goes back to how it was there. Seeded by the run's seed, the serial, the decision and
        how many continuations came before."""
        from .conducted import plan_continuation

        assert self.context is not None, "only a generated plan can be continued"
        unit = self.unit(serial)
        if gate is not None:
            unit.restore(self.before_gate[gate])
        self.continuations += 1
        return plan_continuation(self.context, unit, decision, step, reason, now,
                                 self.continuations)

    @property
    def servers(self) -> list[Unit]:
        return [u for u in self.units if u.kind == "server"]

    @property
    def assemblies(self) -> list[Unit]:
        return [u for u in self.units if u.kind == "assembly"]

    def events_of(self, serial: str) -> list[SimEvent]:
        return next(u.events for u in self.units if u.serial == serial)

    def stream(self) -> list[SimEvent]:
        """All events in event-time order (ties: station states, receipts, then units by start
        order)."""
        keyed = [((e.time, -2, i), e) for i, e in enumerate(self.station_events)]
        keyed += [((e.time, -1, i), e) for i, e in enumerate(self.receipts)]
        keyed += [((e.time, u.order, i), e) for u in self.units for i, e in enumerate(u.events)]
        keyed.sort(key=lambda k: k[0])
        return [e for _, e in keyed]

    def summary(self, events_by_type: dict[str, int] | None = None) -> LineSummary:
        stream = self.stream()
        counts = events_by_type if events_by_type is not None else Counter(e.event_type for e in stream)
        return LineSummary(
            seed=self.config.seed, product=self.config.product,
            faults=[f.name for f in self.config.faults],
            units_started=len(self.servers), assemblies_started=len(self.assemblies),
            outcomes=dict(sorted(Counter(u.outcome for u in self.servers).items())),
            assembly_outcomes=dict(sorted(Counter(u.outcome for u in self.assemblies).items())),
            events_by_type=dict(sorted(counts.items())),
            first_event=stream[0].time if stream else None,
            last_event=stream[-1].time if stream else None,
            routes=followed_routes(self.config),
        )


@dataclass
class _Build:
    """One server and, for a product with a sub-assembly route, the PCBA meant for it."""

    server: Unit
    pcba: Unit | None = None
    pcba_ready_ms: int | None = None
    server_waiting_ms: int | None = None


@dataclass
class _Schedule:
    ctx: LineContext
    units: list[Unit] = field(default_factory=list)
    builds: list[_Build] = field(default_factory=list)
    heap: list[tuple[int, int, int]] = field(default_factory=list)  # (ready ms, order, unit)
    free_at: dict[str, list[int]] = field(default_factory=dict)
    station_events: list[SimEvent] = field(default_factory=list)
    started: set[int] = field(default_factory=set)  # servers (numbers) that started
    pcbas: int = 0
    gates: dict[str, int] = field(default_factory=dict)  # conducted: see LinePlan
    before_gate: dict[str, Unit] = field(default_factory=dict)
    awaiting: list[str] = field(default_factory=list)

    def new_unit(self, kind: str, build: int, p: Product) -> Unit:
        seed = self.ctx.seed
        batch = build // p.units_per_work_order + 1
        if kind == "server":
            serial, wo = f"SRV-S{seed}-{build + 1:06d}", f"WO-S{seed}-{p.name}-{batch:04d}"
            number = build + 1
        else:
            self.pcbas += 1
            serial, wo = f"PCBA-S{seed}-{self.pcbas:06d}", f"WO-S{seed}-MB-{batch:04d}"
            number = self.pcbas
        unit = Unit(serial=serial, kind="server" if kind == "server" else "assembly",
                    product=p.name, work_order=wo, build=build, order=len(self.units),
                    number=number)
        self.units.append(unit)
        if unit.kind == "server":
            self.ctx.servers.append(unit)
        return unit

    def push(self, unit: Unit, ms: int) -> None:
        heapq.heappush(self.heap, (ms, unit.order, unit.order))

    def transport(self) -> int:
        return self.ctx.rng.randint(30_000, 120_000)

    def station_down(self, station_id: str, ms: int, slots: list[int],
                     fault: str = "station-down") -> int:
        """Fault `station-down`: SDT, silence for STATION_DOWN_S, PRD; returns the new start.
        Near miss `station-standby`: SBY (2000) for a while instead, then PRD."""
        down = max(ms, *slots) + 1000
        standby = fault == "station-standby"
        seconds = self.ctx.param(fault, "duration", 1200.0 if standby else STATION_DOWN_S)
        assert seconds is not None
        up = down + int(seconds * 1000)
        rec = self.ctx.rec
        self.station_events += [
            rec.event(down, station_id, "station.state", station_id,
                      StationState(state=2000, reason="standby: waiting for work") if standby
                      else StationState(state=4000,
                                        reason="unscheduled down: fixture controller fault")),
            rec.event(up, station_id, "station.state", station_id,
                      StationState(state=1000, reason="producing" if standby
                                    else "repaired; producing")),
        ]
        slots[:] = [up] * len(slots)
        self.ctx.strike(fault, station=station_id, details={"seconds": seconds})
        return up + 1000

    def run(self) -> None:
        ctx = self.ctx
        while self.heap:
            ms, _, index = heapq.heappop(self.heap)
            unit = self.units[index]
            build = self.builds[unit.build]
            route = ctx.product_of(unit).route_of(unit.kind)
            if unit.kind == "server":
                self.started.add(unit.number)
            gated = unit.failure is not None and ctx.conducted
            if unit.failure is not None:
                step = route.repair_for(unit.failure.step)
                assert step is not None, f"step {unit.failure.step} has no rework"
            else:
                step = route.steps[unit.route_index]
                if step.step == SKIPPED_STEP and "skip-step" not in ctx.fired and ctx.strikes(
                        "skip-step", unit):  # once: after a repair it is flashed as usual
                    ctx.strike("skip-step", unit=unit.serial, details={"step": step.step})
                    unit.route_index += 1
                    step = route.steps[unit.route_index]
                if step.consumes and unit.mainboard is None:
                    if build.pcba_ready_ms is None or build.pcba is None:
                        build.server_waiting_ms = ms
                        continue
                    ms = max(ms, build.pcba_ready_ms)
                    unit.mainboard = build.pcba
                    build.pcba.outcome = "installed"
            station = station_of(step)
            slots = self.free_at.setdefault(station.station_id, [0] * station.capacity)
            lane = min(range(len(slots)), key=lambda i: (slots[i], i))
            start = max(ms, slots[lane])
            for down in ("station-down", "station-standby"):
                target = ctx.faults.targets.get(down)
                if (station.station_type == STATION_DOWN_TYPE and target in self.started
                        and down not in ctx.fired):
                    start = self.station_down(station.station_id, start, slots, down)
            stall = 0
            if step.step == STUCK_STEP and not unit.visits.get(step.step) and ctx.strikes(
                    "stuck-unit", unit):
                times = ctx.param("stuck-unit", "stall", 2.0)
                assert times is not None
                stall = int((times * step.max_cycle_s + 600) * 1000)
                ctx.strike("stuck-unit", unit=unit.serial, station=station.station_id,
                           details={"step": step.step, "silent_s": stall / 1000})
            elif step.step == STUCK_STEP and not unit.visits.get(step.step) and ctx.strikes(
                    "slow-unit", unit):  # near miss: long, but inside the max cycle
                frac = ctx.param("slow-unit", "stall", 0.7) or 0.7
                stall = max(0, int((frac * step.max_cycle_s - station.cycle_s * 1.15 - 45)
                                   * 1000))
                ctx.strike("slow-unit", unit=unit.serial, station=station.station_id,
                           details={"step": step.step, "silent_s": stall / 1000})
            first, before = len(unit.events), unit.snapshot() if gated else None
            depart, outcome = visit(ctx, unit, step, station, start, lane, OPERATIONS,
                                    stall_ms=stall)
            if before is not None:  # linetrace routes it here (conducted)
                self.gates[unit.events[first].event_id] = step.step
                self.before_gate[unit.events[first].event_id] = before
            slots[lane] = depart
            self.after_visit(unit, build, depart, outcome)

    def leave_line(self, unit: Unit, build: _Build, ms: int, outcome: str) -> None:
        """The unit's plan ends (scrapped, or awaiting a disposition); a PCBA's server gets a
        new board."""
        unit.outcome = outcome
        if outcome == "awaiting_disposition":
            self.awaiting.append(unit.serial)
        if unit.kind == "assembly":
            build.pcba = self.new_unit("assembly", unit.build, self.ctx.product_of(unit))
            self.push(build.pcba, ms)

    def after_visit(self, unit: Unit, build: _Build, depart: int, outcome: Outcome) -> None:
        ctx = self.ctx
        route = ctx.product_of(unit).route_of(unit.kind)
        nxt = depart + self.transport()
        failure = outcome.failure
        if unit.failure is not None:  # this was the repair
            if outcome.scrapped or outcome.unable:
                self.leave_line(unit, build, nxt, "scrapped" if outcome.scrapped
                                else "awaiting_disposition")
                return
            target = route.rework_target(unit.failure.step)
            assert target is not None
            unit.route_index = next(i for i, s in enumerate(route.steps) if s.step == target.step)
            unit.failure = None
            self.push(unit, nxt)
        elif failure is not None:
            unit.failure = failure
            rework = route.rework_of(failure.step)
            if ctx.conducted and (rework is None
                                  or unit.repairs.get(failure.step, 0) >= rework.max_loops):
                self.leave_line(unit, build, nxt, "awaiting_disposition")  # linetrace holds it
                return
            self.push(unit, nxt)
        else:
            unit.route_index += 1
            if route.steps[unit.route_index - 1].station_type == "pack":
                unit.outcome = "packed"
            if unit.route_index < len(route.steps):
                self.push(unit, nxt)
            elif unit.kind == "server":
                unit.outcome = "shipped"
            else:
                unit.outcome = "passed"  # waits for its server's integration
                build.pcba_ready_ms = nxt
                if build.server_waiting_ms is not None:
                    self.push(build.server, max(build.server_waiting_ms, nxt))
                    build.server_waiting_ms = None


def generate_line(config: LineConfig) -> LinePlan:
    """Simulate a whole run without a broker: the same config always gives the same events."""
    config.validate()
    products = products_of(config.product, config.routes)
    faults = plan_faults(config.faults, config.units, len(products), seed=config.seed,
                         vary=config.fault_variation)
    seed = config.seed
    rng = random.Random(f"linetrace-sim:{seed}:line")
    rec = Recorder(config.start_time, random.Random(f"linetrace-sim:{seed}:ids"))
    stock = Stock(seed, random.Random(f"linetrace-sim:{seed}:lots"),
                  unapproved=("psu", faults.targets["avl-violation"])
                  if faults.has("avl-violation") else None,
                  bad=("gpu", faults.targets["bad-lot"]) if faults.has("bad-lot") else None,
                  one_failure=("gpu", faults.targets["lot-one-failure"])
                  if faults.has("lot-one-failure") else None,
                  unapproved_supplier=UNAPPROVED_SUPPLIERS[int(faults.param(
                      "avl-violation", "supplier", 0) or 0) % len(UNAPPROVED_SUPPLIERS)])
    ctx = LineContext(products={p.name: p for p in products}, seed=seed, rng=rng, rec=rec,
                      stock=stock, faults=faults, burnin_seconds=config.burnin_seconds,
                      conducted=config.conducted)
    sched = _Schedule(ctx)
    production_ms = RECEIVING_WINDOW_S * 1000
    pcbas = 0
    for i in range(config.units):
        p = products[i % len(products)]
        pcba = None
        if p.assembly_route is not None:
            pcba = sched.new_unit("assembly", i, p)
            sched.push(pcba, production_ms + pcbas * PCBA_TAKT_S * 1000)
            pcbas += 1
        server = sched.new_unit("server", i, p)
        sched.builds.append(_Build(server=server, pcba=pcba))
        sched.push(server, production_ms + (SERVER_LEAD_S + i * SERVER_TAKT_S) * 1000)
    sched.run()
    for lot in stock.lots:
        if lot.supplier != lot.part.supplier:
            ctx.strike("avl-violation", lot=lot.lot_id, details={"supplier": lot.supplier})
        if lot.bad and "bad-lot" in ctx.fired:
            ctx.strike("bad-lot", lot=lot.lot_id)
    missing = [f for f in faults.names if f not in ctx.fired]
    if missing:
        raise StationError(
            f"fault(s) {', '.join(missing)} found nothing to strike in this run (too few "
            "units, or the target was scrapped first); add --units or change the target",
            code="simulator.fault_not_applied")
    spacing = max(1, production_ms // max(1, len(stock.lots)))
    station = RECEIVING_STATION[0]
    receipts = [rec.event(i * spacing, station, "material.received", lot.lot_id, lot.receipt())
                for i, lot in enumerate(stock.lots)]
    states = [rec.event(i, sid, "station.state", sid, StationState(state=1000, reason="producing"))
              for i, (sid, _) in enumerate(station_roster(config.product, config.routes))]
    return LinePlan(config=config, receipts=receipts, units=sched.units,
                    station_events=states + sched.station_events, gates=sched.gates,
                    awaiting=sched.awaiting, context=ctx, before_gate=sched.before_gate,
                    truth=ctx.truth)
