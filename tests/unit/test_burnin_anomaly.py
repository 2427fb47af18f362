"""Burn-in anomaly detectors (streams/detect/burnin_anomaly.py): each rule fires and clears,
near-misses stay quiet, a rebuild from stored events equals the incremental fold, and the
simulated baseboard's faults (hot-gpu, gpu-off-bus) raise the alert for the right GPU while a
clean run raises nothing medium or high.

Events come from the station's own burn-in runner driving `SimulatedBaseboard` on a simulated
clock, encoded and decoded as the worker sees them; rule tests edit one GPU's readings of a
clean run (`edited`) so each rule is exercised on otherwise natural telemetry.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from statistics import median

import msgspec
import pytest

from linetrace.ledger.alerts.conditions import CATALOGUE, Condition
from linetrace.schemas.bodies import Body, BurninTelemetry, GpuSample
from linetrace.schemas.envelope import Event, decode_event, encode_event, parse_time
from linetrace.stations.burnin import SimClock, SimulatedBaseboard, run_burnin
from linetrace.streams.detect.burnin_anomaly import (
    DRIFT, GAP, HEADROOM, MISSING, PEER, POWER_CLOCK, RISE, SBE, TYPES, RunState, fold,
    new_state, rebuild,
)
from linetrace.streams.detect.flow import station_down_id

T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
UNIT = "SRV-A1-000001"
RUN_ID = "6c1b7e0a-3f2d-4e5a-9b8c-7d6e5f4a3b2c"


class Recorder:
    """An in-memory emitter with StationClient.emit's signature (bytes as a station signs)."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        value = encode_event(event_type=event_type, source="burnin-02", subject=subject,
                             body=body, time=time, event_id=event_id,
                             stationseq=len(self.events) + 1)
        self.events.append(decode_event(value))
        return value


@cache
def burn(seed: int = 1, faults: tuple[str, ...] = (), duration: float = 600,
         gpu: int = 3) -> tuple[Event, ...]:
    clock = SimClock(T0)
    board = SimulatedBaseboard(clock, seed=seed, faults=faults, fault_gpus={f: gpu for f in faults},
                               fault_after_s=min(60.0, duration / 4))
    rec = Recorder()
    asyncio.run(run_burnin(UNIT, board, rec, duration_s=duration, clock=clock,
                           expected_gpus=None, run_id=RUN_ID))
    return tuple(e for e in rec.events if e.type in TYPES)


def run(events: tuple[Event, ...] | list[Event]) -> tuple[RunState, list[Condition]]:
    state = new_state(events[0])
    out: list[Condition] = []
    for e in events:
        out += fold(state, e)
    return state, out


def raised(out: list[Condition], condition: str | None = None) -> set[tuple[str, str]]:
    return {(c.condition, c.subject) for c in out if c.active
            and (condition is None or c.condition == condition)}


def seconds(e: Event) -> float:
    return (parse_time(e.envelope.time) - T0).total_seconds()


def edited(events: tuple[Event, ...], gpu: int,
           change: Callable[[float, GpuSample, list[GpuSample]], dict[str, object] | None]
           ) -> list[Event]:
    """The run with GPU `gpu`'s samples changed by `change(t, sample, all samples)` (fields to
    replace; None = leave it; {"drop": True} = remove the sample), re-encoded."""
    out = []
    for e in events:
        if not isinstance(e.body, BurninTelemetry):
            out.append(e)
            continue
        samples = []
        for s in e.body.samples:
            fields = change(seconds(e), s, e.body.samples) if s.gpu_index == gpu else None
            if fields and fields.get("drop"):
                continue
            samples.append(msgspec.structs.replace(s, **fields) if fields else s)
        body = msgspec.structs.replace(e.body, samples=samples)
        out.append(decode_event(encode_event(
            event_type=e.type, source=e.source, subject=e.subject, body=body,
            time=e.envelope.time, event_id=e.id, stationseq=e.seq)))
    return out


def above_peers(delta: float, after: float = 0.0) -> Callable[..., dict[str, object] | None]:
    """The GPU reads `delta` C above the median of its siblings from `after` s on."""
    def change(t: float, s: GpuSample, all_: list[GpuSample]) -> dict[str, object] | None:
        if t < after:
            return None
        sib = median(x.temp_c for x in all_ if x.gpu_index != s.gpu_index)
        return {"temp_c": float(round(sib + delta))}
    return change


def test_clean_runs_raise_nothing_medium_or_high() -> None:
    for seed in range(1, 9):
        _, out = run(burn(seed))
        loud = [c for c in out if c.active and CATALOGUE[c.condition].priority != "low"]
        assert loud == [], (seed, loud)
        assert not raised(out, PEER) and not raised(out, DRIFT), seed


def test_hot_gpu_fires_peer_deviation_on_that_gpu_only() -> None:
    state, out = run(burn(2, ("hot-gpu",), gpu=5))
    assert raised(out, PEER) == {(PEER, f"{UNIT}/gpu5")}
    first = next(c for c in out if c.condition == PEER and c.active)
    assert first.details["gpu_serial"] == "SIMGPU-2-5" and first.details["deviation_c"] >= 8
    assert first.priority is None and CATALOGUE[PEER].priority == "medium"
    assert {s for _, s in raised(out)} == {f"{UNIT}/gpu5"}  # nothing on its siblings
    assert state.ended and not state.active  # the run's end cleared everything


def test_gpu_off_bus_fires_gpu_missing_and_clears_at_run_end() -> None:
    _, out = run(burn(4, ("gpu-off-bus",), gpu=6))
    assert raised(out) == {(MISSING, f"{UNIT}/gpu6")}
    up = next(c for c in out if c.condition == MISSING and c.active)
    down = next(c for c in out if c.condition == MISSING and not c.active)
    assert CATALOGUE[MISSING].priority == "high" and up.details["gpu_serial"] == "SIMGPU-4-6"
    last = datetime.fromisoformat(str(up.details["last_seen"]))
    assert 59 <= (last - T0).total_seconds() <= 60  # the fault strikes at 60 s of load
    assert 5 < (up.time - last).total_seconds() <= 6  # raised once missing for > 5 s
    assert down.time > up.time


def test_peer_deviation_8c_for_60s_fires_7c_does_not() -> None:
    base = burn(1)
    _, near = run(edited(base, 2, above_peers(7, after=0)))
    assert not raised(near, PEER)
    _, hot = run(edited(base, 2, above_peers(8, after=200)))
    up = [c for c in hot if c.condition == PEER and c.active]
    assert [c.subject for c in up] == [f"{UNIT}/gpu2"]
    assert 259 <= (up[0].time - T0).total_seconds() <= 262  # held 60 s of event time
    # 8 C for 50 s only: a near-miss in time
    _, brief = run(edited(base, 2, lambda t, s, a: above_peers(8)(t, s, a)
                          if 200 <= t < 250 else None))
    assert not raised(brief, PEER)


def test_peer_deviation_clears_when_the_gpu_returns() -> None:
    _, out = run(edited(burn(1), 2, lambda t, s, a: above_peers(10)(t, s, a)
                        if 150 <= t < 300 else None))
    events = [(c.active, (c.time - T0).total_seconds()) for c in out
              if c.condition == PEER]
    assert events[0][0] is True and events[1] == (False, 300.0)


def test_not_steady_load_is_not_judged() -> None:
    _, out = run(edited(burn(1), 2, lambda t, s, a: above_peers(15)(t, s, a) if t < 60
                        else None))  # hot only during the first minute of load: settling
    assert not raised(out, PEER)


def test_thermal_headroom_uses_the_runs_slowdown_threshold() -> None:
    # B200: slowdown 90 C
    _, out = run(edited(burn(1), 1, lambda t, s, a: {"temp_c": 85.0} if 300 <= t < 320
                        else None))
    up = [c for c in out if c.condition == HEADROOM]
    assert [(c.active, c.subject) for c in up] == [(True, f"{UNIT}/gpu1"), (False, f"{UNIT}/gpu1")]
    _, near = run(edited(burn(1), 1, lambda t, s, a: {"temp_c": 84.0} if 300 <= t < 320
                         else None))
    assert not raised(near, HEADROOM)


def test_temperature_rise_at_constant_load() -> None:
    def ramp(rate: float) -> Callable[..., dict[str, object] | None]:
        def change(t: float, s: GpuSample, a: list[GpuSample]) -> dict[str, object] | None:
            return {"temp_c": s.temp_c + rate * (t - 300)} if 300 <= t < 330 else None
        return change
    _, out = run(edited(burn(1), 0, ramp(0.6)))  # 6 C per 10 s
    assert (RISE, f"{UNIT}/gpu0") in raised(out)
    assert any(c.condition == RISE and not c.active for c in out)
    _, slow = run(edited(burn(1), 0, ramp(0.45)))  # 4.5 C per 10 s
    assert not raised(slow, RISE)


def test_single_bit_ecc_warns_once() -> None:
    _, out = run(edited(burn(1), 4, lambda t, s, a: {"ecc_sbe_vol": s.ecc_sbe_vol + 1
                                                     + int(t > 400)} if t >= 300 else None))
    sbe = [c for c in out if c.condition == SBE]
    assert [c.active for c in sbe] == [True, False]  # raised once, cleared at the end
    assert sbe[0].details["new_sbe"] == 1 and CATALOGUE[SBE].priority == "low"


def test_power_clock_deviation() -> None:
    _, out = run(edited(burn(1), 7, lambda t, s, a: {"power_w": s.power_w * 0.85}
                        if 200 <= t < 300 else None))
    assert raised(out) == {(POWER_CLOCK, f"{UNIT}/gpu7")}
    pc = [(c.active, (c.time - T0).total_seconds()) for c in out if c.condition == POWER_CLOCK]
    assert pc == [(True, 210.0), (False, 300.0)]  # held 10 s; cleared when power returns
    _, near = run(edited(burn(1), 7, lambda t, s, a: {"power_w": s.power_w * 0.92}
                         if 200 <= t < 300 else None))
    assert not raised(near)


def test_telemetry_gap_in_event_time() -> None:
    events = list(burn(1))
    gapped = [e for e in events if not 300 < seconds(e) <= 306]  # 7 s without an event
    _, out = run(gapped)
    gap = [(c.active, (c.time - T0).total_seconds(), c.subject) for c in out
           if c.condition == GAP]
    assert gap == [(True, 305.0, UNIT), (False, 307.0, UNIT)]
    up = next(c for c in out if c.condition == GAP and c.active)
    assert up.parent == station_down_id("burnin-02")  # suppressed while the rack is down
    _, near = run([e for e in events if not 300 < seconds(e) <= 304])  # 5 s: not > 5
    assert not raised(near)


def test_drift_fires_on_a_slow_shift_and_not_on_a_constant_offset() -> None:
    def creep(t: float, s: GpuSample, a: list[GpuSample]) -> dict[str, object] | None:
        return {"temp_c": s.temp_c + min(5.0, 0.05 * (t - 300))} if 300 <= t < 450 else None
    _, out = run(edited(burn(1), 6, creep))  # +5 C over 100 s: below the 8 C rule
    assert raised(out) == {(DRIFT, f"{UNIT}/gpu6")}
    drift = [(c.active, (c.time - T0).total_seconds()) for c in out if c.condition == DRIFT]
    assert drift[0][0] and 300 < drift[0][1] < 400  # while it creeps
    assert not drift[1][0] and 450 <= drift[1][1] < 500  # back to its baseline: normal
    _, offset = run(edited(burn(1), 6, lambda t, s, a: {"temp_c": s.temp_c + 5}))
    assert not raised(offset)


@pytest.mark.parametrize("faults", [(), ("hot-gpu",), ("gpu-off-bus",)])
def test_rebuild_from_stored_equals_incremental(faults: tuple[str, ...]) -> None:
    events = burn(3, faults)
    for cut in (1, 120, 217, len(events) - 1):
        state, _ = run(events[:cut])
        again = rebuild(list(events[:cut]))
        assert again == state, cut
        # folding on from the rebuilt state decides what the incremental fold decides
        rest_a = [c for e in events[cut:] for c in fold(state, e)]
        rest_b = [c for e in events[cut:] for c in fold(again, e)]
        assert rest_a == rest_b


def test_folding_an_event_twice_changes_nothing() -> None:
    events = burn(2, ("hot-gpu",), gpu=5)
    state, out = run(events[:200])
    assert [c for e in events[150:200] for c in fold(state, e)] == []


def test_a_batch_without_telemetry_costs_the_stage_nothing() -> None:
    """No telemetry in the batch: `load` returns before touching the session (None here:
    any query would fail) and `decide` decides nothing."""
    from typing import cast

    from sqlalchemy.orm import Session

    from linetrace.ledger.records import Candidate, SourceRecord
    from linetrace.streams.detect.anomaly_stage import AnomalyStage

    ev = burn(1)[5]
    other = Candidate(SourceRecord("line.events", 0, 7, None, ev.value), ev, "", b"")
    stage = AnomalyStage()
    state = stage.load(cast(Session, None), [other])
    assert state is None and stage.decide([other], state).empty
