"""`linetrace up`: broker, worker and simulator as supervised child processes.

Children get their own process group and die with us (PR_SET_PDEATHSIG), so Ctrl-C or a
crash of `up` leaves no orphans. With --until-idle, `up` stops everything once the line is
idle, then prints a summary. Idle means nothing holds work (`waiting_for`): no station's
spool under `<data dir>/stations` holds an event that is not acknowledged, or that was
acknowledged by an earlier incarnation of the broker and is not in the ledger
(`linetrace.stations.backlog`); the worker has written every input record (its positions in
the ledger, in the broker's current incarnation, reach the end of every input partition); and
the relay has published the whole outbox.
"""

from __future__ import annotations

import asyncio
import ctypes
import os
import random
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, IngestPosition, Rejected, Unit

from .settings import Settings


def _die_with_parent() -> None:
    os.setpgrp()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(argv, stdout=self.log_path.open("ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, preexec_fn=_die_with_parent)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 20.0) -> None:
        if not self.alive():
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class Interrupted(Exception):
    pass


def _end_offsets(bootstrap: str) -> dict[tuple[str, int], int]:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from linetrace.schemas.topics import INPUT_TOPICS

    async def go() -> dict[tuple[str, int], int]:
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        await c.start()
        try:
            tps = [TopicPartition(t.name, p) for t in INPUT_TOPICS for p in range(t.partitions)]
            ends = await c.end_offsets(tps)
            return {(tp.topic, tp.partition): o for tp, o in ends.items()}
        finally:
            await c.stop()

    return asyncio.run(go())


def waiting_for(ledger: Ledger, bootstrap: str, stations_dir: Path | None = None) -> list[str]:
    """What still holds work, one line each; empty when the line is idle.

    The stations' spools (under `stations_dir`), then the outbox, are read before the broker's
    end offsets, and those before the ledger's positions: whatever a spool or the outbox hands
    to the broker meanwhile is then inside the end offsets compared. Positions count only in
    the broker's current incarnation: after the embedded broker restarted empty, old positions
    say nothing about the new log."""
    from linetrace.ledger.outbox import backlog
    from linetrace.stations.backlog import station_backlogs
    from linetrace.streams.broker import cluster_id

    incarnation = asyncio.run(cluster_id(bootstrap))
    spools = station_backlogs(stations_dir, incarnation) if stations_dir is not None else []
    with ledger.reader() as s:
        unsent = backlog(s)
    ends = _end_offsets(bootstrap)
    reasons: list[str] = []
    with ledger.reader() as s:
        for b in spools:
            if b.acked_elsewhere:  # what the worker stored before the restart is not work
                b = replace(b, acked_elsewhere=_not_stored(s, b.station_id, b.acked_elsewhere))
                if b.empty:
                    continue
            reasons.append(b.describe())
        pos = {(r.topic, r.partition): r.next_offset for r in s.scalars(select(IngestPosition))
               if r.incarnation is None or r.incarnation == incarnation}
    behind = {k: end - pos.get(k, 0) for k, end in ends.items() if pos.get(k, 0) < end}
    if behind:
        reasons.append(f"the worker has not yet written {sum(behind.values())} record(s) on "
                       f"{len(behind)} partition(s)")
    if unsent:
        reasons.append(f"the relay has not yet published {unsent} outbox message(s)")
    return reasons


def _not_stored(s: Session, station_id: str, event_ids: tuple[str, ...]) -> tuple[str, ...]:
    """The event ids of `station_id` that are neither in the ledger nor rejected."""
    seen: set[str] = set()
    for i in range(0, len(event_ids), 500):
        chunk = event_ids[i:i + 500]
        seen.update(s.scalars(select(EventRow.event_id).where(
            EventRow.source == station_id, EventRow.event_id.in_(chunk))))
        seen.update(e for e in s.scalars(select(Rejected.event_id).where(
            Rejected.source == station_id, Rejected.event_id.in_(chunk))) if e is not None)
    return tuple(e for e in event_ids if e not in seen)


def drained(ledger: Ledger, bootstrap: str, stations_dir: Path | None = None) -> bool:
    """Is the line idle: nothing in a spool, the ingest or the outbox (`waiting_for`)?"""
    return not waiting_for(ledger, bootstrap, stations_dir)


@dataclass(frozen=True)
class Counts:
    """What the ledger holds so far: accepted events and refused records by destination."""

    accepted: int
    dead_lettered: int
    quarantined: int

    @property
    def rejected(self) -> int:
        return self.dead_lettered + self.quarantined

    def line(self) -> str:
        return (f"{self.accepted} events accepted, {self.rejected} rejected "
                f"({self.dead_lettered} dead-lettered, {self.quarantined} quarantined)")


def counts(ledger: Ledger) -> Counts:
    with ledger.reader() as s:
        accepted = s.scalar(select(func.count()).select_from(EventRow)) or 0
        by_dest = dict(s.execute(select(Rejected.destination, func.count())
                                 .group_by(Rejected.destination)).all())
    dlq = sum(n for d, n in by_dest.items() if d.endswith(".dlq"))
    return Counts(accepted, dlq, sum(by_dest.values()) - dlq)


class Progress:
    """Prints the ledger's counts while the line runs: at start, then whenever they changed
    (at most every `every` seconds), and once each time the worker has caught up."""

    def __init__(self, ledger: Ledger, every: float = 2.0) -> None:
        self.ledger, self.every = ledger, every
        self.last: Counts | None = None
        self.next_at = 0.0
        self.caught_up = False

    def tick(self) -> bool:
        """Print the counts if they changed; True when it looked (every `every` seconds)."""
        if time.monotonic() < self.next_at:
            return False
        self.next_at = time.monotonic() + self.every
        now = counts(self.ledger)
        if now != self.last:
            print(f"  progress {now.line()}", flush=True)
            self.last = now
            self.caught_up = False
        return True

    def worker_caught_up(self) -> None:
        if not self.caught_up:
            print(f"caught up: the worker has written every record sent so far; "
                  f"{counts(self.ledger).line()}", flush=True)
            self.caught_up = True


def summary(ledger: Ledger) -> dict[str, object]:
    with ledger.reader() as s:
        states = dict(s.execute(select(Unit.state, func.count()).where(Unit.kind == "server")
                                .group_by(Unit.state)).all())
    c = counts(ledger)
    return {"servers": sum(states.values()), "states": states, "events_accepted": c.accepted,
            "dead_lettered": c.dead_lettered, "quarantined": c.quarantined}


def run_up(settings: Settings, units: int, seed: int | None, until_idle: bool,
           speed: float, simulate_args: list[str] | None = None) -> int:
    data = settings.data_dir
    logs = data / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    if settings.broker is None and settings.broker_file.exists():
        settings.broker_file.unlink()  # left by a previous run that was killed
    env = {**os.environ, "LINETRACE_DATA_DIR": str(data), "PYTHONUNBUFFERED": "1"}
    base = [sys.executable, "-m", "linetrace.cli.main"]
    children: list[Child] = []

    def on_signal(*_: object) -> None:
        raise Interrupted

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        if settings.broker is None:
            children.append(Child("broker", base + ["broker"], logs, env))
            deadline = time.monotonic() + 60
            while not settings.broker_file.exists():
                if not children[0].alive() or time.monotonic() > deadline:
                    print(f"linetrace: the broker did not start; see {children[0].log_path}",
                          file=sys.stderr)
                    return 1
                time.sleep(0.1)
        bootstrap = settings.bootstrap()
        children.append(Child("worker", base + ["worker"], logs, env))
        if seed is None:  # drawn here so it can be printed with the rest (CONTRACTS.md)
            seed = random.SystemRandom().randrange(1, 10**6)
        sim_args = base + ["simulate", "--units", str(units), "--speed", str(speed),
                           "--seed", str(seed), *(simulate_args or [])]
        sim = Child("simulate", sim_args, logs, env)
        children.append(sim)
        print(f"linetrace is up (data dir {data})")
        print(f"  seed     {seed} (`--seed {seed}` reproduces this run in another data dir)")
        print(f"  broker   kafka://{bootstrap}")
        print(f"  ledger   {settings.db if not settings.db.startswith('sqlite') else settings.db[10:]}")
        print(f"  logs     {logs}/{{broker,worker,simulate}}.log")
        print(f"  look     linetrace units --data-dir {data}   |   linetrace trace SERIAL --data-dir {data}")
        print("  stop     Ctrl-C" if not until_idle else "  running until the line is idle...",
              flush=True)
        ledger = Ledger(settings.db)
        stations = data / "stations"  # the simulator's spools (cli/line_cmds.py)
        progress = Progress(ledger)
        while sim.alive():
            for c in children:
                if c is not sim and not c.alive():
                    print(f"linetrace: {c.name} exited with {c.proc.returncode}; see {c.log_path}",
                          file=sys.stderr)
                    return 1
            progress.tick()
            time.sleep(0.2)
        if sim.proc.returncode != 0:
            print(f"linetrace: simulator failed ({sim.proc.returncode}); see {sim.log_path}",
                  file=sys.stderr)
            return 1
        if not until_idle:
            print("simulation finished; broker and worker keep running (Ctrl-C stops)", flush=True)
            while all(c.alive() for c in children if c is not sim):
                if progress.tick() and not progress.caught_up and drained(ledger, bootstrap,
                                                                          stations):
                    progress.worker_caught_up()
                time.sleep(0.5)
            return 1
        deadline = time.monotonic() + 300
        stable = 0
        told: set[str] = set()
        reasons: list[str] = []
        while stable < 2:
            worker = children[-2]
            if not worker.alive():
                print(f"linetrace: worker exited; see {worker.log_path}", file=sys.stderr)
                return 1
            if time.monotonic() > deadline:
                print("linetrace: the line is not idle after 300 s: " + "; ".join(reasons),
                      file=sys.stderr)
                return 1
            reasons = waiting_for(ledger, bootstrap, stations)
            stable = 0 if reasons else stable + 1
            spools = {r.split(":", 1)[0]: r for r in reasons if r.startswith("station ")}
            for who in sorted(spools.keys() - told):  # a station holding work is news
                print(f"  waiting: {spools[who]}", flush=True)
            told = set(spools)
            progress.tick()
            time.sleep(0.5)
        progress.worker_caught_up()
        s = summary(ledger)
        ledger.close()
        states = ", ".join(f"{n} {k}" for k, n in sorted(s["states"].items()))  # type: ignore[attr-defined]
        print(f"idle: {s['servers']} servers ({states}); {s['events_accepted']} events accepted, "
              f"{s['dead_lettered']} dead-lettered, {s['quarantined']} quarantined")
        return 0
    except Interrupted:
        print("\nstopping broker, worker and simulator...", file=sys.stderr)
        return 0
    finally:
        for c in reversed(children):
            c.stop()
        for s_, h in old.items():
            signal.signal(s_, h)
