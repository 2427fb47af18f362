"""Simulated stations obey line.commands: a held unit does not move until released.

The dispatcher is driven with in-memory stations (no broker); `LineCommands.apply` is given
signed records as the consumer would read them from `line.commands`.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime, timedelta

import pytest

from linetrace.schemas.bodies import Body, CommandHold, CommandRelease
from linetrace.schemas.envelope import SYSTEM_SOURCE, encode_event
from linetrace.schemas.signing import generate_key, sign_value
from linetrace.stations.simulator import LineConfig, SimEvent, generate_line
from linetrace.stations.simulator.commands import Holds, LineCommands
from linetrace.stations.simulator.runner import Dispatcher

Sent = tuple[str, str, datetime, str]  # type, subject, time, id


class Stations:
    """One in-memory emitter per station, all writing to one log."""

    def __init__(self) -> None:
        self.log: list[Sent] = []
        self.sent_at: list[float] = []  # the event loop's clock at each emit

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        await asyncio.sleep(0)
        assert isinstance(time, datetime) and event_id is not None
        self.log.append((event_type, subject, time, event_id))
        self.sent_at.append(asyncio.get_running_loop().time())
        return b"{}"

    async def flush(self) -> None:
        await asyncio.sleep(0)


def stream(units: int = 3, seed: int = 5) -> list[SimEvent]:
    return generate_line(LineConfig(units=units, seed=seed)).stream()


async def until(pred: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not pred():  # type: ignore[operator]
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


async def quiescent() -> None:
    """Until no task can run: each waits for something only the test can cause (these runs
    have no pacing, so no timers either). What could still be sent has been."""
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(0)
        if not loop._ready and not loop._scheduled:  # type: ignore[attr-defined]
            return


def run_with_hold(events: list[SimEvent], unit: str, *, when: str = "start") -> tuple[
        list[Sent], int, datetime]:
    """Hold `unit` (at the start, or when its step-60 work starts), release it once everything
    else was sent; returns (log, events sent before the release, line clock at release)."""
    stations = Stations()
    holds = Holds()
    if when == "start":
        holds.hold(unit, "test")

    def on_event(ev: SimEvent, _value: bytes) -> None:
        if when == "step60" and ev.subject == unit and ev.event_type == "work.started" and \
                getattr(ev.body, "step") == 60:
            holds.hold(unit, "test")

    dispatcher = Dispatcher(events, {e.station_id: stations for e in events}, holds=holds,
                            on_event=on_event)
    mine = sum(e.subject == unit for e in events)

    async def go() -> tuple[int, datetime]:
        task = asyncio.create_task(dispatcher.run())
        await until(lambda: dispatcher.backlog.get(unit) and all(
            s.is_set() for s in dispatcher.settled))
        await quiescent()
        before, clock = len(stations.log), dispatcher.line_clock()
        parked = sum(len(b) for b in dispatcher.backlog.values())
        assert before + parked == len(events)  # every event sent or parked, none in flight
        assert clock is not None and not task.done()
        holds.release(unit)
        await asyncio.wait_for(task, 10)
        return before, clock

    before, clock = asyncio.run(go())
    assert len(stations.log) == len(events) and mine > 0
    return stations.log, before, clock


def test_a_unit_held_before_it_starts_sends_nothing_until_released_and_the_line_goes_on() -> None:
    events = stream()
    unit = "SRV-S5-000002"
    log, before, clock = run_with_hold(events, unit)
    assert not [s for s in log[:before] if s[1] == unit]
    others = [e.event_id for e in events if e.subject != unit]
    assert sorted(s[3] for s in log[:before]) == sorted(others)
    mine = [s for s in log if s[1] == unit]
    planned = [e for e in events if e.subject == unit]
    assert [s[3] for s in mine] == [e.event_id for e in planned]  # same events, same order
    shift = mine[0][2] - planned[0].time
    assert mine[0][2] >= clock and shift > timedelta(0)
    assert all(s[2] - e.time == shift for s, e in zip(mine, planned, strict=True))


def test_a_hold_lets_the_unit_finish_its_operation_then_it_waits_in_front_of_the_next() -> None:
    events = stream()
    unit = "SRV-S5-000001"
    log, before, _ = run_with_hold(events, unit, when="step60")
    mine_before = [s for s in log[:before] if s[1] == unit]
    assert mine_before[-1][0] == "unit.departed"
    types = [s[0] for s in mine_before]
    assert types.count("unit.arrived") == 2  # kitting and baseboard install, nothing after
    after = [s for s in log[before:] if s[1] == unit]
    assert after[0][0] == "unit.arrived"
    times = [s[2] for s in log if s[1] == unit]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_a_server_waits_for_its_held_pcba_and_installs_it_after_the_pcba_finished() -> None:
    events = stream()
    pcba = "PCBA-S5-000001"
    log, before, _ = run_with_hold(events, pcba)
    server = "SRV-S5-000001"
    integration = next(e for e in events if e.subject == server and e.event_type ==
                       "materials.installed" and any(i.serial == pcba for i in getattr(
                           e.body, "items")))
    assert integration.event_id not in {s[3] for s in log[:before]}
    pcba_last = max(s[2] for s in log if s[1] == pcba)
    installed_at = next(s[2] for s in log if s[3] == integration.event_id)
    assert installed_at > pcba_last


def test_without_holds_every_event_is_sent_at_its_planned_time() -> None:
    events = stream(2)
    stations = Stations()
    asyncio.run(Dispatcher(events, {e.station_id: stations for e in events}).run())
    assert sorted((s[3], s[2]) for s in stations.log) == sorted((e.event_id, e.time) for e in events)


def test_rate_caps_events_per_second() -> None:
    events = stream(1)[:60]
    stations = Stations()
    asyncio.run(Dispatcher(events, {e.station_id: stations for e in events}, rate=300).run())
    assert len(stations.log) == 60
    # No two sends closer than 1/rate (a busy machine only spreads them further).
    gaps = [b - a for a, b in zip(stations.sent_at, stations.sent_at[1:])]
    assert min(gaps) >= 1 / 300 - 1e-4, min(gaps)


# --- line.commands ------------------------------------------------------------------------


PLANT = generate_key()
T0 = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)


def command(kind: str, unit: str, *, station: str = "burnin-01", key: object = PLANT,
            at: datetime = T0, source: str = SYSTEM_SOURCE) -> tuple[bytes, list[tuple[str, bytes]]]:
    body = CommandHold(unit=unit, reason="lot alert") if kind == "hold" else CommandRelease(
        unit=unit, reason="cleared")
    value = encode_event(event_type=f"command.{kind}", source=source, subject=station, body=body,
                         time=at)
    return value, sign_value(value, key)  # type: ignore[arg-type]


@pytest.fixture
def commands() -> LineCommands:
    return LineCommands("127.0.0.1:1", PLANT.public_key(), Holds(),
                        stations={"burnin-01", "final-qa-01"})


def test_a_plant_signed_hold_and_release_are_applied(commands: LineCommands) -> None:
    assert commands.apply(*command("hold", "SRV-1")).startswith("hold SRV-1")
    assert "SRV-1" in commands.holds
    assert commands.apply(*command("release", "SRV-1", at=T0 + timedelta(seconds=1))
                          ).startswith("release")
    assert "SRV-1" not in commands.holds


def test_a_command_not_signed_by_the_plant_key_is_ignored(commands: LineCommands) -> None:
    value, headers = command("hold", "SRV-1", key=generate_key())
    assert commands.apply(value, headers).startswith("ignored")
    value, _ = command("hold", "SRV-1")
    _, forged = command("hold", "SRV-2")
    assert commands.apply(value, forged).startswith("ignored")
    assert commands.apply(value, None).startswith("ignored")
    assert "SRV-1" not in commands.holds


def test_a_command_for_another_station_or_older_than_the_last_is_ignored(
        commands: LineCommands) -> None:
    assert commands.apply(*command("hold", "SRV-1", station="smt-07")).startswith("ignored")
    commands.apply(*command("hold", "SRV-1", at=T0 + timedelta(minutes=5)))
    assert commands.apply(*command("release", "SRV-1", station="final-qa-01")).startswith("ignored")
    assert "SRV-1" in commands.holds
