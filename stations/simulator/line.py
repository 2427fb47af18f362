"""The pure line simulation: which unit is where, when, and what each station records.

A small discrete-event schedule over simulated time. Mainboard PCBAs start at SMT every
`pcba_takt_s`; servers start at kitting every `server_takt_s`; each unit waits for a free slot
at each station, so units move through the line interleaved as on a real line. A server's
integration waits for its build's PCBA to pass ICT; a scrapped PCBA is replaced by a new one.
A unit that fails a test goes to repair and returns to the step that failed.

Everything is decided by the seed: results, timings, serials, lots and event ids come from
seeded `random.Random` streams and event times from the simulated clock (default start
2026-01-05T06:00:00Z). No Kafka here: `generate_line` returns the events, `run_line` sends them.
"""

from __future__ import annotations

import heapq
import random
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime

from linetrace.schemas.envelope import format_time

from ..errors import StationError
from .parts import Stock
from .products import RECEIVING_STATION, Product, product
from .steps import LineContext, visit
from .units import Recorder, SimEvent, Unit

DEFAULT_START = datetime(2026, 1, 5, 6, 0, 0, tzinfo=UTC)


@dataclass(frozen=True)
class LineConfig:
    """One simulator run. `speed` paces wall time only (0 = as fast as possible)."""

    units: int
    seed: int
    speed: float = 0.0
    start: datetime | None = None
    product: str = "A"

    def validate(self) -> None:
        problems = []
        if self.units < 0:
            problems.append(f"units must be >= 0, not {self.units}")
        if self.seed < 0:
            problems.append(f"seed must be >= 0, not {self.seed}")
        if self.speed < 0:
            problems.append(f"speed must be >= 0 (0 = as fast as possible), not {self.speed}")
        if self.start is not None and self.start.tzinfo is None:
            problems.append("start must carry a time zone (e.g. 2026-01-05T06:00:00Z)")
        if problems:
            raise StationError("; ".join(problems), code="simulator.invalid_config")
        product(self.product)

    @property
    def start_time(self) -> datetime:
        return (self.start or DEFAULT_START).astimezone(UTC)


@dataclass(frozen=True)
class LineSummary:
    """What a run did. `outcomes` counts servers by final state (shipped, packed, scrapped)."""

    seed: int
    product: str
    units_started: int
    assemblies_started: int
    outcomes: dict[str, int]
    assembly_outcomes: dict[str, int]
    events_by_type: dict[str, int]
    first_event: datetime | None
    last_event: datetime | None

    @property
    def events_total(self) -> int:
        return sum(self.events_by_type.values())

    def to_json(self) -> dict[str, object]:
        def ts(t: datetime | None) -> str | None:
            return format_time(t) if t else None

        return {
            "seed": self.seed, "product": self.product, "units_started": self.units_started,
            "assemblies_started": self.assemblies_started, "outcomes": dict(self.outcomes),
            "assembly_outcomes": dict(self.assembly_outcomes),
            "events_by_type": dict(self.events_by_type), "events_total": self.events_total,
            "first_event": ts(self.first_event), "last_event": ts(self.last_event),
        }


@dataclass
class LinePlan:
    """Every event of one run: lot receipts, then each unit's own ordered events."""

    config: LineConfig
    receipts: list[SimEvent]
    units: list[Unit]  # in the order they were started

    @property
    def servers(self) -> list[Unit]:
        return [u for u in self.units if u.kind == "server"]

    @property
    def assemblies(self) -> list[Unit]:
        return [u for u in self.units if u.kind == "assembly"]

    def events_of(self, serial: str) -> list[SimEvent]:
        return next(u.events for u in self.units if u.serial == serial)

    def stream(self) -> list[SimEvent]:
        """All events in event-time order (ties: receipts first, then by unit start order)."""
        keyed = [((e.time, -1, i), e) for i, e in enumerate(self.receipts)]
        keyed += [((e.time, u.order, i), e) for u in self.units for i, e in enumerate(u.events)]
        keyed.sort(key=lambda k: k[0])
        return [e for _, e in keyed]

    def summary(self, events_by_type: dict[str, int] | None = None) -> LineSummary:
        stream = self.stream()
        counts = events_by_type if events_by_type is not None else Counter(e.event_type for e in stream)
        return LineSummary(
            seed=self.config.seed, product=self.config.product,
            units_started=len(self.servers), assemblies_started=len(self.assemblies),
            outcomes=dict(sorted(Counter(u.outcome for u in self.servers).items())),
            assembly_outcomes=dict(sorted(Counter(u.outcome for u in self.assemblies).items())),
            events_by_type=dict(sorted(counts.items())),
            first_event=stream[0].time if stream else None,
            last_event=stream[-1].time if stream else None,
        )


@dataclass
class _Build:
    """One server and the mainboard PCBA meant for it."""

    server: Unit
    pcba: Unit
    pcba_ready_ms: int | None = None
    server_waiting_ms: int | None = None


@dataclass
class _Schedule:
    ctx: LineContext
    units: list[Unit] = field(default_factory=list)
    builds: list[_Build] = field(default_factory=list)
    heap: list[tuple[int, int, int]] = field(default_factory=list)  # (ready ms, order, unit)
    free_at: dict[str, list[int]] = field(default_factory=dict)
    pcbas: int = 0

    def new_unit(self, kind: str, build: int) -> Unit:
        seed, p = self.ctx.seed, self.ctx.product
        batch = build // p.units_per_work_order + 1
        if kind == "server":
            serial, wo = f"SRV-S{seed}-{build + 1:06d}", f"WO-S{seed}-{p.name}-{batch:04d}"
        else:
            self.pcbas += 1
            serial, wo = f"PCBA-S{seed}-{self.pcbas:06d}", f"WO-S{seed}-MB-{batch:04d}"
        unit = Unit(serial=serial, kind="server" if kind == "server" else "assembly",
                    product=p.name, work_order=wo, build=build, order=len(self.units))
        self.units.append(unit)
        return unit

    def push(self, unit: Unit, ms: int) -> None:
        heapq.heappush(self.heap, (ms, unit.order, unit.order))

    def transport(self) -> int:
        return self.ctx.rng.randint(30_000, 120_000)

    def run(self) -> None:
        p = self.ctx.product
        while self.heap:
            ms, _, index = heapq.heappop(self.heap)
            unit = self.units[index]
            build = self.builds[unit.build]
            route = p.route(unit.kind)
            step = p.repair if unit.failure else route[unit.route_index]
            if unit.kind == "server" and step.step == 70 and unit.failure is None:
                if build.pcba_ready_ms is None:
                    build.server_waiting_ms = ms
                    continue
                ms = max(ms, build.pcba_ready_ms)
                unit.mainboard = build.pcba
                build.pcba.outcome = "installed"
            slots = self.free_at.setdefault(step.station_id, [0] * step.capacity)
            lane = min(range(len(slots)), key=lambda i: (slots[i], i))
            depart, outcome = visit(self.ctx, unit, step, max(ms, slots[lane]), lane)
            slots[lane] = depart
            nxt = depart + self.transport()
            if unit.failure is not None:  # this was the repair
                if outcome.scrapped:
                    unit.outcome = "scrapped"
                    if unit.kind == "assembly":
                        build.pcba = self.new_unit("assembly", unit.build)
                        self.push(build.pcba, nxt)
                    continue
                unit.route_index = next(i for i, s in enumerate(route) if s.step == unit.failure.step)
                unit.failure = None
                self.push(unit, nxt)
            elif outcome.failure is not None:
                unit.failure = outcome.failure
                self.push(unit, nxt)
            else:
                unit.route_index += 1
                if step.step == 110:
                    unit.outcome = "packed"
                if unit.route_index < len(route):
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
    p: Product = product(config.product)
    rng = random.Random(f"linetrace-sim:{config.seed}:line")
    rec = Recorder(config.start_time, random.Random(f"linetrace-sim:{config.seed}:ids"))
    ctx = LineContext(product=p, seed=config.seed, rng=rng, rec=rec,
                      stock=Stock(config.seed, random.Random(f"linetrace-sim:{config.seed}:lots")))
    sched = _Schedule(ctx)
    production_ms = p.receiving_window_s * 1000
    for i in range(config.units):
        pcba = sched.new_unit("assembly", i)
        server = sched.new_unit("server", i)
        sched.builds.append(_Build(server=server, pcba=pcba))
        sched.push(pcba, production_ms + i * p.pcba_takt_s * 1000)
        sched.push(server, production_ms + p.server_lead_s * 1000 + i * p.server_takt_s * 1000)
    sched.run()
    lots = ctx.stock.lots
    spacing = max(1, production_ms // max(1, len(lots)))
    station = RECEIVING_STATION[0]
    receipts = [rec.event(i * spacing, station, "material.received", lot.lot_id, lot.receipt())
                for i, lot in enumerate(lots)]
    return LinePlan(config=config, receipts=receipts, units=sched.units)
