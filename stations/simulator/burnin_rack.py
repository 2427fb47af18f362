"""Burn-in (step 90) on the simulated line: the burn-in runner on a simulated baseboard.

The adapter between the pure line simulation and `linetrace.stations.burnin`: it runs
`run_burnin` on a `SimulatedBaseboard` of the unit's GPUs (its SKU, its installed serials, the
burn-in faults that strike it) on a `SimClock`, records what the runner emits instead of
sending it, and places those events on the unit's timeline: `burnin.run` (start), one
`burnin.telemetry` per simulated second with every GPU that answered, `burnin.xid` when a
fault calls for it, the runner's health `unit.tested` (method Burnin), then the station's
performance `unit.tested` (GEMM throughput, memory bandwidth, NCCL; the natural failures and
fault `bad-lot` show here) and `burnin.run` (end).

The runner is a coroutine that only awaits the simulated clock and our recorder, so it is
driven to completion here without an event loop (`drive`): the line simulation stays a pure
function of its config.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Coroutine
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from linetrace.schemas.bodies import Body, Measurement, TestResult, UnitTested
from linetrace.schemas.routes import Step

from ..burnin import SimClock, SimulatedBaseboard, XidEvent, run_burnin
from .context import LineContext, Outcome, TimedEvent
from .faults import BURNIN_FAULTS, FATAL_CHOICES
from .units import Failure, Unit

#: A hot GPU runs >= 8 C above its siblings from ~20 s of load and throttles ~60 s after the
#: fault time; its run lasts at least this long so both show.
HOT_GPU_SECONDS = 200
HOT_GPU_FAULT_AFTER_S = 60.0
#: Near misses realised on the rack (a warm GPU; a few samples missing).
NEAR_BURNIN = ("warm-gpu", "telemetry-hiccup")
SETUP_MS = (300_000, 600_000)
TEARDOWN_MS = (120_000, 300_000)
_EPOCH = datetime(2000, 1, 1, tzinfo=UTC)  # the SimClock's origin; only offsets are kept
_GPU_MEASUREMENT = re.compile(r"^gpu(\d+)\.")
T = TypeVar("T")


def drive(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine that never waits for real I/O (only `asyncio.sleep(0)`), loop-free."""
    try:
        while True:
            if coro.send(None) is not None:
                coro.close()
                raise RuntimeError("the burn-in runner awaited real I/O inside the simulator")
    except StopIteration as done:
        result: T = done.value
        return result


class _Recorded:
    """An `Emitter` that keeps (offset ms from the clock's origin, type, body)."""

    def __init__(self) -> None:
        self.events: list[TimedEvent] = []

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        assert isinstance(time, datetime)
        ms = int((time - _EPOCH).total_seconds() * 1000)
        if self.events and ms <= self.events[-1][0]:
            ms = self.events[-1][0] + 1  # the runner stamps an XID with its sample's second
        self.events.append((ms, event_type, body))
        return b""


def _board_seed(ctx: LineContext, unit: Unit, run: int) -> int:
    digest = hashlib.sha256(f"{ctx.seed}:{unit.serial}:{run}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def _failing_slots(tests: list[TestResult], xids: list[XidEvent]) -> set[int]:
    """GPU slots named by an out-of-limits `gpuN.*` measurement of a failed test, or an XID."""
    slots = {x.gpu_index for x in xids if x.fatal}
    for t in tests:
        if t.result not in ("Failed", "Error"):
            continue
        for m in t.measurements:
            match = _GPU_MEASUREMENT.match(m.name)
            if match and ((m.min is not None and m.value < m.min)
                          or (m.max is not None and m.value > m.max)):
                slots.add(int(match.group(1)))
    return slots


def burnin(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    product = ctx.product_of(unit)
    rng = ctx.rng
    setup = rng.randint(*SETUP_MS)
    teardown = rng.randint(*TEARDOWN_MS)
    run = unit.visits[step.step]
    faults = [f for f in BURNIN_FAULTS if run == 1 and ctx.strikes(f, unit)]
    near = [f for f in NEAR_BURNIN if run == 1 and ctx.strikes(f, unit)]
    duration = float(ctx.burnin_seconds)
    fault_after = max(1.0, duration // 3)
    if "hot-gpu" in faults:
        onset = ctx.param("hot-gpu", "onset", HOT_GPU_FAULT_AFTER_S)
        assert onset is not None
        duration = max(duration, onset + HOT_GPU_SECONDS - HOT_GPU_FAULT_AFTER_S)
        fault_after = onset
    if "warm-gpu" in near:  # as long as a hot GPU's run, so a detector sees it settled
        duration = max(duration, float(HOT_GPU_SECONDS))
    slots = sorted(unit.gpus)
    struck = ctx.side_rng("burnin-faults", unit.serial).sample(range(len(slots)), len(faults))
    gpus = {f: _slot_param(ctx, f, i, len(slots)) for f, i in zip(faults, struck, strict=True)}
    onsets = {f: max(1.0, frac * duration) for f in faults if f != "hot-gpu"
              and (frac := ctx.param(f, "onset")) is not None}
    warm = {_slot_param(ctx, "warm-gpu", ctx.side_rng("warm-gpu", unit.serial).randrange(
        len(slots)), len(slots)): ctx.param("warm-gpu", "delta", 6.0) or 6.0} \
        if "warm-gpu" in near else {}
    clock = SimClock(_EPOCH)
    board = SimulatedBaseboard(
        clock, serials=[unit.gpus[s][0] for s in slots], sku=product.gpu_sku,
        seed=_board_seed(ctx, unit, run), faults=faults, fault_after_s=fault_after,
        fault_gpus=gpus, fault_onsets=onsets, hot_gpu_delta=ctx.param("hot-gpu", "delta"),
        warm_gpus=warm, dbe_count=int(ctx.param("ecc-dbe", "count", 1) or 1),
        xid=FATAL_CHOICES[int(ctx.param("fatal-xid", "xid", 0) or 0) % len(FATAL_CHOICES)])
    recorded = _Recorded()
    summary = drive(run_burnin(
        unit.serial, board, recorded, duration_s=duration, clock=clock,
        expected_gpus=[unit.gpus[s][0] for s in slots], run_id=ctx.rec.new_id(),
        transaction_id=tx))
    board.close()
    for f in faults:
        i = gpus[f]
        ctx.strike(f, unit=unit.serial, gpu=slots[i], gpu_serial=unit.gpus[slots[i]][0],
                   details={"onset_s": onsets.get(f, fault_after), "run": run,
                            **({"xid_code": board.xid} if f == "fatal-xid" else {})})
    for i in warm:
        ctx.strike("warm-gpu", unit=unit.serial, gpu=slots[i], gpu_serial=unit.gpus[slots[i]][0])
    if "telemetry-hiccup" in near:
        _hiccup(ctx, unit, recorded)
    perf, slow = _performance(ctx, unit, tx, run)
    timed = [(setup + ms, t, b) for ms, t, b in recorded.events]
    end = timed.pop()  # burnin.run (end): after the station's performance results
    timed.append((end[0], "unit.tested", perf))
    timed.append((end[0] + 1, end[1], end[2]))
    cycle = end[0] + 1 + teardown
    failed = {slots[i] for i in _failing_slots(summary.tests, summary.xids)} | slow
    if summary.result == "Passed" and perf.result == "Passed":
        return Outcome(timed=timed, cycle_ms=cycle)
    gpu_slots = tuple(sorted(failed))
    what = ", ".join(t.name for t in [*summary.tests, *perf.tests] if t.result in ("Failed", "Error"))
    failure = Failure(step.step, ctx.defect_id(), "gpu",
                      f"burn-in failed ({what}); replaced GPU(s) in slot(s) "
                      f"{', '.join(map(str, gpu_slots)) or 'none'}", slots=gpu_slots)
    return Outcome(timed=timed, cycle_ms=cycle, result="Failed", failure=failure)


def _slot_param(ctx: LineContext, fault: str, drawn: int, n: int) -> int:
    """The GPU (index into the sorted slots) a fault strikes: its `gpu` parameter, or the
    one drawn for it."""
    given = ctx.param(fault, "gpu")
    return drawn if given is None else int(given) % n


def _hiccup(ctx: LineContext, unit: Unit, recorded: _Recorded) -> None:
    """Near miss `telemetry-hiccup`: `missing` consecutive samples dropped (a gap < 5 s)."""
    samples = [i for i, e in enumerate(recorded.events) if e[1] == "burnin.telemetry"]
    missing = int(ctx.param("telemetry-hiccup", "missing", 3) or 3)
    frac = ctx.param("telemetry-hiccup", "onset", 0.5) or 0.5
    first = min(max(1, int(len(samples) * frac)), max(1, len(samples) - missing - 1))
    drop = set(samples[first:first + missing])
    recorded.events[:] = [e for i, e in enumerate(recorded.events) if i not in drop]
    ctx.strike("telemetry-hiccup", unit=unit.serial, details={"missing": len(drop)})


def _performance(ctx: LineContext, unit: Unit, tx: str, run: int) -> tuple[UnitTested, set[int]]:
    """GEMM throughput, memory bandwidth and NCCL busbw against the SKU floors (DOMAIN.md §4).

    Natural yield: now and then one GPU is below its floor. Fault `bad-lot`: each GPU from the
    bad lot is below its floor with a high probability, and at least one on every run.
    """
    rng, product = ctx.rng, ctx.product_of(unit)
    perf = product.perf
    slow: dict[int, str] = {}
    if ctx.failures and rng.random() < product.yields.burnin_fail:
        slot = sorted(unit.gpus)[rng.randrange(len(unit.gpus))]
        slow[slot] = rng.choice(("gemm_stress", "memory_bandwidth"))
    bad = [(slot, serial) for slot, (serial, lot) in sorted(unit.gpus.items())
           if lot.bad and ctx.failures]
    p_bad = ctx.param("bad-lot", "p", product.yields.bad_lot_gpu_fail)
    assert p_bad is not None
    for k, (slot, serial) in enumerate(bad):
        bad_rng = ctx.side_rng("bad-lot", serial, run)
        if bad_rng.random() < p_bad or (
                k == len(bad) - 1 and not set(slow) & {s for s, _ in bad}):  # at least one
            slow.setdefault(slot, bad_rng.choice(("gemm_stress", "memory_bandwidth")))
            ctx.fired.add("bad-lot")
    one = [(slot, serial, lot) for slot, (serial, lot) in sorted(unit.gpus.items())
           if lot.one_failure and ctx.failures]
    if one and "lot-one-failure" not in ctx.fired:  # near miss: one GPU of the lot, once
        slot, serial, lot = one[0]
        slow.setdefault(slot, ctx.side_rng("lot-one-failure", serial).choice(
            ("gemm_stress", "memory_bandwidth")))
        ctx.strike("lot-one-failure", unit=unit.serial, gpu=slot, gpu_serial=serial,
                   lot=lot.lot_id)
    gflops_min, bw_min = round(perf.gflops_target * 0.95, 1), perf.mem_bw_floor_mbs
    gemm, bw = [], []
    for slot in sorted(unit.gpus):
        g = perf.gflops_target * (rng.uniform(0.80, 0.93) if slow.get(slot) == "gemm_stress"
                                  else rng.uniform(1.0, 1.06))
        b = bw_min * (rng.uniform(0.85, 0.97) if slow.get(slot) == "memory_bandwidth"
                      else rng.uniform(1.02, 1.10))
        gemm.append(Measurement(name=f"gpu{slot}.gflops", value=round(g, 1), unit="GFLOPS",
                                expected=perf.gflops_target, min=gflops_min))
        bw.append(Measurement(name=f"gpu{slot}.mem_bw", value=round(b), unit="MB/s", min=bw_min))
    nccl = Measurement(name="busbw", value=round(perf.nccl_busbw_gbs * rng.uniform(0.97, 1.03), 1),
                       unit="GB/s", expected=perf.nccl_busbw_gbs,
                       min=round(perf.nccl_busbw_gbs * 0.95, 1))

    def result(name: str) -> Literal["Passed", "Failed"]:
        return "Failed" if name in slow.values() else "Passed"

    body = UnitTested(
        transaction_id=tx, method="Burnin", result="Failed" if slow else "Passed",
        fixture="RACK-BI-01", tests=[
            TestResult(name="gemm_stress", result=result("gemm_stress"), measurements=gemm),
            TestResult(name="memory_bandwidth", result=result("memory_bandwidth"), measurements=bw),
            TestResult(name="nccl_all_reduce", result="Passed", measurements=[nccl]),
        ])
    return body, set(slow)
