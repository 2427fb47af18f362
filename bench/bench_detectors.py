"""Detector throughput (issue 12): GPU samples/s of the burn-in anomaly detectors per process.

N units x M seconds of simulated 8-GPU burn-in (the station's runner on `SimulatedBaseboard`,
each unit its own seed, natural noise), encoded and signed as a station sends them, interleaved
in time order as a line's partition carries them. Timed in the same run, each pass over the
same event bytes, best of `--rounds`:

- ceiling: decode only (`decode_event`, admission's decoding, as the worker's screen does);
- detectors: decode, then `burnin_anomaly.fold` into each run's state (the pure logic);
- stage: the decoded events as the worker's `Candidate`s, in batches of `--batch`, through
  `AnomalyStage.load` + `decide` against a SQLite ledger (the cache path: no SQL per batch),
  plus the decoding.

Goal: >= 50,000 GPU samples/s for the detectors. Writes the section "Detectors (issue 12):
throughput" of docs/benchmarks.md (`--docs ''`: print only).

    .venv/bin/python -m bench.bench_detectors [--units 16] [--seconds 600] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from linetrace.ledger.db import Ledger
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, decode_event, encode_event
from linetrace.schemas.topics import TELEMETRY, partition_of
from linetrace.stations.burnin import SimClock, SimulatedBaseboard, run_burnin
from linetrace.streams.detect.anomaly_stage import AnomalyStage
from linetrace.streams.detect.burnin_anomaly import TYPES, RunState, fold, new_state, run_id_of

from .report import machine, table, write_section

T0 = datetime(2026, 5, 4, 8, 0, tzinfo=UTC)
SECTION = "## Detectors (issue 12): throughput"
KEY = signing.generate_key()


class _Recorder:
    def __init__(self, station: str) -> None:
        self.station = station
        self.values: list[tuple[str, bytes]] = []  # (event time, bytes)

    async def emit(self, event_type: str, subject: str, body: b.Body, *, time: datetime | str,
                   event_id: str | None = None) -> bytes:
        value = encode_event(event_type=event_type, source=self.station, subject=subject,
                             body=body, time=time, event_id=event_id,
                             stationseq=len(self.values) + 1)
        if event_type in TYPES:
            signing.sign_value(value, KEY)  # as a station does (not timed)
            self.values.append((str(time), value))
        return value


def generate(units: int, seconds: int) -> list[bytes]:
    """Every unit's burn-in events, interleaved by event time."""
    out: list[tuple[str, int, int, bytes]] = []
    for u in range(units):
        clock = SimClock(T0)
        board = SimulatedBaseboard(clock, seed=1000 + u)
        rec = _Recorder(f"burnin-{u % 4 + 1:02d}")
        asyncio.run(run_burnin(f"SRV-BENCH-{u:05d}", board, rec, duration_s=seconds,
                               clock=clock, expected_gpus=None))
        out += [(t if isinstance(t, str) else t, u, k, v) for k, (t, v) in enumerate(rec.values)]
    out.sort(key=lambda r: (r[0], r[1], r[2]))
    return [v for _, _, _, v in out]


def samples_in(values: list[bytes]) -> int:
    n = 0
    for v in values:
        body = decode_event(v).body
        if isinstance(body, b.BurninTelemetry):
            n += len(body.samples)
    return n


def ceiling(values: list[bytes]) -> None:
    for v in values:
        decode_event(v)


def detectors(values: list[bytes]) -> None:
    fold_all([decode_event(v) for v in values])


def fold_all(events: list[Event]) -> None:
    states: dict[str, RunState] = {}
    for ev in events:
        rid = run_id_of(ev)
        if rid is None:
            continue
        st = states.get(rid)
        if st is None:
            st = states[rid] = new_state(ev)
        fold(st, ev)


def stage_pass(ledger: Ledger, batch_size: int) -> Callable[[list[bytes]], None]:
    def run(values: list[bytes]) -> None:
        stage = AnomalyStage()
        offsets: dict[int, int] = {}
        batch: list[Candidate] = []

        def flush() -> None:
            with ledger.reader() as s:
                stage.decide(batch, stage.load(s, batch))
            batch.clear()

        for v in values:
            ev = decode_event(v)
            part = partition_of(ev.subject.encode(), 8)
            off = offsets.get(part, 0)
            offsets[part] = off + 1
            batch.append(Candidate(SourceRecord(TELEMETRY, part, off, None, v), ev, "", b""))
            if len(batch) >= batch_size:
                flush()
        if batch:
            flush()
    return run


def timed(fn: Callable[[list[Any]], None], values: list[Any], rounds: int) -> float:
    best = float("inf")
    for _ in range(rounds):
        t = time.process_time()  # CPU seconds of this process: the machine may be shared
        fn(values)
        best = min(best, time.process_time() - t)
    return best


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--units", type=int, default=16)
    p.add_argument("--seconds", type=int, default=600)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--batch", type=int, default=500)
    p.add_argument("--docs", default="docs/benchmarks.md")
    args = p.parse_args(argv)
    values = generate(args.units, args.seconds)
    n = samples_in(values)
    with tempfile.TemporaryDirectory() as tmp:
        ledger = Ledger(f"sqlite:///{tmp}/ledger.db")
        try:
            t_ceiling = timed(ceiling, values, args.rounds)
            t_detect = timed(detectors, values, args.rounds)
            t_fold = timed(fold_all, [decode_event(v) for v in values], args.rounds)
            t_stage = timed(stage_pass(ledger, args.batch), values, args.rounds)
        finally:
            ledger.close()
    rate = {k: n / t for k, t in (("ceiling", t_ceiling), ("detectors", t_detect),
                                  ("stage", t_stage))}
    fold_only = n / t_fold
    rows = [("loop", "GPU samples/s", "events/s", "x ceiling"),
            ("decode only (ceiling)", f"{rate['ceiling']:,.0f}",
             f"{len(values) / t_ceiling:,.0f}", "1.00"),
            ("decode + detectors (goal >= 50,000)", f"{rate['detectors']:,.0f}",
             f"{len(values) / t_detect:,.0f}", f"{rate['detectors'] / rate['ceiling']:.2f}"),
            ("decode + AnomalyStage load/decide", f"{rate['stage']:,.0f}",
             f"{len(values) / t_stage:,.0f}", f"{rate['stage'] / rate['ceiling']:.2f}"),
            ("detectors alone (events decoded beforehand)", f"{fold_only:,.0f}",
             f"{len(values) / t_fold:,.0f}", f"{fold_only / rate['ceiling']:.2f}")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                            text=True).stdout.strip()
    cmd = (f".venv/bin/python -m bench.bench_detectors --units {args.units} "
           f"--seconds {args.seconds} --rounds {args.rounds} --batch {args.batch}")
    body = "\n".join([
        SECTION, "",
        f"Measured {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {machine()}. Code: commit "
        f"{commit}. Reproduce with:", "", f"    {cmd}", "",
        f"{args.units} units x {args.seconds} s of simulated 8-GPU burn-in "
        f"({len(values):,} `burnin.run`/`burnin.telemetry` events, {n:,} GPU samples, "
        "interleaved by event time), one process, best of "
        f"{args.rounds} passes over the same bytes, CPU time of the process "
        "(`time.process_time`: the machine is shared). Ceiling: `decode_event` alone. Detectors: "
        "the same decoding, then `burnin_anomaly.fold` per run. Stage: the decoded events as "
        f"the worker's candidates, in batches of {args.batch}, through `AnomalyStage.load` + "
        "`decide` on a SQLite ledger (cached run states: no SQL per batch). Detectors alone: "
        "the fold over events decoded before the timer (in the worker, screening decodes each "
        "event once for every stage).", "",
        table(rows), ""])
    print(body)
    if args.docs:
        write_section(Path(args.docs), body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
