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

from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.stations.burnin import (
    FAULTS, SKUS, BurninSummary, Clock, GpuBackend, SimClock, SimulatedBaseboard, WallClock,
    run_burnin,
)
from linetrace.stations.burnin.sku import DEFAULT_SKU

from .extras import need_extra
from .ledger_cmds import open_ledger, publish_outbox
from .line_cmds import station_key
from .output import print_json
from .settings import Settings

DEFAULT_STATION = "burnin-02"  # burnin-01 is the line simulator's rack; never share a station
SIM_DURATION_S = 600.0
NVML_DURATION_S = 60.0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = "burn in one unit's GPUs (simulated baseboard or NVML) and emit the evidence"
    p = subparsers.add_parser("burnin", parents=[common], help=help_,
                              description=help_ + "; exit status 0 when the unit passed, 1 when "
                              "a burn-in test failed")
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
