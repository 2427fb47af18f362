"""The conducted line (docs/simulator.md "Conducted mode"), without a broker: linetrace routes
failed units, decides dispositions, locks stations and answers the interlock; the simulator
obeys and no longer routes or scraps on its own.

The dispatcher is driven with in-memory stations; a small stand-in for linetrace (`Conductor`)
answers a `Failed` result with a `command.route` as the route says, as the worker does.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from functools import cache

import pytest

from linetrace.schemas.bodies import (
    Body, CommandHold, CommandLock, CommandRelease, CommandRoute, MaterialsInstalled,
    MaterialsUninstalled, UnitRepaired, UnitScrapped, WorkCompleted,
)
from linetrace.schemas.envelope import SYSTEM_SOURCE, encode_event
from linetrace.schemas.signing import generate_key, sign_value
from linetrace.stations.errors import StationError
from linetrace.stations.simulator import LineConfig, LinePlan, SimEvent, generate_line, parse_faults
from linetrace.stations.simulator.commands import Holds, LineCommands
from linetrace.stations.simulator.dispatcher import Dispatcher, LineStatus

# Seed 5, four servers, skip-step:4, fatal-xid:3, bad-lot:1 (the integration test's run):
# server 1 fails burn-in three times (bad lot) and awaits a disposition, server 2 fails twice
# and ships, server 3 fails once (XID 79) and ships, server 4 skips the firmware flash.
FAULTS = "skip-step:4,fatal-xid:3,bad-lot:1"
HELD = "SRV-S5-000001"
TWICE = "SRV-S5-000002"
ONCE = "SRV-S5-000003"


def conducted(seed: int = 5, units: int = 4, faults: str = FAULTS) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed, faults=parse_faults(faults),
                                    conducted=True))


@cache
def unconducted(seed: int = 5, units: int = 4, faults: str = FAULTS) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed, faults=parse_faults(faults)))


Sent = tuple[str, str, str, datetime, str, Body]  # station, type, subject, time, id, body


class Stations(dict[str, "Stations"]):
    """Every station of the line, in memory, writing to one log."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[Sent] = []
        self.station = ""

    def __missing__(self, station: str) -> Stations:
        emitter = _Station(self, station)
        self[station] = emitter  # type: ignore[assignment]
        return emitter  # type: ignore[return-value]


class _Station:
    def __init__(self, line: Stations, station: str) -> None:
        self.line, self.station = line, station

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        await asyncio.sleep(0)
        assert isinstance(time, datetime) and event_id is not None
        self.line.log.append((self.station, event_type, subject, time, event_id, body))
        return b"{}"

    async def flush(self) -> None:
        await asyncio.sleep(0)


def failed(e: SimEvent | Sent) -> int | None:
    """The step of a `work.completed` Failed, else None."""
    body = e.body if isinstance(e, SimEvent) else e[5]
    if isinstance(body, WorkCompleted) and body.result == "Failed":
        return body.step
    return None


class Conductor:
    """What linetrace's route stage does with a failure: within the rework's `max_loops`, a
    `command.route` to the repair step; after it (or a failed repair), nothing: the unit is
    held for a disposition (`needs_disposition`)."""

    def __init__(self, plan: LinePlan, holds: Holds, *, route: bool = True) -> None:
        self.plan, self.holds, self.route = plan, holds, route
        self.failures: Counter[tuple[str, int]] = Counter()
        self.needs_disposition: list[str] = []
        self.routed: list[str] = []

    def on_event(self, ev: SimEvent, _value: bytes) -> None:
        step = failed(ev)
        if step is None:
            return
        unit = self.plan.unit(ev.subject)
        route = self.plan.context.product_of(unit).route_of(unit.kind)  # type: ignore[union-attr]
        rework = route.rework_of(step)
        self.failures[ev.subject, step] += 1
        if rework is None or self.failures[ev.subject, step] > rework.max_loops:
            self.needs_disposition.append(ev.subject)
        elif self.route:
            self.send_route(ev.subject, rework.repair_step)

    def send_route(self, unit: str, step: int, decision: str = "rework",
                   reason: str = "failed: rework as the route says",
                   hold_id: str | None = None) -> None:
        self.routed.append(unit)
        self.holds.route(CommandRoute(unit=unit, step=step, station_type="repair",
                                      decision=decision, reason=reason, hold_id=hold_id))  # type: ignore[arg-type]


async def until(pred: Callable[[], object], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.005)


async def quiescent() -> None:
    """Until no task can run but timers (the interlock's retries)."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0)
        if not loop._ready:  # type: ignore[attr-defined]
            return


class Run:
    """A conducted run on in-memory stations, with a conductor."""

    def __init__(self, plan: LinePlan, *, route: bool = True, interlock: object = None,
                 holds: Holds | None = None) -> None:
        self.plan = plan
        self.stations = Stations()
        self.holds = holds if holds is not None else Holds()
        self.conductor = Conductor(plan, self.holds, route=route)
        self.statuses: list[LineStatus] = []
        self.dispatcher = Dispatcher(plan.stream(), self.stations, holds=self.holds, plan=plan,
                                     on_event=self.conductor.on_event,
                                     interlock=interlock,  # type: ignore[arg-type]
                                     on_status=self.statuses.append, retry_s=0.05)
        self.task: asyncio.Task[Counter[str]] | None = None

    def start(self) -> None:
        self.task = asyncio.create_task(self.dispatcher.run())

    async def idle(self, after: int = 0) -> LineStatus:
        """The first idle status reported after the `after`-th."""
        await until(lambda: len(self.statuses) > after and self.statuses[-1].idle)
        return self.statuses[-1]

    async def finish(self) -> None:
        assert self.task is not None
        await asyncio.wait_for(self.task, 30)

    @property
    def log(self) -> list[Sent]:
        return self.stations.log

    def of(self, unit: str) -> list[Sent]:
        return [s for s in self.log if s[2] == unit]


def types(sent: Sequence[Sent]) -> list[str]:
    return [s[1] for s in sent]


def steps_started(sent: Sequence[Sent]) -> list[int]:
    return [getattr(s[5], "step") for s in sent if s[1] == "work.started"]


# --- the plan -------------------------------------------------------------------------------


def test_the_conducted_plan_never_scraps_and_stops_a_unit_for_a_disposition_after_max_loops(
        ) -> None:
    p = conducted()
    assert p.awaiting == [HELD]
    held = p.unit(HELD)
    assert held.outcome == "awaiting_disposition"
    fails = [failed(e) for e in held.events if failed(e)]
    assert fails == [90, 90, 90]  # max_loops = 2 repairs, the third failure awaits
    assert [e for e in held.events if e.event_type == "unit.repaired"].__len__() == 2
    assert held.events[-1].event_type == "unit.departed"  # left burn-in, nothing after
    stream = p.stream()
    assert not [e for e in stream if isinstance(e.body, UnitScrapped)]
    assert not [e for e in stream if isinstance(e.body, UnitRepaired) and e.body.result == "Scrap"]
    # The unconducted line scraps the same unit on its own.
    assert unconducted().unit(HELD).outcome == "scrapped"


def test_every_planned_repair_visit_is_a_gate_linetrace_opens() -> None:
    p = conducted()
    by_id = {e.event_id: e for e in p.stream()}
    assert len(p.gates) == 5  # server 1: 2 repairs, server 2: 2, server 3: 1
    for event_id, step in p.gates.items():
        e = by_id[event_id]
        assert e.event_type == "unit.arrived" and e.station_id == "repair-01" and step == 900


def test_a_repair_that_finds_more_damage_reports_unable_to_repair_and_awaits() -> None:
    p = conducted(seed=6)  # server 3's repair after its burn-in failure finds more damage
    unit = p.unit("SRV-S6-000003")
    assert unit.outcome == "awaiting_disposition" and unit.serial in p.awaiting
    repaired = [e.body for e in unit.events if isinstance(e.body, UnitRepaired)]
    assert [r.result for r in repaired] == ["UnableToRepair"]
    assert [failed(e) for e in unit.events if failed(e)] == [90, 900]
    assert unit.events[-1].event_type == "unit.departed"


def test_a_pcba_awaiting_a_disposition_is_replaced_by_a_new_board_for_its_server() -> None:
    p = conducted(seed=22)
    board = p.unit("PCBA-S22-000003")
    assert board.outcome == "awaiting_disposition"
    server = p.unit("SRV-S22-000003")
    assert server.outcome == "shipped"
    assert server.mainboard is not None and server.mainboard.serial != board.serial


def test_conducted_plans_are_reproducible_and_unconducted_plans_unchanged() -> None:
    a, b = conducted(), conducted()
    assert [e.event_id for e in a.stream()] == [e.event_id for e in b.stream()]
    assert a.gates == b.gates and a.awaiting == b.awaiting
    u = unconducted()
    assert not u.gates and not u.awaiting


# --- routes -----------------------------------------------------------------------------------


def test_a_failed_unit_waits_until_linetrace_routes_it_then_goes_to_repair() -> None:
    p = conducted()

    async def go() -> None:
        run = Run(p, route=False)
        run.start()
        status = await run.idle()
        for unit in (HELD, TWICE, ONCE):  # each left its failing station and waits
            mine = run.of(unit)
            assert mine[-1][1] == "unit.departed" and failed(mine[-2]) == 90
            assert "command.route" in status.waiting[unit]
        assert not [s for s in run.log if s[0] == "repair-01" and s[1] != "station.state"]
        clock = run.dispatcher.line_clock()
        assert clock is not None
        run.conductor.route = True
        run.conductor.send_route(ONCE, 900)
        await until(lambda: any(s[2] == ONCE and s[1] == "unit.shipped" for s in run.log))
        mine = run.of(ONCE)
        planned = [e for e in p.unit(ONCE).events]
        assert [s[4] for s in mine] == [e.event_id for e in planned]  # the plan, in order
        repair = next(s for s in mine if s[0] == "repair-01")
        assert repair[1] == "unit.arrived" and repair[3] >= clock  # at the line clock
        assert steps_started(mine)[-6:] == [900, 80, 90, 100, 110, 120]
        assert any(isinstance(s[5], MaterialsUninstalled) for s in mine)  # a GPU replaced
        run.task.cancel()  # type: ignore[union-attr]

    asyncio.run(go())


def test_routed_units_follow_the_plan_and_the_unit_past_max_loops_waits_for_a_disposition(
        ) -> None:
    p = conducted()

    async def go() -> None:
        run = Run(p)
        run.start()
        status = await run.idle()
        assert run.conductor.needs_disposition == [HELD]
        assert set(status.waiting) == {HELD}
        assert "decision (disposition)" in status.waiting[HELD]
        for unit in (TWICE, ONCE, "SRV-S5-000004"):
            assert run.of(unit)[-1][1] == "unit.departed"
            assert "unit.shipped" in types(run.of(unit))
        assert sorted(run.conductor.routed) == sorted([HELD, HELD, TWICE, TWICE, ONCE])
        assert not any(s[1] == "unit.scrapped" for s in run.log)
        run.task.cancel()  # type: ignore[union-attr]

    asyncio.run(go())


@pytest.mark.parametrize("decision, step", [("scrap", 900), ("repair", 900),
                                            ("use-as-is", 100)])
def test_a_disposition_is_carried_out_from_the_line_clock(decision: str, step: int) -> None:
    p = conducted()

    async def go() -> list[Sent]:
        run = Run(p)
        run.start()
        await run.idle()
        before = len(run.of(HELD))
        clock = run.dispatcher.line_clock()
        assert clock is not None
        run.holds.hold(HELD, "awaits a disposition", "HOLD-1")
        run.conductor.send_route(HELD, step, decision, f"MRB decided {decision}",
                                 hold_id="HOLD-1")
        assert HELD not in run.holds  # the disposition ended its hold
        await run.finish()  # nothing is left waiting: the run ends
        after = run.of(HELD)[before:]
        assert after and after[0][1] == "unit.arrived" and after[0][3] > clock
        times = [s[3] for s in after]
        assert times == sorted(times) and len(set(times)) == len(times)
        return after

    after = asyncio.run(go())
    if decision == "scrap":
        assert steps_started(after) == [900]
        [scrapped] = [s[5] for s in after if isinstance(s[5], UnitScrapped)]
        assert scrapped.reason == "MRB decided scrap"
        assert p.unit(HELD).outcome == "scrapped"
    elif decision == "repair":
        assert steps_started(after) == [900, 80, 90, 100, 110, 120]
        repaired = [s[5] for s in after if isinstance(s[5], UnitRepaired)]
        assert [r.result for r in repaired] == ["RepairSuccessful"]
        assert any(isinstance(s[5], MaterialsInstalled) for s in after)  # GPUs replaced
        assert p.unit(HELD).outcome == "shipped"
    else:
        assert steps_started(after) == [100, 110, 120]
        assert p.unit(HELD).outcome == "shipped"
    assert not [s for s in after if failed(s)]  # a continuation passes its steps


def test_a_continuation_is_seeded_by_the_seed_serial_and_decision() -> None:
    now = datetime(2026, 1, 6, tzinfo=UTC)
    a = conducted().continue_unit(HELD, "repair", 900, "again", now)
    b = conducted().continue_unit(HELD, "repair", 900, "again", now)
    assert [(e.event_id, e.time, e.body) for e in a] == [(e.event_id, e.time, e.body) for e in b]
    c = conducted().continue_unit(HELD, "use-as-is", 100, "ok", now)
    assert not {e.event_id for e in a} & {e.event_id for e in c}
    assert all(e.time > now for e in a)


def test_a_decision_other_than_the_planned_repair_replaces_the_rest_of_the_plan() -> None:
    p = conducted()
    planned = {e.event_id for e in p.stream() if e.subject == ONCE}

    async def go() -> Run:
        run = Run(p, route=False)
        run.start()
        await run.idle()
        run.conductor.send_route(ONCE, 900, "scrap", "no spare GPU for this SKU")
        await until(lambda: any(s[2] == ONCE and s[1] == "unit.scrapped" for s in run.log))
        run.task.cancel()  # type: ignore[union-attr]
        return run

    run = asyncio.run(go())
    mine = run.of(ONCE)
    assert steps_started(mine)[-1] == 900 and mine[-1][1] == "unit.departed"
    assert not any(s[1] == "unit.shipped" for s in mine)
    first_new = next(i for i, s in enumerate(mine) if s[4] not in planned)
    assert mine[first_new][1] == "unit.arrived" and mine[first_new][0] == "repair-01"
    assert all(s[4] not in planned for s in mine[first_new:])


# --- locks and the interlock ---------------------------------------------------------------


def test_a_locked_station_starts_no_unit_until_unlocked() -> None:
    p = conducted()

    async def go() -> None:
        run = Run(p)
        run.holds.lock("burnin-01", True, "rack power audit", "HOLD-L")
        run.start()
        status = await run.idle()
        assert not [s for s in run.log if s[0] == "burnin-01" and s[1] != "station.state"]
        waiting = {u for u, why in status.waiting.items() if "burnin-01 is locked" in why}
        assert waiting == {f"SRV-S5-00000{n}" for n in (1, 2, 3, 4)}
        clock = run.dispatcher.line_clock()
        assert clock is not None
        seen = len(run.statuses)
        run.holds.lock("burnin-01", False, "audit done", "HOLD-L")
        status = await run.idle(seen)
        assert set(status.waiting) == {HELD}
        burnin = [s for s in run.log if s[0] == "burnin-01" and s[1] != "station.state"]
        assert burnin and min(s[3] for s in burnin) >= clock
        run.task.cancel()  # type: ignore[union-attr]

    asyncio.run(go())


def test_an_interlock_refusal_parks_only_that_unit_until_it_is_allowed() -> None:
    p = conducted()
    skipper = "SRV-S5-000004"
    allowed = {"now": False}
    asked: list[tuple[str, int, str]] = []
    arrivals: set[str] = set()

    async def interlock(serial: str, step: int, station: str, arrival: str
                        ) -> tuple[bool, Sequence[str]]:
        asked.append((serial, step, station))
        arrivals.add(arrival)
        await asyncio.sleep(0)
        if serial == skipper and step == 90 and not allowed["now"]:
            return False, ["route.missing_before: step 80 not completed", "hold.unit: held"]
        return True, []

    async def go() -> None:
        run = Run(p, interlock=interlock)
        run.start()
        status = await run.idle()
        assert set(status.waiting) == {HELD, skipper}
        assert "refused by the interlock: route.missing_before" in status.waiting[skipper]
        mine = run.of(skipper)
        assert mine[-1][1] == "unit.arrived" and mine[-1][0] == "burnin-01"
        others = [s for s in run.log if s[0] == "burnin-01" and s[2] != skipper]
        assert any(s[1] == "work.started" for s in others)  # the station went on
        retries = asked.count((skipper, 90, "burnin-01"))
        await until(lambda: asked.count((skipper, 90, "burnin-01")) > retries)  # asks again
        clock = run.dispatcher.line_clock()
        assert clock is not None
        allowed["now"] = True
        run.holds.release(skipper)  # a command for it: it asks at once
        await until(lambda: "unit.shipped" in types(run.of(skipper)))
        started = next(s for s in run.of(skipper) if s[1] == "work.started" and s[0] == "burnin-01")
        assert started[3] >= clock  # it starts at the line clock's present
        # Every arrival sent was asked about, with its own event id.
        assert arrivals == {s[4] for s in run.log if s[1] == "unit.arrived"}
        run.task.cancel()  # type: ignore[union-attr]

    asyncio.run(go())


def test_without_a_plan_or_unconducted_the_dispatcher_routes_nothing() -> None:
    p = unconducted()
    run = Run(p)
    assert not run.dispatcher.gates and not run.dispatcher.awaiting
    assert run.dispatcher.interlock is None


# --- line.commands ----------------------------------------------------------------------------


PLANT = generate_key()
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def record(body: Body, kind: str, *, station: str = "burnin-01", at: datetime = T0,
           event_id: str | None = None) -> tuple[bytes, list[tuple[str, bytes]]]:
    value = encode_event(event_type=f"command.{kind}", source=SYSTEM_SOURCE, subject=station,
                         body=body, time=at, event_id=event_id)
    return value, sign_value(value, PLANT)


def listener() -> LineCommands:
    return LineCommands("127.0.0.1:1", PLANT.public_key(), Holds(),
                        stations={"burnin-01", "repair-01"})


def test_routes_and_locks_are_kept_once_each() -> None:
    route = CommandRoute(unit="SRV-1", step=900, station_type="repair", reason="failed burn-in")
    lock = CommandLock(station="burnin-01", locked=True, reason="audit", hold_id="HOLD-S")
    on = listener()
    assert on.apply(*record(route, "route", event_id="9a1c7f0e-0000-4000-8000-000000000001")
                    ).startswith("route SRV-1 to step 900")
    assert on.apply(*record(route, "route", event_id="9a1c7f0e-0000-4000-8000-000000000001")
                    ).startswith("ignored")  # a copy of one already applied
    assert on.apply(*record(lock, "lock")).startswith("lock burnin-01")
    assert on.holds.locked("burnin-01") == "audit"
    assert on.holds.take_route("SRV-1") == route and on.holds.take_route("SRV-1") is None
    unlock = CommandLock(station="burnin-01", locked=False, reason="done", hold_id="HOLD-S")
    assert on.apply(*record(unlock, "lock", station="repair-01")).startswith("unlock")
    assert on.holds.locked("burnin-01") is None
    assert on.apply(*record(lock, "lock")).startswith("ignored")  # that lock ended


def test_a_released_hold_stays_released_whatever_order_its_commands_are_read_in() -> None:
    cmds = listener()
    release = CommandRelease(unit="SRV-1", reason="two quality signatures", hold_id="HOLD-A")
    hold = CommandHold(unit="SRV-1", reason="route violation", hold_id="HOLD-A")
    # The release was published later, on another station's partition, but is read first.
    assert cmds.apply(*record(release, "release", station="repair-01",
                              at=T0 + timedelta(days=300))).startswith("release")
    assert cmds.apply(*record(hold, "hold")).startswith("ignored")
    assert "SRV-1" not in cmds.holds
    # Two holds: the unit stays held until both are released.
    cmds.holds.hold("SRV-2", "lot hold", "HOLD-L")
    cmds.holds.hold("SRV-2", "unit hold", "HOLD-U")
    cmds.holds.release("SRV-2", "HOLD-L")
    assert "SRV-2" in cmds.holds and cmds.holds.reason("SRV-2") == "unit hold"
    cmds.holds.release("SRV-2", "HOLD-U")
    assert "SRV-2" not in cmds.holds


def test_a_conducted_line_needs_the_plant_key() -> None:
    from linetrace.stations.simulator import run_line

    config = LineConfig(units=1, seed=3, conducted=True)
    with pytest.raises(StationError, match="plant key"):
        asyncio.run(run_line(config, {s: generate_key() for s, _ in station_roster_of(config)},
                             "127.0.0.1:1", __import__("pathlib").Path("/nonexistent")))


def station_roster_of(config: LineConfig) -> list[tuple[str, str]]:
    from linetrace.stations.simulator import station_roster

    return station_roster(config.product, config.routes)


# --- up --until-idle ------------------------------------------------------------------------


def test_until_idle_needs_every_waiting_unit_on_hold_or_waiting_for_one_that_is() -> None:
    from linetrace.cli.supervisor import busy_units

    status = {"idle": True, "waiting": {
        "SRV-1": "on hold (lot hold)",
        "SRV-2": "waits for PCBA-2",
        "PCBA-2": "refused by the interlock: route.held: on hold",
        "SRV-3": "waits for SRV-3-PCBA"}}
    assert busy_units(status, ["SRV-1", "PCBA-2", "SRV-3-PCBA"]) == []
    busy = busy_units(status, ["SRV-1"])
    assert busy == ["unit PCBA-2 waits (refused by the interlock: route.held: on hold) but is "
                    "not on hold", "unit SRV-2 waits (waits for PCBA-2) but is not on hold",
                    "unit SRV-3 waits (waits for SRV-3-PCBA) but is not on hold"]
    assert busy_units({"idle": False, "waiting": {}}, []) == ["the simulator is still sending"]
    assert busy_units(None, []) == ["the simulator is still sending"]
