"""The live alert stream (server-sent events) over a real HTTP server: the snapshot on connect,
an alert raised by the real alert engine in another thread arrives within a second, actions
and floods are sent, `Last-Event-ID` resumes, pings keep an idle stream open."""

from __future__ import annotations

import json
import queue
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from linetrace.console.api import stream
from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_conditions
from linetrace.ledger.db import Ledger

from .conftest import Console, make_console, password_of
from .live import serve

NOW = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=30)


@dataclass
class Sse:
    event: str | None
    data: Any
    id: str | None
    at: float  # time.monotonic() when it arrived


def raise_alert(ledger: Ledger, condition: str, subject: str, *, active: bool = True,
                seconds: int = 0, cause: str = "e") -> str:
    with ledger.transaction() as s:
        apply_conditions(s, [Condition(condition, subject, active, NOW + timedelta(
            seconds=seconds), cause, details={"start": "x", "peak": 12})])
    return alert_id(condition, subject)


def signed_in(base: str, user: str) -> httpx.Client:
    c = httpx.Client(base_url=base, timeout=10)
    r = c.post("/api/v1/session", json={"user": user, "password": password_of(user)})
    assert r.status_code == 200, r.text
    c.headers["X-CSRF-Token"] = r.json()["csrf"]
    return c


@contextmanager
def listen(client: httpx.Client, headers: dict[str, str] | None = None
           ) -> Iterator[queue.Queue[Sse]]:
    """Read the stream (plain HTTP/1.1 on a socket of its own, so the test can hang up at any
    moment, as a closed browser tab does) in a thread; yields the queue its events (and pings)
    arrive on. `client` gives the base URL and the session cookie."""
    got: queue.Queue[Sse] = queue.Queue()
    stop = threading.Event()
    url = client.base_url
    sock = socket.create_connection((url.host, url.port or 80), timeout=10)
    sent = {"Host": f"{url.host}:{url.port}", "Accept": "text/event-stream",
            **({"Cookie": "; ".join(f"{k}={v}" for k, v in client.cookies.items())}
               if client.cookies else {}), **(headers or {})}
    sock.sendall(("GET /api/v1/alerts/stream HTTP/1.1\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in sent.items()) + "\r\n").encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        more = sock.recv(65536)
        assert more, "the server closed the stream before answering"
        buf += more
    head, _, buf = buf.partition(b"\r\n\r\n")
    status, *header_lines = head.decode().split("\r\n")
    answer = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    assert status.split()[1] == "200", (status, buf)
    assert answer["content-type"].startswith("text/event-stream")
    assert answer.get("transfer-encoding") == "chunked", answer
    sock.settimeout(0.2)

    def run() -> None:
        body, data = b"", buf
        fields: dict[str, str] = {}
        while not stop.is_set():
            while True:  # de-chunk what arrived
                size_line, sep, rest = data.partition(b"\r\n")
                if not sep:
                    break
                size = int(size_line.split(b";")[0], 16)
                if size == 0:
                    got.put(Sse("end", {}, None, time.monotonic()))  # the server ended it
                    return
                if len(rest) < size + 2:
                    break
                body += rest[:size]
                data = rest[size + 2:]
            while b"\n" in body:
                raw, _, body = body.partition(b"\n")
                line = raw.decode()
                if line.startswith(":"):
                    got.put(Sse("ping", line, None, time.monotonic()))
                elif line == "":
                    if "data" in fields:
                        got.put(Sse(fields.get("event"), json.loads(fields["data"]),
                                    fields.get("id"), time.monotonic()))
                    fields = {}
                else:
                    name, _, value = line.partition(":")
                    fields[name] = value.removeprefix(" ")
            try:
                more = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            if not more:
                return
            data += more

    t = threading.Thread(target=run, daemon=True)
    t.start()
    try:
        yield got
    finally:
        stop.set()
        t.join(timeout=5)
        sock.close()
        client.close()


def next_event(got: queue.Queue[Sse], want: Any, timeout: float = 10.0) -> Sse:
    """The first event (pings skipped) for which `want(event)` holds."""
    deadline = time.monotonic() + timeout
    seen = []
    while (left := deadline - time.monotonic()) > 0:
        try:
            e = got.get(timeout=left)
        except queue.Empty:
            break
        if e.event != "ping" and want(e):
            return e
        seen.append((e.event, e.data if e.event == "ping" else e.data.get("id")))
    raise AssertionError(f"no such event within {timeout} s; saw {seen}")


@pytest.fixture
def any_console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """The console on SQLite and on PostgreSQL."""
    c = make_console(db_url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


def test_the_board_stream(any_console: Console) -> None:
    console = any_console
    first = raise_alert(console.ledger, "flow.station_down", "ict-1")
    with serve(console.app) as base:
        sam = signed_in(base, "sam")
        with listen(signed_in(base, "vic")) as got:
            snap = next_event(got, lambda e: e.event == "alert")
            assert snap.data["id"] == first and snap.data["state"] == "unacknowledged"
            assert snap.data["condition"] == "flow.station_down" and snap.id is not None

            # an alert raised by the engine in another thread, while the stream is open
            committed: list[float] = []

            def raise_later() -> None:
                time.sleep(0.3)
                raise_alert(console.ledger, "burnin.ecc_sbe", "SRV-1/gpu2", seconds=5)
                committed.append(time.monotonic())

            threading.Thread(target=raise_later).start()
            second = alert_id("burnin.ecc_sbe", "SRV-1/gpu2")
            arrived = next_event(got, lambda e: e.data["id"] == second)
            assert committed, "the alert arrived before it was committed"
            assert arrived.at - committed[0] < 1.0, arrived.at - committed[0]
            assert arrived.data["state"] == "unacknowledged" and arrived.data["priority"]
            assert int(arrived.id or 0) > int(snap.id or 0)

            # an acknowledgement in the console is sent too
            r = sam.post(f"/api/v1/alerts/{first}/ack", json={"comment": "seen"})
            assert r.status_code == 200, r.text
            acked = next_event(got, lambda e: e.data["id"] == first)
            assert acked.data["state"] == "acknowledged"

            # the flood banner: the flood alert raised (as the worker's tick does) and cleared
            raise_alert(console.ledger, "alerts.flood", "line", seconds=10, cause="f1")
            flood = next_event(got, lambda e: e.event == "flood")
            assert flood.data["active"] is True and flood.data["peak"] == 12
            raise_alert(console.ledger, "alerts.flood", "line", active=False, seconds=20,
                        cause="f2")
            over = next_event(got, lambda e: e.event == "flood")
            assert over.data["active"] is False
            resume_from = over.id

        # resuming: only what changed after the last event seen, not the snapshot again
        third = raise_alert(console.ledger, "flow.station_down", "aoi-2", seconds=30)
        with listen(signed_in(base, "vic"), {"Last-Event-ID": str(resume_from)}) as got:
            e = next_event(got, lambda e: e.event == "alert")
            assert e.data["id"] == third, e.data
            time.sleep(0.5)
            # (the same alert may come twice: a look racing the catch-up; never the others)
            rest = [x.data["id"] for x in list(got.queue) if x.event == "alert"]
            assert set(rest) <= {third}, rest


def test_stream_needs_credentials_and_pings(console: Console,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stream, "PING_EVERY", 0.3)
    with serve(console.app) as base:
        with httpx.Client(base_url=base, timeout=5) as anon:
            r = anon.get("/api/v1/alerts/stream")
            assert r.status_code == 401 and r.json()["code"] == "auth.required"
        token = console.token("vic")
        client = httpx.Client(base_url=base, timeout=10)
        looks = [0]
        look = stream.AlertFeed._look

        def counted(feed: stream.AlertFeed) -> Any:
            looks[0] += 1
            return look(feed)

        monkeypatch.setattr(stream.AlertFeed, "_look", counted)
        with listen(client, {"Authorization": f"Bearer {token}"}) as got:
            e = got.get(timeout=5)
            assert e.event == "ping" and e.data == ": ping"
            assert looks[0] > 0
        # the client went away: the stream stops looking at the ledger
        time.sleep(2.5)
        before = looks[0]
        time.sleep(1.0)
        assert looks[0] == before, "the stream kept polling after its client disconnected"


def test_many_boards_share_one_look_at_the_ledger(console: Console) -> None:
    with serve(console.app) as base:
        with listen(signed_in(base, "vic")) as one, listen(signed_in(base, "sam")) as two:
            feed = console.app.state.alert_feed
            assert len(feed.subscribers) == 2
            aid = raise_alert(console.ledger, "flow.station_down", "ict-7")
            for got in (one, two):
                assert next_event(got, lambda e: e.data["id"] == aid).data["state"] == \
                    "unacknowledged"
        deadline = time.monotonic() + 10
        while feed.subscribers and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not feed.subscribers, "closed streams stayed subscribed"


def test_a_stream_ends_once_its_credentials_do(console: Console,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A board left open does not outlive a revoked token or a signed-out session."""
    monkeypatch.setattr(stream, "RECHECK_EVERY", 0.3)
    with serve(console.app) as base:
        token = console.token("vic")
        with listen(httpx.Client(base_url=base, timeout=10),
                    {"Authorization": f"Bearer {token}"}) as got:
            time.sleep(1.0)
            assert all(e.event != "end" for e in list(got.queue)), "ended while valid"
            token_id = token.split("_")[1]
            assert console.as_("ada").delete(f"/api/v1/tokens/{token_id}").status_code == 200
            next_event(got, lambda e: e.event == "end", timeout=5)
        board = signed_in(base, "sam")
        with listen(board) as got:
            time.sleep(0.6)
            assert all(e.event != "end" for e in list(got.queue)), "ended while valid"
            with httpx.Client(base_url=base, cookies=board.cookies, timeout=5) as same:
                csrf = same.get("/api/v1/session").json()["csrf"]
                assert same.delete("/api/v1/session",
                                   headers={"X-CSRF-Token": csrf}).status_code == 204
            next_event(got, lambda e: e.event == "end", timeout=5)
