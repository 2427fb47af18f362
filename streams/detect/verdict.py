"""The burn-in verdict: DOMAIN.md §4's hard-fail rules over one run's own events. Pure.

`decide_verdict` takes plain data (the run's `burnin.run` start and end, its telemetry in
`stationseq` order with each event's SHA-256, its XIDs, its `unit.tested` (method Burnin)
results, the GPU serials the ledger's installs put in the unit before the run) and the per-SKU
limits (`linetrace.ledger.burnin_limits`, data), and returns the `burnin.verdict` body: Passed
or Failed with every reason, per GPU where it applies, per-GPU figures and the telemetry
commitment. The station's own results are evidence (their measurements are compared with the
limits here; their Passed/Failed is only recorded), never the decision.

Counters (ECC, remaps, PCIe replays, NVLink) are raw readings: "new" means the sum of the
increases between consecutive samples of the GPU, so a counter read every 10 s and repeated in
between counts once. Load-dependent rules (clock-event bits, PCIe link, power, SM clock) read
only samples at or above the limits' `under_load_util_pct`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from linetrace.ledger.burnin_limits import BurninLimits, SkuLimits
from linetrace.ledger.proof.hbom import current_items
from linetrace.ledger.proof.telemetry import commitment, event_digest
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, parse_time

_GPU_NAME = re.compile(r"^gpu(\d+)\.(.+)$")
_COUNTERS = ("ecc_sbe_vol", "ecc_dbe_vol", "remap_unc", "pcie_replay", "nvlink_crc",
             "nvlink_recovery")


@dataclass(frozen=True)
class Telemetry:
    """One `burnin.telemetry` event of the run: its stationseq, SHA-256 and body."""

    stationseq: int
    digest: bytes
    body: b.BurninTelemetry


@dataclass(frozen=True)
class RunEvents:
    """Everything one verdict is decided from (all of it from the run's own events)."""

    unit: str
    station: str
    run_id: str
    end: b.BurninRun
    end_id: str
    end_time: str
    start: b.BurninRun | None = None
    start_id: str | None = None
    start_time: str | None = None
    telemetry: Sequence[Telemetry] = ()
    xids: Sequence[b.BurninXid] = ()
    results: Sequence[tuple[str, b.UnitTested]] = ()  # (event id, body), in stored order
    #: slot -> GPU serial installed in the unit before the run (None: the ledger has none)
    installed: dict[int, str] | None = None


@dataclass
class _Gpu:
    index: int
    serial: str | None = None
    samples: int = 0
    temps: float = 0.0
    temp_max: float | None = None
    margin_min: float | None = None
    loaded: int = 0
    power: float = 0.0
    clock: float = 0.0
    bits: int = 0
    hard_bits: int = 0
    gen_min: int | None = None
    width_min: int | None = None
    new: dict[str, int] = field(default_factory=lambda: dict.fromkeys(_COUNTERS, 0))
    last: b.GpuSample | None = None
    xids: list[int] = field(default_factory=list)

    def add(self, s: b.GpuSample, load_pct: float, hard_mask: int) -> None:
        self.samples += 1
        self.serial = self.serial or s.gpu_serial
        self.temps += s.temp_c
        self.temp_max = s.temp_c if self.temp_max is None else max(self.temp_max, s.temp_c)
        if s.temp_margin_c is not None:
            self.margin_min = (s.temp_margin_c if self.margin_min is None
                               else min(self.margin_min, s.temp_margin_c))
        if self.last is not None:
            for c in _COUNTERS:
                self.new[c] += max(0, int(getattr(s, c)) - int(getattr(self.last, c)))
        self.last = s
        if s.util_pct < load_pct:
            return
        self.loaded += 1
        self.power += s.power_w
        self.clock += s.sm_clock_mhz
        self.bits |= s.clocks_event_reasons
        self.hard_bits |= s.clocks_event_reasons & hard_mask
        if s.pcie_gen is not None:
            self.gen_min = s.pcie_gen if self.gen_min is None else min(self.gen_min, s.pcie_gen)
        if s.pcie_width is not None:
            self.width_min = (s.pcie_width if self.width_min is None
                              else min(self.width_min, s.pcie_width))


def _seconds(start: str | None, end: str) -> float:
    if start is None:
        return 1.0
    return max(1.0, (parse_time(end) - parse_time(start)).total_seconds())


def _name(g: _Gpu) -> str:
    return f"GPU {g.index}" + (f" ({g.serial})" if g.serial else "")


class _Reasons:
    def __init__(self) -> None:
        self.items: list[b.VerdictReason] = []
        self.failed: set[int] = set()

    def add(self, code: str, message: str, gpu: _Gpu | None = None) -> None:
        if gpu is not None:
            self.failed.add(gpu.index)
        self.items.append(b.VerdictReason(
            code=code, message=message[:4096], gpu_index=None if gpu is None else gpu.index,
            gpu_serial=None if gpu is None else gpu.serial))


def _bits(mask: int, names: dict[str, int]) -> str:
    named = [n for n, bit in sorted(names.items(), key=lambda kv: kv[1]) if mask & bit]
    return f"0x{mask:x} ({', '.join(named)})" if named else f"0x{mask:x}"


def _inventory(run: RunEvents, sku: SkuLimits | None, gpus: dict[int, _Gpu],
               why: _Reasons) -> None:
    if run.start is None:
        why.add("run.start_missing", f"the run's burnin.run (start) of run {run.run_id} is not "
                "in the ledger: no inventory, driver or thresholds to judge by")
        return
    found = {g.gpu_index: g.serial for g in run.start.inventory}
    if run.installed is not None:
        expected, where = len(run.installed), "installed at step 60"
    elif sku is not None:
        expected, where = sku.gpus, f"the SKU's {sku.gpus} (no GPU installs in the ledger)"
    else:
        expected, where = len(found), ""
    if len(found) != expected:
        why.add("inventory.count", f"{len(found)} GPUs found, {expected} expected ({where})")
    if run.installed is None:
        return
    installed = set(run.installed.values())
    for index, serial in sorted(found.items()):
        if serial not in installed:
            why.add("inventory.serial", f"GPU {index} reports serial {serial}, not one installed "
                    f"in the unit at step 60", gpus[index])
    seen = set(found.values())
    for slot, serial in sorted(run.installed.items()):
        if serial not in seen:
            why.add("inventory.absent", f"GPU serial {serial} installed in slot {slot} at step "
                    "60 is absent from the run's inventory")


def _gpu_rules(g: _Gpu, run: RunEvents, limits: BurninLimits, sku: SkuLimits | None,
               intervals: int, seconds: float, why: _Reasons) -> None:
    r, n = limits.rules, _name(g)
    if g.samples < intervals:
        why.add("gpu.missing", f"{n} is absent from {intervals - g.samples} of the run's "
                f"{intervals} telemetry events (a GPU that falls off the bus goes quiet)", g)
    if g.new["ecc_dbe_vol"] > 0:
        why.add("ecc.dbe", f"{n}: {g.new['ecc_dbe_vol']} new double-bit (uncorrectable) ECC "
                "error(s)", g)
    if g.new["ecc_sbe_vol"] > r.ecc_sbe_max:
        why.add("ecc.sbe", f"{n}: {g.new['ecc_sbe_vol']} new single-bit ECC errors, more than "
                f"{r.ecc_sbe_max} in a run", g)
    if g.last is not None and (g.last.remap_pending > 0 or g.last.remap_failed > 0):
        why.add("ecc.remap", f"{n}: row remapping pending {g.last.remap_pending}, failed "
                f"{g.last.remap_failed}", g)
    for xid in g.xids:
        if xid in r.fatal_xids or xid in r.burnin_fatal_xids:
            why.add("xid.fatal", f"{n}: XID {xid}, a fatal XID", g)
        else:
            why.add("xid.review", f"{n}: XID {xid} (not a listed fatal XID: fails pending "
                    "review)", g)
    if g.hard_bits:
        why.add("clocks.throttle", f"{n}: clock-event bits {_bits(g.hard_bits, dict(r.hard_clock_bits))} "
                "under load", g)
    threshold = run.start.thresholds.max_operating_c if (
        run.start is not None and run.start.thresholds is not None) else None
    if threshold is None and sku is not None:
        threshold = sku.max_operating_c
    if threshold is not None and g.temp_max is not None and g.temp_max > threshold:
        why.add("thermal.max", f"{n}: {g.temp_max:g} C, above its max operating temperature "
                f"{threshold:g} C", g)
    if g.margin_min is not None and g.margin_min <= 0:
        why.add("thermal.margin", f"{n}: thermal margin reached {g.margin_min:g} C (<= 0)", g)
    if sku is not None and g.gen_min is not None and g.gen_min < sku.pcie_gen:
        why.add("pcie.gen", f"{n}: PCIe gen {g.gen_min} under load, below gen {sku.pcie_gen}", g)
    if sku is not None and g.width_min is not None and g.width_min < sku.pcie_width:
        why.add("pcie.width", f"{n}: PCIe x{g.width_min} under load, below x{sku.pcie_width}", g)
    if g.new["pcie_replay"] > r.pcie_replay_max:
        why.add("pcie.replay", f"{n}: {g.new['pcie_replay']} PCIe replays, more than "
                f"{r.pcie_replay_max} in the run", g)
    crc = g.new["nvlink_crc"] / seconds
    if crc > r.nvlink_crc_per_s_max:
        why.add("nvlink.crc", f"{n}: NVLink CRC errors at {crc:.1f}/s, above "
                f"{r.nvlink_crc_per_s_max:g}/s", g)
    if g.new["nvlink_recovery"] > r.nvlink_recovery_max:
        why.add("nvlink.recovery", f"{n}: {g.new['nvlink_recovery']} NVLink recovery "
                "error(s)", g)


def _performance(run: RunEvents, limits: BurninLimits, sku: SkuLimits | None,
                 gpus: dict[int, _Gpu], why: _Reasons) -> None:
    r = limits.rules
    names = r.measurements
    if not run.results:
        why.add("results.missing", "the run has no unit.tested (method Burnin) results: no "
                "performance evidence")
        return
    for _, tested in run.results:
        for t in tested.tests:
            for m in t.measurements:
                match = _GPU_NAME.match(m.name)
                base = match.group(2) if match else m.name
                g = gpus.get(int(match.group(1))) if match else None
                if g is None and match:
                    g = gpus.setdefault(int(match.group(1)), _Gpu(int(match.group(1))))
                who = _name(g) if g is not None else "the unit"
                if base in names.get("mismatches", ()) and m.value > 0:
                    why.add("stress.mismatch", f"{who}: {m.name} = {m.value:g} (stress-compute "
                            "results differ or are NaN)", g)
                if sku is None:
                    continue
                if base in names.get("compute_gflops", ()):
                    floor = round(sku.gflops_target * r.compute_fraction, 1)
                    if m.value < floor:
                        why.add("perf.compute", f"{who}: {m.value:g} GFLOPS, below "
                                f"{r.compute_fraction:g} x {sku.gflops_target:g}", g)
                elif base in names.get("mem_bw_mbs", ()) and m.value < sku.mem_bw_floor_mbs:
                    why.add("perf.mem_bw", f"{who}: memory bandwidth {m.value:g} MB/s, below "
                            f"the floor {sku.mem_bw_floor_mbs:g} MB/s", g)
                elif base in names.get("nccl_busbw_gbs", ()):
                    floor = round(sku.nccl_busbw_gbs * r.nccl_fraction, 1)
                    if m.value < floor:
                        why.add("perf.nccl", f"{who}: NCCL busbw {m.value:g} GB/s, below "
                                f"{r.nccl_fraction:g} x {sku.nccl_busbw_gbs:g} GB/s", g)


def _figures(g: _Gpu, failed: bool, seconds: float) -> b.GpuFigures:
    return b.GpuFigures(
        gpu_index=g.index, gpu_serial=g.serial, result="Failed" if failed else "Passed",
        samples=g.samples, temp_max_c=g.temp_max,
        temp_mean_c=round(g.temps / g.samples, 2) if g.samples else None,
        margin_min_c=g.margin_min,
        power_mean_w=round(g.power / g.loaded, 1) if g.loaded else None,
        sm_clock_mean_mhz=round(g.clock / g.loaded, 1) if g.loaded else None,
        ecc_sbe_new=g.new["ecc_sbe_vol"], ecc_dbe_new=g.new["ecc_dbe_vol"],
        remap_unc_new=g.new["remap_unc"],
        remap_pending=g.last.remap_pending if g.last else 0,
        remap_failed=g.last.remap_failed if g.last else 0,
        pcie_gen_min=g.gen_min, pcie_width_min=g.width_min,
        pcie_replay_new=g.new["pcie_replay"],
        nvlink_crc_per_s=round(g.new["nvlink_crc"] / seconds, 3),
        nvlink_recovery_new=g.new["nvlink_recovery"], xids=sorted(g.xids),
        clock_event_bits=g.bits)


def station_result(results: Sequence[tuple[str, b.UnitTested]]
                   ) -> Literal["Passed", "Failed", "Error", "Aborted"] | None:
    """The station's own overall result over its Burnin results (evidence only)."""
    if not results:
        return None
    seen = {t.result for _, t in results}
    return ("Failed" if "Failed" in seen else "Error" if "Error" in seen
            else "Aborted" if "Aborted" in seen else "Passed")


def decide_verdict(run: RunEvents, limits: BurninLimits) -> b.BurninVerdict:
    """The verdict on one run (see the module docstring)."""
    sku_name = run.end.sku or (run.start.sku if run.start is not None else None)
    sku = limits.sku(sku_name)
    r = limits.rules
    telemetry = sorted(run.telemetry, key=lambda t: t.stationseq)
    gpus: dict[int, _Gpu] = {}
    if run.start is not None:
        for inv in run.start.inventory:
            gpus[inv.gpu_index] = _Gpu(inv.gpu_index, inv.serial)
    for t in telemetry:
        for s in t.body.samples:
            gpus.setdefault(s.gpu_index, _Gpu(s.gpu_index)).add(
                s, r.under_load_util_pct, r.hard_clock_mask)
    for x in run.xids:
        g = gpus.setdefault(x.gpu_index, _Gpu(x.gpu_index, x.gpu_serial))
        g.xids.append(x.xid)
    why = _Reasons()
    if sku is None:
        why.add("limits.unknown_sku", f"no burn-in limits for SKU {sku_name or '(none given)'} "
                f"in limits version {limits.version}: add it to the limits file")
    _inventory(run, sku, gpus, why)
    seconds = _seconds(run.start_time, run.end_time)
    if not telemetry:
        why.add("telemetry.missing", "the run has no burnin.telemetry events")
    for index in sorted(gpus):
        _gpu_rules(gpus[index], run, limits, sku, len(telemetry), seconds, why)
    _performance(run, limits, sku, gpus, why)
    figures = [_figures(gpus[i], i in why.failed, seconds) for i in sorted(gpus)]
    return b.BurninVerdict(
        run_id=run.run_id, station=run.station, sku=sku_name,
        result="Failed" if why.items else "Passed", reasons=why.items, gpus=figures,
        started=run.start_time or run.end_time, ended=run.end_time, run_start=run.start_id,
        run_end=run.end_id, results=[i for i, _ in run.results],
        station_result=station_result(run.results),
        telemetry_sha256=commitment([t.digest for t in telemetry]).hex(),
        telemetry_events=len(telemetry), limits_sha256=limits.sha256,
        limits_version=limits.version)


def run_window(run: RunEvents) -> tuple[datetime, datetime]:
    """The event-time window of the run: its `unit.tested` results lie within it."""
    start = parse_time(run.start_time) if run.start_time else parse_time(run.end_time)
    return start, parse_time(run.end_time)


def assemble(end: Event, telemetry_topic: Sequence[tuple[Event, bytes]],
             results: Sequence[Event], installed: dict[int, str] | None) -> RunEvents:
    """The run of the `burnin.run` (end) `end` from the unit's `line.telemetry` events (each
    with its exact bytes; those of other runs are ignored), its `unit.tested` results (those
    of method Burnin inside the run's time window are kept) and the GPUs installed before it."""
    body = end.body
    assert isinstance(body, b.BurninRun)
    run_id = body.run_id
    start: Event | None = None
    telemetry: list[Telemetry] = []
    xids: list[tuple[int, b.BurninXid]] = []
    for ev, value in telemetry_topic:
        eb = ev.body
        if isinstance(eb, b.BurninTelemetry) and eb.run_id == run_id:
            telemetry.append(Telemetry(ev.seq or 0, event_digest(value), eb))
        elif isinstance(eb, b.BurninXid) and eb.run_id == run_id:
            xids.append((ev.seq or 0, eb))
        elif isinstance(eb, b.BurninRun) and eb.run_id == run_id and eb.phase == "start":
            start = start or ev
    first = parse_time(start.envelope.time) if start is not None else None
    last = parse_time(end.envelope.time)
    kept = [(r.id, r.body) for r in results
            if isinstance(r.body, b.UnitTested) and r.body.method == "Burnin"
            and r.source == end.source
            and (first is None or first <= parse_time(r.envelope.time))
            and parse_time(r.envelope.time) <= last]
    start_body = start.body if start is not None else None
    assert start_body is None or isinstance(start_body, b.BurninRun)
    return RunEvents(
        unit=end.subject, station=end.source, run_id=run_id, end=body, end_id=end.id,
        end_time=end.envelope.time, start=start_body,
        start_id=start.id if start is not None else None,
        start_time=start.envelope.time if start is not None else None,
        telemetry=telemetry, xids=[x for _, x in sorted(xids, key=lambda sx: sx[0])],
        results=kept, installed=installed)


def installed_gpus(unit_events: Sequence[Event], before: str) -> dict[int, str] | None:
    """Slot -> serial of the GPUs (category `gpu`) installed in the unit by its events at or
    before event time `before` (installs and uninstalls replayed in order); None if none."""
    limit = parse_time(before)
    upto = [e for e in unit_events if parse_time(e.envelope.time) <= limit]
    gpus = {i.slot: i.serial for i in current_items(upto)
            if i.category == "gpu" and i.slot is not None and i.serial is not None}
    return gpus or None
