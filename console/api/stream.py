"""`GET /api/v1/alerts/stream`: the live alert board's server-sent events.

On connect: each alert not in `normal` (`event: alert`, data = its `linetrace alerts --json`
document) and, while one goes on, the flood (`event: flood`). Then the stream looks at the
ledger every `sse_poll` seconds (a read-only session: one indexed query for `alert_history`
rows newer than the last one sent) and sends each alert that changed, newest change last,
with `id:` = its latest history row's id, and `event: flood` when the flood alert
(`alerts.flood` on `line`, raised and cleared by the worker's tick) starts or ends:
`{"active", "alert", "start", "peak", "message"}`. A `: ping` comment every 15 s keeps
proxies from closing an idle stream.

A client that reconnects sends `Last-Event-ID` (browsers' EventSource does so by itself): the
stream then starts with the alerts changed after that history row instead of the snapshot.
Authenticated like every API call: EventSource sends the session cookie.

One look serves every client: an `AlertFeed` per app polls the ledger while anyone listens and
hands each look's events to every open stream (50 boards cost one query a look, not 50). A
look re-reads the history rows of the last `LOOKBACK_S` seconds too and sends the ones not
seen yet, so a row whose transaction committed after a later-numbered one (PostgreSQL: the
worker and a person acting at once) is not skipped.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from sqlalchemy import func, select
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.alerts.conditions import alert_id
from linetrace.ledger.alerts.kpi import FLOOD_CONDITION
from linetrace.ledger.alerts.models import AlertHistory
from linetrace.ledger.alerts.views import AlertView, get_alert, list_alerts
from linetrace.ledger.console_auth import Principal

from ..auth import VIEW, recheck, require
from ..errors import ERROR_RESPONSES
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
log = logging.getLogger(__name__)

#: The flood alert the worker's tick raises and clears (`streams.detect.alert_tick`).
FLOOD_ALERT = alert_id(FLOOD_CONDITION, "line")
PING_EVERY = 15.0
RECHECK_EVERY = 5.0  # seconds between looks at whether the credentials still hold
#: Most history rows one look reads (a burst larger than this is sent over several looks).
BATCH = 500


def sse(event: str, data: Any, event_id: int | None = None) -> str:
    """One server-sent event (data on one line: JSON has no raw newlines)."""
    head = f"id: {event_id}\n" if event_id is not None else ""
    return f"{head}event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n"


def flood_doc(view: AlertView) -> dict[str, Any]:
    return {"active": view.active, "alert": view.id, "state": view.state,
            "start": view.details.get("start"), "end": view.details.get("end"),
            "peak": view.details.get("peak"), "message": view.message}


Chunk = tuple[int, str]  # (history id, the event's text)
#: One look's events: (the look's number, its events); None ends a stream that fell behind.
Batch = tuple[int, list[Chunk]] | None


def _snapshot(state: ConsoleState) -> tuple[int, list[str]]:
    """The latest history id, and the events of every alert not normal (the flood first)."""
    with state.reader() as s:
        last = s.scalar(select(func.max(AlertHistory.id))) or 0
        views = list_alerts(s)
    out = [sse("flood", flood_doc(v), last) for v in views if v.id == FLOOD_ALERT and v.active]
    out += [sse("alert", v.to_json(), last) for v in views]  # the most urgent first
    return last, out


def _events_for(s: Any, rows: list[tuple[int, str]]) -> list[Chunk]:
    """Each alert of these history rows once, at its latest row, in the order of those rows."""
    latest: dict[str, int] = {}
    for row_id, aid in rows:
        latest.pop(aid, None)
        latest[aid] = int(row_id)
    out: list[Chunk] = []
    for aid, row_id in latest.items():
        view = get_alert(s, aid)
        if aid == FLOOD_ALERT:
            out.append((row_id, sse("flood", flood_doc(view), row_id)))
        out.append((row_id, sse("alert", view.to_json(), row_id)))
    return out


def _rows_after(s: Any, after: int) -> list[tuple[int, str]]:
    return [(int(i), str(a)) for i, a in s.execute(
        select(AlertHistory.id, AlertHistory.alert_id).where(AlertHistory.id > after)
        .order_by(AlertHistory.id).limit(BATCH))]


def _changes(state: ConsoleState, after: int) -> tuple[int, list[Chunk]]:
    """Events for the alerts whose history grew after row `after` (at most BATCH rows); the
    new cursor."""
    with state.reader() as s:
        rows = _rows_after(s, after)
        return (rows[-1][0] if rows else after), _events_for(s, rows)


class AlertFeed:
    """The app's one look at the ledger for every open stream (module docstring)."""

    LOOKBACK_S = 5.0
    QUEUE = 1000  # batches a slow client may fall behind before its stream is ended

    def __init__(self, state: ConsoleState) -> None:
        self.state = state
        self.subscribers: set[asyncio.Queue[Batch]] = set()
        self.looks = 0  # looks started so far
        self._task: asyncio.Task[None] | None = None
        self._seen: dict[int, float] = {}  # history ids sent in the last LOOKBACK_S
        self._marks: list[tuple[float, int]] = []  # (when, cursor) of recent looks
        self.cursor = 0
        self.loop = asyncio.get_running_loop()
        self._starting = asyncio.Lock()

    async def subscribe(self) -> asyncio.Queue[Batch]:
        """A queue of every look's events from now on (the feed starts if it was idle)."""
        q: asyncio.Queue[Batch] = asyncio.Queue(self.QUEUE)
        async with self._starting:
            if self._task is None or self._task.done():
                self.cursor = await run_in_threadpool(self._latest)
                self._seen.clear()
                self._marks = [(time.monotonic(), self.cursor)]
                self.subscribers.add(q)
                self._task = asyncio.create_task(self._run(), name="console-alert-feed")
            else:
                self.subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue[Batch]) -> None:
        self.subscribers.discard(q)

    def _latest(self) -> int:
        with self.state.reader() as s:
            return int(s.scalar(select(func.max(AlertHistory.id))) or 0)

    def _look(self) -> tuple[int, list[Chunk]]:
        self.looks += 1
        look = self.looks
        now = time.monotonic()
        self._marks = [m for m in self._marks if now - m[0] <= self.LOOKBACK_S]
        floor = min((c for _, c in self._marks), default=self.cursor)
        with self.state.reader() as s:
            rows = [r for r in _rows_after(s, floor) if r[0] not in self._seen]
            chunks = _events_for(s, rows)
        for row_id, _ in rows:
            self._seen[row_id] = now
            self.cursor = max(self.cursor, row_id)
        self._seen = {i: t for i, t in self._seen.items() if now - t <= 2 * self.LOOKBACK_S}
        self._marks.append((now, self.cursor))
        return look, chunks

    async def _run(self) -> None:
        poll = max(0.02, float(self.state.config.sse_poll))
        while self.subscribers:
            try:
                look, chunks = await run_in_threadpool(self._look)
            except Exception:  # noqa: BLE001 - a database hiccup: look again later
                log.exception("the alert stream could not read the ledger; trying again")
                await asyncio.sleep(max(poll, 1.0))
                continue
            if chunks:
                for q in list(self.subscribers):
                    try:
                        q.put_nowait((look, chunks))
                    except asyncio.QueueFull:  # too slow a reader: end its stream
                        self.subscribers.discard(q)
                        q.get_nowait()
                        q.put_nowait(None)
            else:
                await asyncio.sleep(poll)


def feed_of(request: Request, state: ConsoleState) -> AlertFeed:
    feed: AlertFeed | None = getattr(request.app.state, "alert_feed", None)
    if feed is None or feed.state is not state or feed.loop is not asyncio.get_running_loop():
        feed = request.app.state.alert_feed = AlertFeed(state)
    return feed


async def _events(request: Request, state: ConsoleState, resume: int | None
                  ) -> AsyncIterator[str]:
    feed = feed_of(request, state)
    q = await feed.subscribe()  # before the snapshot: nothing between the two is lost
    try:
        if resume is None:
            cursor, first = await run_in_threadpool(_snapshot, state)
            yield "retry: 2000\n\n"
            for text in first:
                yield text
        else:
            cursor = resume
            yield "retry: 2000\n\n"
            while True:
                cursor, chunks = await run_in_threadpool(_changes, state, cursor)
                for _, text in chunks:
                    yield text
                if not chunks:
                    break
        # A look started from here on read the ledger after the snapshot (or catch-up): all
        # of its events are news; an earlier look's only past the cursor.
        begun = feed.looks
        last_sent = last_check = time.monotonic()
        while not await request.is_disconnected():
            if time.monotonic() - last_check >= RECHECK_EVERY:
                last_check = time.monotonic()
                if await recheck(request, state) is None:
                    return  # signed out, session expired, user removed or token revoked
            try:
                item = await asyncio.wait_for(q.get(), timeout=min(1.0, PING_EVERY))
            except TimeoutError:
                if time.monotonic() - last_sent >= PING_EVERY:
                    yield ": ping\n\n"
                    last_sent = time.monotonic()
                continue
            if item is None:
                return  # fell too far behind: the client reconnects with Last-Event-ID
            look, batch = item
            for row_id, text in batch:
                if look > begun or row_id > cursor:
                    yield text
                    last_sent = time.monotonic()
    finally:
        feed.unsubscribe(q)


@router.get("/stream", response_class=StreamingResponse, responses={
    **ERROR_RESPONSES, 200: {"description": "server-sent events: `event: alert` (data: one "
                             "alert's `alerts --json` document), `event: flood`, `: ping`",
                             "content": {"text/event-stream": {}}}})
async def alert_stream(
        request: Request,
        last_event_id: Annotated[str | None, Header(
            alias="Last-Event-ID", max_length=24,
            description="resume after this event id (a history row id)")] = None,
        _: Principal = Depends(require(*VIEW)),
        state: ConsoleState = Depends(get_state)) -> StreamingResponse:
    """The live alerts as server-sent events (see the module docstring)."""
    text = (last_event_id or "").strip()
    resume = int(text) if text.isascii() and text.isdigit() else None
    return StreamingResponse(_events(request, state, resume), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
