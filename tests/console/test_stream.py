"""The live alert stream (server-sent events) over a real HTTP server: the snapshot on connect,
an alert raised by the real alert engine in another thread arrives within a second, actions
and floods are sent, `Last-Event-ID` resumes, pings keep an idle stream open."""

from __future__ import annotations

import json
import queue
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from linetrace.console.api import stream
from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_conditions
from linetrace.ledger.db import Ledger

from .conftest import Console, password_of
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
    """Read the stream in a thread; yields the queue its events (and pings) arrive on."""
    got: queue.Queue[Sse] = queue.Queue()
    stop = threading.Event()
    opened = threading.Event()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with client.stream("GET", "/api/v1/alerts/stream", headers=headers or {},
                               timeout=httpx.Timeout(10, read=30)) as r:
                assert r.status_code == 200, r.read()
                assert r.headers["content-type"].startswith("text/event-stream")
                opened.set()
                fields: dict[str, str] = {}
                for line in r.iter_lines():
                    if stop.is_set():
                        return
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
        except BaseException as e:  # noqa: BLE001 - reported to the test
            if not stop.is_set():
                failure.append(e)
                opened.set()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    assert opened.wait(15), "the stream did not open"
    assert not failure, failure
    try:
        yield got
    finally:
        stop.set()
        client.close()
        t.join(timeout=1)  # a read blocked on the socket ends when the server stops


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


def test_the_board_stream(console: Console) -> None:
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
            rest = [x for x in list(got.queue) if x.event == "alert"]
            assert rest == [], [x.data["id"] for x in rest]


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
        changes = stream._changes

        def counted(*args: Any) -> Any:
            looks[0] += 1
            return changes(*args)

        monkeypatch.setattr(stream, "_changes", counted)
        with listen(client, {"Authorization": f"Bearer {token}"}) as got:
            e = got.get(timeout=5)
            assert e.event == "ping" and e.data == ": ping"
            assert looks[0] > 0
        # the client went away: the stream stops looking at the ledger
        time.sleep(1.0)
        before = looks[0]
        time.sleep(1.0)
        assert looks[0] == before, "the stream kept polling after its client disconnected"
