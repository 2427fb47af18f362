"""A unit's progress along its route, folded from its own events in order, and the checks made
from it (pure: no I/O). One source of truth for the worker's route stage
(`linetrace.streams.route_stage`) and the synchronous interlock (`linetrace validate`,
`linetrace.ledger.interlock`).

The fold (`Progress.apply`) reads a unit's own events in the order they were stored (one unit,
one partition, so that order is the station's): `unit.arrived`, `work.started` (which names the
product: the route is known from the first one), `work.completed` with its result,
`unit.tested` / `unit.inspected` (the evidence a quality gate needs, counted at the step of the
work in progress), `materials.installed` / `materials.uninstalled` (the lots and MPNs it holds),
`unit.repaired` and `unit.scrapped`. The ends of the unit's route holds, read from the holds the
ledger keeps, are folded in at their position in the log (`Ended`): a release waives the checks
that stopped the unit at that step, a disposition decides the failure it was held for.

The checks, each a list of `Reason(code, message)` (codes are a contract, docs/routes.md):

- `entry_reasons`: may the unit arrive at / start step N at a station of type T? Required steps
  completed (`route.skipped_step`), quality gates before it passed (`route.gate_failed`), the
  step on the unit's route (`route.unknown_step`) and done by that station type
  (`route.wrong_station`), the unit's first event at its route's first step
  (`route.unknown_unit`);
- `completion_reasons`: a `work.completed` result the step does not list
  (`route.result_not_allowed`);
- `failure_outcome` / `repair_outcome`: what a `Failed` result or a repair that could not
  repair means: the route's rework loop to its repair step while loops are left, otherwise a
  hold for a person's disposition (`route.max_loops`, `route.failed_no_rework`,
  `route.unable_to_repair`);
- `assembly_reasons`: a consumed sub-assembly must have completed its own route
  (`route.assembly_incomplete`);
- `hold_reason`: the reason a hold in force gives (`route.held`, `route.material_held`,
  `route.station_locked`).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

import msgspec

from .. import bodies as b
from ..errors import MalformedEvent
from .model import Route, Step, SubAssembly

SKIPPED_STEP = "route.skipped_step"
GATE_FAILED = "route.gate_failed"
RESULT_NOT_ALLOWED = "route.result_not_allowed"
UNKNOWN_UNIT = "route.unknown_unit"
UNKNOWN_STEP = "route.unknown_step"
WRONG_STATION = "route.wrong_station"
ASSEMBLY_INCOMPLETE = "route.assembly_incomplete"
HELD = "route.held"
MATERIAL_HELD = "route.material_held"
STATION_LOCKED = "route.station_locked"
PART_INSTALLED_ELSEWHERE = "route.part_installed_elsewhere"
LOT_NOT_RECEIVED = "route.lot_not_received"
MAX_LOOPS = "route.max_loops"
UNABLE_TO_REPAIR = "route.unable_to_repair"
FAILED_NO_REWORK = "route.failed_no_rework"

#: What each code means (docs/routes.md, "Enforcement", lists them).
CODES: dict[str, str] = {
    SKIPPED_STEP: "a required earlier step was not completed",
    GATE_FAILED: "a quality gate before the step was completed without a passing test or "
                 "inspection",
    RESULT_NOT_ALLOWED: "the step reported a result its route does not list",
    UNKNOWN_UNIT: "the unit's first event is not at its route's first step",
    UNKNOWN_STEP: "the step is not on the unit's route",
    WRONG_STATION: "the station's type is not the step's",
    ASSEMBLY_INCOMPLETE: "a consumed sub-assembly has not completed its own route",
    HELD: "the unit is on hold",
    MATERIAL_HELD: "the unit contains, or would receive, a lot or MPN that is on hold",
    STATION_LOCKED: "the station is locked by a station hold",
    PART_INSTALLED_ELSEWHERE: "a part serial is already installed in another unit",
    LOT_NOT_RECEIVED: "a lot was never received",
    MAX_LOOPS: "the step failed again after its route's max_loops repairs: held for a "
               "disposition",
    UNABLE_TO_REPAIR: "the repair could not repair the unit: held for a disposition",
    FAILED_NO_REWORK: "the step failed and its route has no rework for it: held for a "
                      "disposition",
}
#: Codes of the unit's own route: the worker holds the unit for them.
ROUTE_CODES = frozenset({SKIPPED_STEP, GATE_FAILED, RESULT_NOT_ALLOWED, UNKNOWN_UNIT,
                         UNKNOWN_STEP, WRONG_STATION, ASSEMBLY_INCOMPLETE})
#: Codes of holds that wait for a person's disposition (scrap, use-as-is, another repair).
DISPOSITION_CODES = frozenset({MAX_LOOPS, UNABLE_TO_REPAIR, FAILED_NO_REWORK})

#: A unit's own event types the fold reads (on line.events).
PROGRESS_TYPES: tuple[str, ...] = (
    "unit.arrived", "work.started", "work.completed", "unit.inspected", "unit.tested",
    "materials.installed", "materials.uninstalled", "unit.repaired", "unit.scrapped")
#: Event types at which a unit tries to enter a step (the entry checks run there).
ENTRY_TYPES = frozenset({"unit.arrived", "work.started"})


# --- what the fold reads of a stored event ----------------------------------------------------
#
# A unit's earlier events are read back for every batch that touches it: the fold reads only
# the fields below, leniently (never re-applying admission's patterns and bounds, as
# `envelope.decode_stored_event` does not either), about ten times faster than the full bodies.


class _Fact(msgspec.Struct, kw_only=True):
    """Base of the fields the fold reads from one stored event's `data`."""


class Arrived(_Fact, kw_only=True):
    step: int


class Started(_Fact, kw_only=True):
    step: int
    product: str
    kind: str = "server"
    work_order: str


class Completed(_Fact, kw_only=True):
    step: int
    result: str


class Checked(_Fact, kw_only=True):  # unit.tested, unit.inspected
    result: str


class Item(_Fact, kw_only=True):
    lot: str
    mpn: str
    serial: str | None = None
    category: str | None = None


class Installed(_Fact, kw_only=True):
    items: list[Item]


class Removed(_Fact, kw_only=True):
    lot: str | None = None
    mpn: str | None = None


class Uninstalled(_Fact, kw_only=True):
    items: list[Removed]


class Repaired(_Fact, kw_only=True):
    result: str
    return_step: int | None = None


class Scrapped(_Fact, kw_only=True):
    pass


class _Envelope(msgspec.Struct):
    type: str
    data: msgspec.Raw


_FACTS: dict[str, type[_Fact]] = {
    "unit.arrived": Arrived, "work.started": Started, "work.completed": Completed,
    "unit.tested": Checked, "unit.inspected": Checked, "materials.installed": Installed,
    "materials.uninstalled": Uninstalled, "unit.repaired": Repaired, "unit.scrapped": Scrapped,
}
_ENVELOPE = msgspec.json.Decoder(_Envelope)
_FACT_DECODERS = {t: msgspec.json.Decoder(f) for t, f in _FACTS.items()}

#: What `Progress.apply` reads: an event's full body, or the facts `read_fact` gives.
Fact = b.Body | _Fact


def read_fact(value: bytes) -> tuple[str, _Fact]:
    """(type, the fold's fields) of a stored event of one of PROGRESS_TYPES."""
    try:
        env = _ENVELOPE.decode(value)
        return env.type, _FACT_DECODERS[env.type].decode(env.data)
    except (msgspec.ValidationError, msgspec.DecodeError, KeyError) as e:
        raise MalformedEvent(f"stored event cannot be read for its route: {e}",
                             code="event.invalid") from None


@dataclass(frozen=True)
class Reason:
    """Why a unit may not go on: a stable `code` and a message for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class Rules:
    """What the fold needs besides the events: the route a unit follows, given what its first
    `work.started` says (`product`, `kind`; None where no route is in force for it, or no
    longer the one it started on), and the steps any route in force starts at."""

    route_for: Callable[[str, str], Route | None]
    first_steps: Mapping[int, frozenset[str]]  # first step -> the station types doing it


def first_steps_of(routes: Iterable[Route]) -> dict[int, frozenset[str]]:
    """Each step a route in force starts at, with the station types that do it."""
    out: dict[int, set[str]] = {}
    for r in routes:
        out.setdefault(r.first_step.step, set()).add(r.first_step.station_type)
    return {n: frozenset(types) for n, types in out.items()}


@dataclass(frozen=True)
class Ended:
    """One of the unit's route holds that ended, at its position in the log: `decision` is a
    disposition's (scrap, use-as-is, repair), None for a release. `step`: the hold's step."""

    seq: int
    code: str
    step: int | None
    decision: str | None = None


@dataclass(frozen=True)
class Failure:
    """What a failure means: `repair` (the route's rework: go to that repair step, loop
    `loop` of `max_loops`, then back to `return_to`), or `hold` (a disposition is needed)."""

    step: int
    repair: Step | None = None
    return_to: int | None = None
    loop: int = 0
    max_loops: int = 0
    hold: Reason | None = None


def describe_step(route: Route | None, number: int) -> str:
    """"step 80 (firmware-flash)", or "step 80" where the route does not know it."""
    if route is not None and route.has_step(number):
        return f"step {number} ({route.step(number).operation})"
    return f"step {number}"


@dataclass
class Progress:
    """Where a unit stands on its route, after the events folded so far."""

    serial: str
    rules: Rules
    route: Route | None = None
    product: str | None = None
    kind: str | None = None
    work_order: str | None = None
    events: int = 0  # arrivals and starts folded
    first_step: int | None = None
    step: int | None = None  # the latest arrival's or start's
    station: str | None = None  # the station of the latest arrival or start
    working: int | None = None  # the step of the work in progress (work.started, not completed)
    passed: set[int] = field(default_factory=set)
    unproven: dict[int, str] = field(default_factory=dict)  # gate completed without: "failed"/"missing"
    failed: set[int] = field(default_factory=set)  # steps whose latest result is Failed
    evidence: dict[int, str] = field(default_factory=dict)  # gate evidence of the latest attempt
    loops: Counter[int] = field(default_factory=Counter)  # rework loops used, per failed step
    grants: Counter[int] = field(default_factory=Counter)  # loops a disposition added
    failing: int | None = None  # the flow step whose failure is being repaired / decided
    awaiting_disposition: bool = False
    waived_stations: set[int] = field(default_factory=set)
    waived_unknown: bool = False
    scrapped: bool = False
    lots: Counter[str] = field(default_factory=Counter)
    mpns: Counter[str] = field(default_factory=Counter)

    # --- the fold ------------------------------------------------------------------------

    def apply(self, event_type: str, body: Fact, station: str | None = None) -> None:
        """Fold one of the unit's own events (types of PROGRESS_TYPES; others are ignored),
        sent by `station`: its body, or what `read_fact` read of it."""
        if isinstance(body, (b.UnitArrived, Arrived)):
            self._enter(body.step, station)
        elif isinstance(body, (b.WorkStarted, Started)):
            self._enter(body.step, station)
            self.learn(body)
            self.working = body.step
            self.evidence.pop(body.step, None)
        elif isinstance(body, (b.UnitTested, b.UnitInspected, Checked)):
            at = self.working if self.working is not None else self.step
            if at is not None:
                ok = body.result == "Passed"
                self.evidence[at] = "failed" if not ok or self.evidence.get(at) == "failed" \
                    else "passed"
        elif isinstance(body, (b.WorkCompleted, Completed)):
            self._completed(body)
        elif isinstance(body, (b.UnitRepaired, Repaired)):
            self._repaired(body)
        elif isinstance(body, (b.UnitScrapped, Scrapped)):
            self.scrapped, self.failing = True, None
        elif isinstance(body, (b.MaterialsInstalled, Installed)):
            for item in body.items:
                self.lots[item.lot] += 1
                self.mpns[item.mpn] += 1
        elif isinstance(body, (b.MaterialsUninstalled, Uninstalled)):
            for removed in body.items:
                if removed.lot is not None and self.lots[removed.lot] > 0:
                    self.lots[removed.lot] -= 1
                if removed.mpn is not None and self.mpns[removed.mpn] > 0:
                    self.mpns[removed.mpn] -= 1

    def learn(self, body: b.WorkStarted | Started) -> None:
        """What a `work.started` says about the unit: its product, hence its route (the first
        one that names it), and its work order. Applied before judging the start itself."""
        if self.product is None:
            self.product, self.kind = body.product, body.kind
            self.route = self.rules.route_for(body.product, body.kind)
        self.work_order = body.work_order

    def _enter(self, step: int, station: str | None) -> None:
        if self.first_step is None:
            self.first_step = step
        self.events += 1
        self.step = step
        self.station = station

    def _flow(self, number: int) -> bool:
        return self.route is not None and any(s.step == number for s in self.route.steps)

    def _completed(self, body: b.WorkCompleted | Completed) -> None:
        s, result = body.step, body.result
        if self.working == s:
            self.working = None
        route = self.route
        if route is None or not route.has_step(s):
            return
        step = route.step(s)
        if not step.allows(result):
            return  # a result the route does not list changes nothing (the unit is held)
        if result == "Completed" or result == "Skipped":
            self.failed.discard(s)
            if result == "Completed" and step.quality_gate and self.evidence.get(s) != "passed":
                self.unproven[s] = self.evidence.get(s, "missing")
                self.passed.discard(s)
            else:
                self.passed.add(s)
                self.unproven.pop(s, None)
            if self.failing == s:
                self.failing = None
        elif result == "Failed":
            outcome = self.failure_outcome(s)
            self.passed.discard(s)
            self.unproven.pop(s, None)
            if not step.is_repair:
                self.failed.add(s)
                self.failing = s
            if outcome is not None and outcome.hold is not None:
                self.awaiting_disposition = True
            elif outcome is not None:
                self.loops[s] += 1

    def _repaired(self, body: b.UnitRepaired | Repaired) -> None:
        if body.result == "Scrap":
            self.scrapped, self.failing = True, None
            return
        if body.result == "UnableToRepair":
            self.awaiting_disposition = True
            return
        route, failing = self.route, self.failing
        target = body.return_step
        if target is None and route is not None and failing is not None:
            rework = route.step(failing).rework if route.has_step(failing) else None
            target = rework.return_to if rework is not None else failing
        if route is not None and target is not None:
            flow = [s.step for s in route.steps]
            if target in flow:  # the steps from `target` on are done again
                for s in flow[flow.index(target):]:
                    self.passed.discard(s)
                    self.unproven.pop(s, None)
                    self.failed.discard(s)
        self.failing = None

    def end_hold(self, ended: Ended) -> None:
        """Fold the end of one of the unit's route holds (module docstring)."""
        if ended.code in DISPOSITION_CODES or ended.decision is not None:
            self._dispose(ended)
            return
        if ended.code not in ROUTE_CODES or ended.step is None:
            return
        # A person released the unit held at this step: what stopped it there is waived.
        n = ended.step
        self.waived_stations.add(n)
        self.waived_unknown = True
        route = self.route
        if route is not None and route.has_step(n):
            for r in route.required_before(n):
                if r not in self.passed:
                    self.passed.add(r)
                    self.unproven.pop(r, None)
                    self.failed.discard(r)

    def _dispose(self, ended: Ended) -> None:
        self.awaiting_disposition = False
        step = ended.step if ended.step is not None and self._flow(ended.step) else self.failing
        if ended.decision is None or step is None:
            return
        if ended.decision == "repair":  # one more loop, used now
            self.grants[step] += 1
            self.loops[step] += 1
            self.failing = step
        elif ended.decision == "use-as-is":
            self.passed.add(step)
            self.unproven.pop(step, None)
            self.failed.discard(step)
            self.failing = None
        elif ended.decision == "scrap":
            self.scrapped, self.failing = True, None

    # --- what the unit holds -------------------------------------------------------------

    @property
    def held_lots(self) -> list[str]:
        return sorted(k for k, n in self.lots.items() if n > 0)

    @property
    def held_mpns(self) -> list[str]:
        return sorted(k for k, n in self.mpns.items() if n > 0)

    def completed_route(self) -> bool:
        return (self.route is not None and not self.scrapped
                and all(s.step in self.passed for s in self.route.steps))

    # --- the checks ----------------------------------------------------------------------

    def entry_reasons(self, number: int, station_type: str | None) -> list[Reason]:
        """May the unit arrive at / start step `number` at a station of `station_type`
        (None: not checked)? Every reason it may not, in route order."""
        route = self.route
        first = self.first_step if self.first_step is not None else number
        if route is None:
            if self.product is not None or self.waived_unknown:
                return []  # its product has no route in force: nothing to judge it by
            types = self.rules.first_steps.get(first)
            if types is None:
                return [Reason(UNKNOWN_UNIT, f"{self._first_event(first)}, where no route in "
                               f"force starts (routes start at step "
                               f"{_steps(self.rules.first_steps)})")]
            if self.first_step is None and station_type is not None and station_type not in types:
                return [Reason(WRONG_STATION, f"step {number} starts a route at a "
                               f"{' or '.join(sorted(types))} station, not a {station_type} "
                               "station")]
            return []
        out: list[Reason] = []
        start = route.first_step.step
        if first != start and not self.waived_unknown:
            out.append(Reason(UNKNOWN_UNIT, f"{self._first_event(first)}, but route "
                              f"{route.product} starts at {describe_step(route, start)}"))
        if not route.has_step(number):
            out.append(Reason(UNKNOWN_STEP, f"route {route.product} (revision "
                              f"{route.revision}) has no step {number}"))
            return out
        step = route.step(number)
        if (station_type is not None and station_type != step.station_type
                and number not in self.waived_stations):
            out.append(Reason(WRONG_STATION, f"{describe_step(route, number)} is done at a "
                              f"{step.station_type} station, not a {station_type} station"))
        for r in sorted(route.required_before(number)):
            if r in self.passed:
                continue
            what = describe_step(route, r)
            if r in self.unproven:
                why = "its test or inspection failed" if self.unproven[r] == "failed" \
                    else "no passing test or inspection was recorded there"
                out.append(Reason(GATE_FAILED, f"{what} is a quality gate before step {number} "
                                  f"and was completed without passing: {why}"))
            elif r in self.failed:
                out.append(Reason(SKIPPED_STEP, f"{what} is required before step {number}: it "
                                  "failed and the unit was not repaired and done again"))
            else:
                out.append(Reason(SKIPPED_STEP, f"{what} is required before step {number} and "
                                  "was not completed"))
        return out

    def _first_event(self, first: int) -> str:
        if self.first_step is None:
            return f"{self.serial} has no earlier event and enters the line at step {first}"
        return f"{self.serial}'s first event was at step {first}"

    def completion_reasons(self, body: b.WorkCompleted) -> list[Reason]:
        """Is the result one the step lists?"""
        route = self.route
        if route is None or not route.has_step(body.step):
            return []
        step = route.step(body.step)
        if step.allows(body.result):
            return []
        return [Reason(RESULT_NOT_ALLOWED, f"{describe_step(route, body.step)} may report "
                       f"{', '.join(step.results)}, not {body.result}")]

    def failure_outcome(self, number: int) -> Failure | None:
        """What a `Failed` result at step `number` means, given the loops used so far (None:
        nothing to decide: no route, or the unit already waits for a disposition)."""
        route = self.route
        if route is None or not route.has_step(number) or self.awaiting_disposition:
            return None
        step = route.step(number)
        what = describe_step(route, number)
        if step.is_repair:
            return Failure(number, hold=Reason(FAILED_NO_REWORK, (
                f"the repair at {what} failed for {self.serial}: held for a disposition "
                "(scrap, use-as-is or another repair)")))
        rework = step.rework
        if rework is None:
            return Failure(number, hold=Reason(FAILED_NO_REWORK, (
                f"{what} failed and route {route.product} has no rework for it: {self.serial} "
                "is held for a disposition (scrap, use-as-is or another repair)")))
        allowed = rework.max_loops + self.grants[number]
        used = self.loops[number]
        if used >= allowed:
            return Failure(number, hold=Reason(MAX_LOOPS, (
                f"{what} failed again after {used} repair loop(s) (max_loops "
                f"{rework.max_loops}{_granted(self.grants[number])}): {self.serial} is held "
                "for a disposition (scrap, use-as-is or another repair)")))
        return Failure(number, repair=route.step(rework.repair_step), return_to=rework.return_to,
                       loop=used + 1, max_loops=allowed)

    def repair_outcome(self, body: b.UnitRepaired) -> Failure | None:
        """A repair that could not repair the unit holds it for a disposition."""
        if body.result != "UnableToRepair" or self.awaiting_disposition:
            return None
        at = self.working if self.working is not None else self.step
        number = at if at is not None else (self.failing or 0)
        failed = f" (failed {describe_step(self.route, self.failing)})" \
            if self.failing is not None else ""
        return Failure(number, hold=Reason(UNABLE_TO_REPAIR, (
            f"the repair at {describe_step(self.route, number)} could not repair "
            f"{self.serial}{failed}: held for a disposition (scrap, use-as-is or another "
            "repair)")))

    def consumed(self, body: b.MaterialsInstalled) -> list[tuple[b.InstalledItem, SubAssembly]]:
        """The items of an install that are sub-assemblies the current step consumes (by
        category; each must name its serial)."""
        route = self.route
        at = self.working if self.working is not None else self.step
        if route is None or at is None or not route.has_step(at):
            return []
        wanted = {a.category: a for a in route.step(at).consumes}
        return [(item, wanted[item.category]) for item in body.items
                if item.serial is not None and item.category in wanted]

    @property
    def current_step(self) -> int | None:
        return self.working if self.working is not None else self.step


def assembly_reasons(assembly: Progress, sub: SubAssembly, into: str, at_step: int) -> list[Reason]:
    """May `assembly` (its progress up to the install) be installed in `into` at `at_step`?
    It must be a unit of the consumed route that completed every step of it."""
    serial = assembly.serial
    where = f"before its install in {into} at step {at_step}"
    if assembly.first_step is None and assembly.product is None:
        return [Reason(ASSEMBLY_INCOMPLETE, f"sub-assembly {serial} has no events in the ledger "
                       f"{where}: its route {sub.route} was never started")]
    route = assembly.route
    if route is None or route.product != sub.route:
        what = route.product if route is not None else (assembly.product or "unknown")
        return [Reason(ASSEMBLY_INCOMPLETE, f"sub-assembly {serial} is not a unit of route "
                       f"{sub.route} (it follows {what})")]
    if assembly.scrapped:
        return [Reason(ASSEMBLY_INCOMPLETE, f"sub-assembly {serial} was scrapped {where}")]
    missing = [s for s in route.steps if s.step not in assembly.passed]
    if not missing:
        return []
    steps = ", ".join(describe_step(route, s.step) for s in missing)
    return [Reason(ASSEMBLY_INCOMPLETE, f"sub-assembly {serial} (route {route.product}) has not "
                   f"passed {steps} {where}")]


def hold_reason(serial: str, hold_id: str, scope: str, target: str, reason: str) -> Reason:
    """The reason an active hold gives against a unit (or the station it is at)."""
    why = reason.strip().splitlines()[0] if reason.strip() else "no reason given"
    if scope == "station":
        return Reason(STATION_LOCKED, f"station {target} is locked by hold {hold_id}: {why}")
    if scope in ("lot", "mpn"):
        return Reason(MATERIAL_HELD, f"{scope} {target} (in or for {serial}) is on hold "
                      f"{hold_id}: {why}")
    if scope == "work_order":
        return Reason(HELD, f"work order {target} of {serial} is on hold {hold_id}: {why}")
    return Reason(HELD, f"{serial} is on hold {hold_id}: {why}")


def replay(serial: str, rules: Rules, events: Iterable[tuple[int, str, Fact, str | None]],
           ended: Iterable[Ended] = ()) -> Progress:
    """The progress after the unit's events (seq, type, body, station) and its ended holds,
    in seq order."""
    progress = Progress(serial, rules)
    stops = sorted(ended, key=lambda e: e.seq)
    i = 0
    for seq, event_type, body, station in events:
        while i < len(stops) and stops[i].seq < seq:
            progress.end_hold(stops[i])
            i += 1
        progress.apply(event_type, body, station)
    for rest in stops[i:]:
        progress.end_hold(rest)
    return progress


def _steps(steps: Iterable[int]) -> str:
    return ", ".join(str(s) for s in sorted(steps)) or "none"


def _granted(n: int) -> str:
    return f", +{n} granted by disposition" if n else ""
