"""One burn-in run of one unit: the events DOMAIN.md §4 and CONTRACTS.md ask for, in order.

`burnin.run` (start: inventory, driver, VBIOS, thresholds, power limit, SKU), then one
`burnin.telemetry` per interval carrying every GPU that answered (the heartbeat: a GPU missing
from it is visible), a `burnin.xid` per XID as it is polled, then `unit.tested` (method Burnin)
and `burnin.run` (end). Times come from the given clock. Sampling is scheduled on absolute slots
(`start + k * interval`), so slow emits never make the cadence drift; slots missed entirely
(a long broker outage) are skipped and logged rather than sent late in a burst.

The emitter is anything with `StationClient.emit`'s signature, so the runner is tested with an
in-memory recorder and runs against the broker unchanged.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal, Protocol

from linetrace.schemas.bodies import (
    Body, BurninRun, BurninTelemetry, BurninXid, TestResult, UnitTested,
)

from ..errors import StationError
from .backend import GpuBackend, GpuInfo, StressReport, XidEvent
from .clock import Clock
from .results import InventoryCheck, RunRecord, burnin_tests, overall

log = logging.getLogger(__name__)


class Emitter(Protocol):
    """What the runner needs of a StationClient."""

    async def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes: ...


@dataclass(frozen=True)
class BurninSummary:
    run_id: str
    unit: str
    result: Literal["Passed", "Failed", "Error"]
    started: datetime
    ended: datetime
    intervals: int  # telemetry events emitted
    samples: int  # GPU samples in them
    skipped_intervals: int  # slots the runner could not sample in time
    inventory: list[GpuInfo]
    absent_gpus: list[int]  # GPU indexes missing from at least one telemetry event
    xids: list[XidEvent]
    xid_supported: bool
    stress: StressReport
    tests: list[TestResult]

    @property
    def failed_tests(self) -> list[str]:
        return [t.name for t in self.tests if t.result in ("Failed", "Error")]


async def run_burnin(
    unit_serial: str,
    backend: GpuBackend,
    client: Emitter,
    *,
    duration_s: float,
    interval_s: float = 1.0,
    clock: Clock,
    expected_gpus: Sequence[str] | None,
    counter_interval_s: float = 10.0,
    run_id: str | None = None,
    transaction_id: str | None = None,
) -> BurninSummary:
    """Burn in `unit_serial` for `duration_s` (one telemetry event every `interval_s`).

    `expected_gpus`: the GPU serials installed at step 60 (None: inventory not checked).
    Counters (ECC, remap, PCIe replay, NVLink) are re-read every `counter_interval_s`.
    `run_id` defaults to a random UUID; event ids are derived from it, so the same run id,
    seed and station state give byte-identical events.
    """
    if duration_s <= 0 or interval_s <= 0 or counter_interval_s <= 0:
        raise StationError("duration, interval and counter interval must be > 0 seconds",
                           code="burnin.invalid_config")
    run_id = run_id or str(uuid.uuid4())
    ns = uuid.UUID(run_id)
    counts: dict[str, int] = {}

    async def emit(event_type: str, body: Body, when: datetime) -> None:
        counts[event_type] = counts.get(event_type, 0) + 1
        event_id = str(uuid.uuid5(ns, f"{event_type}:{counts[event_type]}"))
        await client.emit(event_type, unit_serial, body, time=when, event_id=event_id)

    inventory = backend.inventory()
    platform = backend.platform()
    started = clock.now()
    await emit("burnin.run", BurninRun(
        run_id=run_id, phase="start", sku=platform.sku,
        inventory=[g.inventory() for g in inventory],
        driver=platform.driver, vbios=platform.vbios, thresholds=platform.thresholds,
        power_limit_w=platform.power_limit_w), started)
    if not backend.xid_supported:
        log.warning("unit %s: this platform cannot deliver XID events; the run has no XID "
                    "evidence", unit_serial)
    record = RunRecord()
    xids: list[XidEvent] = []
    samples = skipped = 0
    end = started + timedelta(seconds=duration_s)

    async def poll_xids() -> None:
        for x in backend.xid_events():
            xids.append(x)
            serial = next((g.serial for g in inventory if g.index == x.gpu_index), None)
            await emit("burnin.xid", BurninXid(
                run_id=run_id, gpu_index=x.gpu_index, xid=x.xid, gpu_serial=serial,
                recovery_action=x.recovery_action, raw=x.raw), clock.now())

    backend.start_load()
    try:
        k = 1
        while (due := started + timedelta(seconds=k * interval_s)) <= end:
            await clock.sleep_until(due)
            now = clock.now()
            late = int((now - due).total_seconds() // interval_s)
            if late > 0:
                log.warning("unit %s: %d telemetry slot(s) missed (the runner was %.1f s late)",
                            unit_serial, late, (now - due).total_seconds())
                skipped += late
                k += late
            elapsed = k * interval_s
            counters = k == 1 or int(elapsed // counter_interval_s) > int(
                (elapsed - interval_s) // counter_interval_s)
            batch = backend.sample(counters=counters)
            record.add(batch)
            record.seconds = (now - started).total_seconds()
            samples += len(batch)
            await emit("burnin.telemetry", BurninTelemetry(run_id=run_id, samples=batch), now)
            await poll_xids()
            k += 1
    finally:
        stress = backend.stop_load()
    await poll_xids()

    check = InventoryCheck(expected=tuple(expected_gpus) if expected_gpus is not None else None,
                           found=tuple(g.serial for g in inventory))
    if not check.ok:
        log.warning("unit %s: GPU inventory differs from the installed serials: absent %s, "
                    "unexpected %s", unit_serial, check.missing, check.unexpected)
    tests = burnin_tests(record, inventory, platform, check, xids, backend.xid_supported, stress)
    result = overall(tests)
    ended = clock.now()
    await emit("unit.tested", UnitTested(transaction_id=transaction_id, method="Burnin",
                                         result=result, tests=tests), ended)
    await emit("burnin.run", BurninRun(run_id=run_id, phase="end", sku=platform.sku), ended)
    absent = sorted(g.index for g in inventory
                    if record.gpus.get(g.index) is None
                    or record.gpus[g.index].samples < record.intervals)
    return BurninSummary(
        run_id=run_id, unit=unit_serial, result=result, started=started, ended=ended,
        intervals=record.intervals, samples=samples, skipped_intervals=skipped,
        inventory=inventory, absent_gpus=absent, xids=xids,
        xid_supported=backend.xid_supported, stress=stress, tests=tests)
