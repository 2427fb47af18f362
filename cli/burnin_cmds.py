"""`linetrace burnin`: burn in one unit and send its evidence through a real StationClient.

`--backend sim` (default) drives the simulated 8-GPU baseboard on a simulated clock: the run
takes as long as sending its events, and its event times end at the moment the command ran.
`--backend nvml` burns in the GPUs of this machine in real time (needs the `[gpu]` extra, and
torch or cupy for the GEMM stress load). The station's key lives in
`<data dir>/stations/<ID>/key.pem` and is enrolled like the simulator's stations.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.burnin_limits import BurninLimits
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.stations.burnin import (
    FAULTS, SKUS, BurninSummary, Clock, GpuBackend, SimClock, SimulatedBaseboard, WallClock,
    run_burnin,
)
from linetrace.stations.burnin.sku import DEFAULT_SKU

from .extras import need_extra
from .ledger_cmds import open_ledger, publish_outbox
from .line_cmds import station_key
from .output import print_json, print_table
from .settings import ConfigurationError, Settings

DEFAULT_STATION = "burnin-02"  # burnin-01 is the line simulator's rack; never share a station
SIM_DURATION_S = 600.0
NVML_DURATION_S = 60.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    top = subparsers.add_parser(
        "burnin", parents=[common], help="burn in a unit (`burnin run`) or show its verdicts "
        "(`burnin show`)", description="`burnin run --unit S` burns in one unit; `burnin show "
        "SERIAL` prints linetrace's verdicts on it. `burnin --unit S ...` is `burnin run`.")
    sub = top.add_subparsers(dest="burnin_command", required=True, metavar="{run,show}")
    help_ = "burn in one unit's GPUs (simulated baseboard or NVML) and emit the evidence"
    p = sub.add_parser("run", parents=[common], help=help_,
                       description=help_ + "; exit status 0 when the station's own tests "
                       "passed, 1 when one failed (linetrace's verdict: `burnin show`)")
    p.add_argument("--unit", required=True, help="unit serial (the events' subject)")
    p.add_argument("--backend", choices=["sim", "nvml"], default="sim")
    p.add_argument("--duration", type=float,
                   help=f"seconds (default {SIM_DURATION_S:g} simulated, {NVML_DURATION_S:g} nvml)")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between telemetry events")
    p.add_argument("--station", default=DEFAULT_STATION,
                   help=f"burn-in station id (default {DEFAULT_STATION})")
    p.add_argument("--seed", type=int, help="seed of the simulated baseboard")
    p.add_argument("--faults", default="none",
                   help=f"simulated faults, comma-separated: {', '.join(FAULTS)} or none")
    p.add_argument("--gpus", help="GPU serials installed at step 60, comma-separated; the "
                                  "inventory test fails if the GPUs found differ")
    p.add_argument("--sku", choices=sorted(SKUS), default=DEFAULT_SKU,
                   help="GPU SKU of the simulated baseboard")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.set_defaults(fn=cmd_burnin)
    show = sub.add_parser("show", parents=[common], help="linetrace's burn-in verdicts on a "
                          "unit, latest first, with per-GPU figures and every reason",
                          description="Exit status 0 when the unit has a verdict, 1 when none.")
    show.add_argument("serial", help="unit serial")
    show.add_argument("--json", action="store_true",
                      help="a list of verdicts (docs/burnin.md), latest first")
    show.set_defaults(fn=cmd_show)


def _split(text: str | None) -> list[str]:
    return [s.strip() for s in (text or "").split(",") if s.strip()]


def _backend(args: argparse.Namespace, faults: list[str], expected: list[str] | None,
             duration: float) -> tuple[Clock, GpuBackend]:
    if args.backend == "nvml":
        from linetrace.stations.burnin import NvmlBackend

        return WallClock(), NvmlBackend()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    if args.seed is None:
        print(f"seed {seed} (run again with --seed {seed} to reproduce)", flush=True)
    clock = SimClock(datetime.now(UTC) - timedelta(seconds=duration))  # the run ends now
    return clock, SimulatedBaseboard(clock, serials=expected, sku=args.sku, seed=seed,
                                     faults=faults, fault_after_s=min(60.0, duration / 4))


def _enrolled_key(settings: Settings, station_id: str) -> Ed25519PrivateKey:
    """The station's key (created where it runs), enrolled like `linetrace simulate` does."""
    key = station_key(settings.data_dir / "stations", station_id)
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        enroll_station(ledger, plant, station_id, "burnin", key.public_key())
        publish_outbox(settings, ledger)
    finally:
        ledger.close()
    return key


def cmd_burnin(args: argparse.Namespace, settings: Settings) -> int:
    need_extra("station", "burnin (it sends through the StationClient)")
    if args.backend == "nvml":
        need_extra("gpu", "burnin --backend nvml")
    faults = [f for f in _split(args.faults) if f != "none"]
    if args.backend == "nvml" and faults:
        print("linetrace: --faults only applies to --backend sim", file=sys.stderr)
        return 2
    expected = _split(args.gpus) or None
    duration = args.duration or (SIM_DURATION_S if args.backend == "sim" else NVML_DURATION_S)
    clock, backend = _backend(args, faults, expected, duration)

    async def run(bootstrap: str, key: Ed25519PrivateKey) -> BurninSummary:
        from linetrace.stations.client import StationClient

        client = StationClient(args.station, key, bootstrap,
                               settings.data_dir / "stations" / args.station)
        await client.start()
        try:
            return await run_burnin(args.unit, backend, client, duration_s=duration,
                                    interval_s=args.interval, clock=clock,
                                    expected_gpus=expected)
        finally:
            await client.stop()

    try:
        bootstrap = settings.bootstrap()
        summary = asyncio.run(run(bootstrap, _enrolled_key(settings, args.station)))
    finally:
        backend.close()
    if args.json:
        print_json(summary_dict(summary))
    else:
        notes = [f"{summary.intervals} telemetry events", f"{summary.samples} GPU samples",
                 f"{len(summary.xids)} XID(s)"]
        if not summary.xid_supported:
            notes.append("this platform cannot deliver XIDs")
        if summary.absent_gpus:
            notes.append("GPUs absent: " + ",".join(map(str, summary.absent_gpus)))
        if not summary.stress.available:
            notes.append("no stress load")
        print(f"burn-in {summary.run_id} of {summary.unit}: {summary.result} ({', '.join(notes)})")
        if summary.failed_tests:
            print(f"failed tests: {', '.join(summary.failed_tests)}")
    return 0 if summary.result == "Passed" else 1


def summary_dict(s: BurninSummary) -> dict[str, Any]:
    return {
        "run_id": s.run_id, "unit": s.unit, "result": s.result,
        "started": s.started.isoformat(), "ended": s.ended.isoformat(),
        "telemetry_events": s.intervals, "gpu_samples": s.samples,
        "skipped_intervals": s.skipped_intervals,
        "inventory": [{"index": g.index, "serial": g.serial, "uuid": g.uuid,
                       "board_pn": g.board_pn} for g in s.inventory],
        "absent_gpus": s.absent_gpus, "xid_supported": s.xid_supported,
        "xids": [{"gpu_index": x.gpu_index, "xid": x.xid, "raw": x.raw} for x in s.xids],
        "stress": {"available": s.stress.available, "engine": s.stress.engine,
                   "note": s.stress.note},
        "tests": msgspec.to_builtins(s.tests),
    }


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.verdict_docs import verdict_document
    from linetrace.ledger.verdicts import verdicts_of

    ledger = open_ledger(settings)
    try:
        with ledger.reader() as s:
            found = verdicts_of(s, args.serial)
    finally:
        ledger.close()
    if not found:
        print(f"linetrace: unit {args.serial} has no burn-in verdict: it was never burned in, "
              "or its run's end or results are not in the ledger yet (is `linetrace worker` "
              "running? `linetrace units` lists units)", file=sys.stderr)
        return 1
    docs = [verdict_document(v) for v in found]
    if args.json:
        print_json(docs)
        return 0
    for i, v in enumerate(found):
        body = v.body
        if i:
            print()
        print(f"burn-in verdict {v.event.id} of {v.event.subject}: {body.result}")
        print(f"  run {body.run_id} at {body.station} ({body.sku or 'SKU unknown'}), "
              f"{body.started} to {body.ended}; station's own result: "
              f"{body.station_result or 'none'}")
        print(f"  telemetry: {body.telemetry_events} events, SHA-256 {body.telemetry_sha256}")
        print(f"  limits: version {body.limits_version}, SHA-256 {body.limits_sha256}")
        for r in body.reasons:
            print(f"  FAIL {r.code}: {r.message}")
        rows = [[g.gpu_index, g.gpu_serial or "", g.result, g.samples, _f(g.temp_max_c),
                 _f(g.temp_mean_c), _f(g.margin_min_c), _f(g.power_mean_w),
                 _f(g.sm_clock_mean_mhz), g.ecc_sbe_new, g.ecc_dbe_new,
                 f"{g.remap_pending}/{g.remap_failed}",
                 f"{g.pcie_gen_min or '-'}x{g.pcie_width_min or '-'}", g.pcie_replay_new,
                 f"{g.nvlink_crc_per_s:g}/{g.nvlink_recovery_new}",
                 ",".join(map(str, g.xids)) or "-", f"0x{g.clock_event_bits:x}"]
                for g in body.gpus]
        print_table(rows, ["GPU", "SERIAL", "RESULT", "SAMPLES", "TMAX", "TMEAN", "MARGIN",
                           "POWER", "SMCLK", "SBE", "DBE", "REMAP", "PCIE", "REPLAY",
                           "NVLINK", "XID", "CLOCKS"])
    return 0


def _f(v: float | None) -> str:
    return "-" if v is None else f"{v:g}"


def burnin_limits_in_force(settings: Settings) -> BurninLimits:
    """The limits the worker's verdicts decide by: LINETRACE_BURNIN_LIMITS, else packaged.
    A malformed file is a configuration error (exit 2): nothing starts."""
    from linetrace.ledger.burnin_limits import LimitsMalformed, load_limits

    try:
        return load_limits(settings.burnin_limits)
    except LimitsMalformed as e:
        raise ConfigurationError(f"LINETRACE_BURNIN_LIMITS: {e}") from None
