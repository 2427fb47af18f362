"""The real line `bench_recovery` measures: broker, workers, a station, a PostgreSQL proxy.

Every linetrace process runs from `Tree.repo` (this checkout, or another worktree for the
baseline: a `linetrace` symlink to it goes first on PYTHONPATH, ahead of the editable
install). Positions are read straight from PostgreSQL (`ingest_positions`), never through the
proxy the workers use in the database scenario.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parents[1]


class Tree:
    """Which linetrace runs: `repo` None is this checkout (the editable install)."""

    def __init__(self, repo: Path | None) -> None:
        self.repo = repo
        self.pythonpath: str | None = None
        if repo is not None:
            shim = Path(tempfile.mkdtemp(prefix="lt-tree-"))
            (shim / "linetrace").symlink_to(repo.resolve())
            self.pythonpath = str(shim)

    def env(self, **extra: str) -> dict[str, str]:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
        if self.pythonpath:
            env["PYTHONPATH"] = self.pythonpath + os.pathsep + env.get("PYTHONPATH", "")
        return env

    def commit(self) -> str:
        repo = self.repo or HERE
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                             capture_output=True, text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--",
                                "streams", "stations", "cli", "ledger"],
                               capture_output=True, text=True).stdout.strip()
        return out + (" + uncommitted changes" if dirty else "")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.log = log
        self.proc = subprocess.Popen(argv, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     env=env, cwd=HERE, start_new_session=True)

    def signal(self, sig: int) -> None:
        try:
            os.killpg(self.proc.pid, sig)
        except ProcessLookupError:
            pass

    def kill(self) -> None:
        self.signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def lines(self) -> list[str]:
        return self.log.read_text(errors="replace").splitlines()


class Line:
    def __init__(self, tree: Tree, data: Path, db_url: str) -> None:
        self.tree, self.data, self.db_url = tree, data, db_url
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.procs: list[Proc] = []

    def cli(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "linetrace.cli.main", *args, "--data-dir", str(self.data)]

    def env(self, db: str | None = None) -> dict[str, str]:
        return self.tree.env(LINETRACE_DB=db or self.db_url)

    def start(self, name: str, argv: list[str], db: str | None = None) -> Proc:
        p = Proc(argv, self.data / f"{name}.log", self.env(db))
        self.procs.append(p)
        return p

    def broker(self) -> Proc:
        url = self.data / "broker.url"
        url.unlink(missing_ok=True)
        p = self.start("broker", self.cli("broker", "--port", str(self.port)))
        deadline = time.monotonic() + 60
        while not url.exists():
            if p.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"broker did not start: {p.log}")
            time.sleep(0.05)
        return p

    def enroll(self, station: str) -> Path:
        key = self.data / f"{station}.key"
        for args in (("stations", "keygen", "--out", str(key)),
                     ("stations", "enroll", station, "--type", "ict", "--public-key",
                      f"{key}.pub")):
            r = subprocess.run(self.cli(*args), capture_output=True, text=True, cwd=HERE,
                               env=self.env())
            if r.returncode != 0:
                raise RuntimeError(f"{' '.join(args)}: {r.stdout}{r.stderr}")
        return key

    def worker(self, name: str, db: str | None = None) -> Proc:
        return self.start(name, self.cli("worker"), db)

    def station(self, station: str, key: Path, rate: float) -> Proc:
        return self.start(station, [sys.executable, "-m", "bench.bench_recovery", "station",
                                    "--bootstrap", self.bootstrap, "--station", station,
                                    "--key", str(key), "--rate", str(rate),
                                    "--state", str(self.data / "stations" / station)])

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()


# --- probes ------------------------------------------------------------------------------

def positions(conn: Any, topic: str) -> dict[int, int]:
    """The ledger's next offset per partition of `topic` (a psycopg connection)."""
    rows = conn.execute("SELECT partition, next_offset FROM ingest_positions WHERE topic = %s",
                        (topic,)).fetchall()
    return {int(p): int(o) for p, o in rows}


class PgProxy:
    """A TCP proxy to PostgreSQL that can go away (connections cut, port refusing) and return."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        self.server: asyncio.Server | None = None
        self.writers: set[asyncio.StreamWriter] = set()
        self.up()

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(30)

    async def _pipe(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            while data := await r.read(65536):
                w.write(data)
                await w.drain()
        except (OSError, asyncio.CancelledError):
            pass
        finally:
            w.close()

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        try:
            ur, uw = await asyncio.open_connection(*self.target)
        except OSError:
            w.close()
            return
        self.writers |= {w, uw}
        await asyncio.gather(self._pipe(r, uw), self._pipe(ur, w))
        self.writers -= {w, uw}

    def up(self) -> None:
        async def start() -> asyncio.Server:
            return await asyncio.start_server(self._client, "127.0.0.1", self.port,
                                              reuse_address=True)
        self.server = self._run(start())

    def down(self) -> None:
        async def stop() -> None:
            if self.server is not None:
                self.server.close()
                self.server = None
            for w in list(self.writers):
                w.transport.abort()
            self.writers.clear()
        self._run(stop())


LEVEL = re.compile(r"^\[?\d{4}-\d\d-\d\d [\d:,.]+\]? (?:\[\d+\] )?\[?([A-Z]+)\]? ")


def loud_records(lines: list[str], start: int) -> int:
    """WARNING-or-worse log records beginning at or after line `start` (both log formats)."""
    n = 0
    for ln in lines[start:]:
        m = LEVEL.match(ln)
        if m and m.group(1) in ("WARNING", "WARN", "ERROR", "CRITICAL"):
            n += 1
    return n
