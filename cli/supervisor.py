"""`linetrace up`: broker, worker, simulator and web console as supervised child processes.

The console (`linetrace console`, docs/console.md) listens on LINETRACE_CONSOLE_PORT
(`--console-port`; 8080) or, when that port is in use, on a free one, and `up` prints its URL;
`--no-console` leaves it out. On a ledger without users `up` first enrols an `admin` with a
key of their own (`<data dir>/keys/admin.key`) and prints a one-time console password for
them, once (`console_cmds.ensure_first_admin`), so a newcomer signs in with nothing else to do.

Children get their own process group and die with us (PR_SET_PDEATHSIG), so Ctrl-C or a
crash of `up` leaves no orphans. The simulator is conducted (it obeys linetrace's routes,
dispositions, locks and interlock) unless `--unconducted`; the worker gets the simulator's
speed as its line speed (`LINETRACE_LINE_SPEED`).

With --until-idle, `up` stops everything once the line is idle, then prints a summary and the
units on hold with their reasons. Idle means nothing holds work (`waiting_for`): no station's
spool under `<data dir>/stations` holds an event that is not acknowledged, or that was
acknowledged by an earlier incarnation of the broker and is not in the ledger
(`linetrace.stations.backlog`); the worker has written every input record (its positions in
the ledger, in the broker's current incarnation, reach the end of every input partition); the
relay has published the whole outbox; and the simulator has ended, or has nothing left to
send but units that wait (its status file, `line_cmds.sim_status_file`), each of them on hold
in the ledger (`ledger.holds.held_units`) or waiting for a unit that is. A unit that waits
for anything else (a `command.route` the worker has not sent yet) keeps the line busy.
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, IngestPosition, Rejected, Unit

from .line_cmds import sim_status_file
from .settings import ConfigurationError, Settings


def _die_with_parent() -> None:
    os.setpgrp()
    try:
        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Child:
    def __init__(self, name: str, argv: list[str], log_dir: Path, env: dict[str, str],
                 pass_fds: tuple[int, ...] = ()) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self.proc = subprocess.Popen(argv, stdout=self.log_path.open("ab"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, preexec_fn=_die_with_parent, pass_fds=pass_fds)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def failure(self) -> str:
        """How it ended, for a person: its exit code and its own last `linetrace: ...` error
        line (what is wrong and what to do), then where its log is."""
        try:
            with self.log_path.open("rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 16384))
                tail = f.read().decode("utf-8", "replace").splitlines()
        except OSError:
            tail = []
        said = next((line for line in reversed(tail) if line.startswith("linetrace: ")), None)
        told = f": {said.removeprefix('linetrace: ')}" if said else ""
        return f"{self.name} exited with {self.proc.returncode}{told}; see {self.log_path}"

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
    """Servers by state (a server on hold counts as on_hold, as `units` shows it) and counts."""
    held = {u["serial"] for u in held_now(ledger)}
    with ledger.reader() as s:
        states: dict[str, int] = {}
        for serial, state in s.execute(select(Unit.serial, Unit.state)
                                       .where(Unit.kind == "server")):
            key = "on_hold" if serial in held else state
            states[key] = states.get(key, 0) + 1
    c = counts(ledger)
    return {"servers": sum(states.values()), "states": states, "events_accepted": c.accepted,
            "dead_lettered": c.dead_lettered, "quarantined": c.quarantined}


def held_now(ledger: Ledger) -> list[dict[str, Any]]:
    """`ledger.holds.held_units`: the unfinished units an active hold stops."""
    from linetrace.ledger.holds import held_units

    with ledger.reader() as s:
        return held_units(s)


def sim_status(path: Path, pid: int) -> dict[str, Any] | None:
    """The running simulator's last status (None: none yet, or another process's)."""
    try:
        status = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return status if isinstance(status, dict) and status.get("pid") == pid else None


def busy_units(status: dict[str, Any] | None, held: Collection[str]) -> list[str]:
    """What keeps the simulator busy, one line each: empty when it sends nothing more and
    every unit it waits with is on hold, or waits for a unit that is (a server for its
    PCBA), or for one that waits so, and so on."""
    if status is None or not status.get("idle"):
        return ["the simulator is still sending"]
    waiting: dict[str, str] = dict(status.get("waiting") or {})
    ok = set(held)
    grew = True
    while grew:  # units waiting on a held unit (transitively) wait with it
        grew = False
        for unit, why in waiting.items():
            other = why.removeprefix("waits for ") if why.startswith("waits for ") else None
            if unit not in ok and other is not None and other in ok:
                ok.add(unit)
                grew = True
    return [f"unit {u} waits ({why}) but is not on hold" for u, why in sorted(waiting.items())
            if u not in ok]


def print_held(held: list[dict[str, Any]]) -> None:
    if not held:
        return
    print(f"on hold: {len(held)} unit(s)")
    for u in held:
        where = f"step {u['step']}" if u.get("step") is not None else "no step yet"
        print(f"  {u['serial']} ({u['product']}, {where}, {u['state']})")
        for h in u["holds"]:
            print(f"    {h['hold_id']} [{h['code']}] {h['reason']}")


def alerts_now(ledger: Ledger) -> list[dict[str, Any]]:
    """The alerts not in normal, most urgent first (`linetrace alerts --json`)."""
    from linetrace.ledger.alerts.views import list_alerts

    with ledger.reader() as session:
        return [a.to_json() for a in list_alerts(session)]


def print_alerts(alerts: list[dict[str, Any]], data: Path) -> None:
    if not alerts:
        print("alerts: none")
        return
    mix = {p: sum(a["priority"] == p for a in alerts) for p in ("high", "medium", "low")}
    print(f"alerts: {len(alerts)} not normal ({mix['high']} high, {mix['medium']} medium, "
          f"{mix['low']} low); `linetrace alerts --data-dir {data}` lists them, `linetrace "
          "ack ID` acknowledges")
    for a in alerts[:10]:
        print(f"  {a['id']} {a['priority']:<6} {a['state']:<18} {a['condition']} {a['subject']}: "
              f"{a['message']}")
    if len(alerts) > 10:
        print(f"  ... and {len(alerts) - 10} more")


#: `up --until-idle` gives up when what it waits for has not changed for this long.
IDLE_PATIENCE_S = 300
#: ... and says which unit keeps it waiting once it has for this long.
UNIT_NEWS_S = 10.0


def idle_reasons(ledger: Ledger, bootstrap: str, stations: Path,
                 sim_status_now: dict[str, Any] | None, sim_running: bool) -> list[str]:
    """What keeps the line from being idle (module docstring); empty when it is."""
    if sim_running:
        busy = busy_units(sim_status_now, [u["serial"] for u in held_now(ledger)])
        if busy:
            return busy
    return waiting_for(ledger, bootstrap, stations)


@dataclass(frozen=True)
class ConsolePlan:
    """The console `up` starts: where, why not, and the first admin it created."""

    url: str | None
    note: str = ""
    first_admin: Any = None  # console_cmds.FirstAdmin
    sock: socket.socket | None = None  # bound and listening: handed to the console child
    hint: str = ""  # how to sign in when `up` created no first admin and nobody can


def plan_console(settings: Settings, port: int | None) -> ConsolePlan:
    """Before anything starts: the first admin on an empty ledger (console_cmds.
    ensure_first_admin) and the console's port (`port`, else a free one: a busy 8080 does not
    stop the line)."""
    from .console_cmds import bind, console_config, ensure_first_admin, url_of
    from .extras import EXTRA_MODULES, missing_modules
    from .ledger_cmds import open_ledger

    if port is None:
        return ConsolePlan(None, "not started (--no-console)")
    missing = missing_modules(EXTRA_MODULES["console"])
    if missing:
        return ConsolePlan(None, f"not started: needs the [console] extra ({', '.join(missing)} "
                                 "not installed): pip install 'linetrace[console]'")
    ledger = open_ledger(settings)  # creates the schema on a fresh data dir
    try:
        admin = ensure_first_admin(settings, ledger)
        if admin is None:
            from linetrace.ledger.console_auth import users_with_password

            with ledger.reader() as s:
                nobody = users_with_password(s) == 0
        else:
            nobody = False
    finally:
        ledger.close()
    # The console's key enrolled here, before the worker writes: the log's first leaves are
    # the same on every fresh run of a seed (the console child finds it enrolled).
    console_config(settings)
    host = settings.console_host
    note = ""
    try:
        sock = bind(host, port)
    except ConfigurationError:
        if port == 0:
            raise
        note = f" (port {port} is in use: took a free one)"
        sock = bind(host, 0)
    hint = ("no user has a console password yet: an admin gives one with `linetrace users "
            "password USER`" if nobody else "")
    return ConsolePlan(url_of(host, int(sock.getsockname()[1])), note, admin, sock, hint)


def _wait_console(child: Child, url: str, timeout: float = 30.0) -> None:
    """Until the console answers on its port (or has died: the supervision loop says why)."""
    import socket
    from urllib.parse import urlsplit

    where = urlsplit(url)
    deadline = time.monotonic() + timeout
    while child.alive() and time.monotonic() < deadline:
        try:
            with socket.create_connection((where.hostname or "127.0.0.1", where.port or 80),
                                          timeout=1):
                return
        except OSError:
            time.sleep(0.1)


def run_up(settings: Settings, units: int, seed: int | None, until_idle: bool,
           speed: float, simulate_args: list[str] | None = None, *,
           conducted: bool = True, console: int | None = None) -> int:
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
    plan: ConsolePlan | None = None
    try:
        plan = plan_console(settings, console)
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
        web: Child | None = None
        if plan.sock is not None:
            fd = plan.sock.fileno()
            web = Child("console", base + ["console", "--fd", str(fd)], logs, env,
                        pass_fds=(fd,))
            children.append(web)
            plan.sock.close()  # the console holds it now
        # The worker's line clock advances on wall time as fast as the simulated line runs
        # (0, as fast as possible: only the events move it).
        worker = Child("worker", base + ["worker"], logs,
                       {**env, "LINETRACE_LINE_SPEED": str(speed)})
        children.append(worker)
        if seed is None:  # drawn here so it can be printed with the rest (CONTRACTS.md)
            seed = random.SystemRandom().randrange(1, 10**6)
        sim_args = base + ["simulate", "--units", str(units), "--speed", str(speed),
                           "--seed", str(seed), *(["--conducted"] if conducted else []),
                           *(simulate_args or [])]
        status_path = sim_status_file(settings)
        status_path.unlink(missing_ok=True)
        sim = Child("simulate", sim_args, logs, env)
        children.append(sim)
        print(f"linetrace is up (data dir {data})")
        print(f"  seed     {seed} (`--seed {seed}` reproduces this run in another data dir)")
        print(f"  line     {'conducted by linetrace' if conducted else 'unconducted (the simulator routes failed units itself)'}")
        print(f"  broker   kafka://{bootstrap}")
        print(f"  ledger   {settings.db if not settings.db.startswith('sqlite') else settings.db[10:]}")
        names = "broker,worker,simulate" + (",console" if web is not None else "")
        print(f"  logs     {logs}/{{{names}}}.log")
        print(f"  look     linetrace units --data-dir {data}   |   linetrace trace SERIAL --data-dir {data}")
        print(f"  alerts   linetrace alerts --data-dir {data}   |   linetrace alerts kpi --data-dir {data}")
        if web is not None and plan.url is not None:
            _wait_console(web, plan.url)
        print(f"  console  {plan.url or ''}{plan.note}".rstrip())
        if plan.hint:
            print(f"  sign in  {plan.hint}")
        if plan.first_admin is not None:
            fa = plan.first_admin
            print(f"  sign in  as {fa.user} with the one-time password {fa.password} (you will "
                  "choose your own); shown this once")
            print(f"  key      {fa.user}'s signing key: {fa.key_file} (LINETRACE_USER_KEY for "
                  "`linetrace users`, `hold`, `ack`...; keep it, mode 0600)")
        print("  stop     Ctrl-C" if not until_idle else "  running until the line is idle...",
              flush=True)
        ledger = Ledger(settings.db)
        stations = data / "stations"  # the simulator's spools (cli/line_cmds.py)
        progress = Progress(ledger)
        deadline = time.monotonic() + IDLE_PATIENCE_S
        stable = 0
        told: set[str] = set()
        seen: dict[str, float] = {}
        reasons: list[str] = []
        while True:
            for c in children:
                if c is not sim and not c.alive():
                    print(f"linetrace: {c.failure()}", file=sys.stderr)
                    return 1
            running = sim.alive()
            if not running and sim.proc.returncode != 0:
                print(f"linetrace: {sim.failure()}", file=sys.stderr)
                return 1
            status = sim_status(status_path, sim.proc.pid) if running else None
            looked = progress.tick()
            if not until_idle:
                if not running:
                    break
                if looked and status is not None and status.get("idle") \
                        and not progress.caught_up and drained(ledger, bootstrap, stations):
                    progress.worker_caught_up()
                time.sleep(0.2)
                continue
            if running and (status is None or not status.get("idle")):
                stable = 0  # the simulator is sending: nothing to ask the ledger yet
                deadline = time.monotonic() + IDLE_PATIENCE_S
                time.sleep(0.2)
                continue
            now = idle_reasons(ledger, bootstrap, stations, status, running)
            if now != reasons:
                deadline = time.monotonic() + IDLE_PATIENCE_S
            reasons = now
            stable = 0 if reasons else stable + 1
            if stable >= 2:
                break
            if time.monotonic() > deadline:
                print(f"linetrace: the line is not idle after {IDLE_PATIENCE_S} s without "
                      "change: " + "; ".join(reasons), file=sys.stderr)
                return 1
            news = {" ".join(r.split()[:2]): r for r in reasons
                    if r.startswith("station ") or r.startswith("unit ")}
            for who in news.keys() - seen.keys():
                seen[who] = time.monotonic()
            for who in list(seen):
                if who not in news:
                    del seen[who]
            # A station holding work is news; a unit only once it waits a while (the worker
            # routes a failed unit within moments).
            for who in sorted(news.keys() - told):
                if who.startswith("station ") or time.monotonic() - seen[who] > UNIT_NEWS_S:
                    print(f"  waiting: {news[who]}", flush=True)
                    told.add(who)
            told &= set(news)
            time.sleep(0.5)
        if not until_idle:
            print("simulation finished; broker, worker and console keep running (Ctrl-C stops)"
                  if web is not None else
                  "simulation finished; broker and worker keep running (Ctrl-C stops)",
                  flush=True)
            while all(c.alive() for c in children if c is not sim):
                if progress.tick() and not progress.caught_up and drained(ledger, bootstrap,
                                                                          stations):
                    progress.worker_caught_up()
                time.sleep(0.5)
            return 1
        progress.worker_caught_up()
        s = summary(ledger)
        held = held_now(ledger)
        alerts = alerts_now(ledger)
        ledger.close()
        states = ", ".join(f"{n} {k}" for k, n in sorted(s["states"].items()))  # type: ignore[attr-defined]
        print(f"idle: {s['servers']} servers ({states}); {s['events_accepted']} events accepted, "
              f"{s['dead_lettered']} dead-lettered, {s['quarantined']} quarantined")
        print_held(held)
        print_alerts(alerts, data)
        return 0
    except Interrupted:
        print("\nstopping broker, worker, simulator and console...", file=sys.stderr)
        return 0
    finally:
        if plan is not None and plan.sock is not None:
            plan.sock.close()
        for c in reversed(children):
            c.stop()
        for s_, h in old.items():
            signal.signal(s_, h)
