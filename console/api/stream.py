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
"""

from __future__ import annotations

import asyncio
import json
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

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

#: The flood alert the worker's tick raises and clears (`streams.detect.alert_tick`).
FLOOD_ALERT = alert_id(FLOOD_CONDITION, "line")
PING_EVERY = 15.0
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


def _snapshot(state: ConsoleState) -> tuple[int, list[str]]:
    """The latest history id, and the events of every alert not normal (the flood first)."""
    with state.reader() as s:
        last = s.scalar(select(func.max(AlertHistory.id))) or 0
        views = list_alerts(s)
    out = [sse("flood", flood_doc(v), last) for v in views if v.id == FLOOD_ALERT and v.active]
    out += [sse("alert", v.to_json(), last) for v in views]  # the most urgent first
    return last, out


def _changes(state: ConsoleState, after: int) -> tuple[int, list[str]]:
    """Events for the alerts whose history grew after row `after`: each alert once, at its
    latest row, in the order of those rows; the new cursor."""
    with state.reader() as s:
        rows = s.execute(select(AlertHistory.id, AlertHistory.alert_id)
                         .where(AlertHistory.id > after).order_by(AlertHistory.id)
                         .limit(BATCH)).all()
        if not rows:
            return after, []
        latest: dict[str, int] = {}
        for row_id, aid in rows:
            latest.pop(aid, None)
            latest[aid] = int(row_id)
        out: list[str] = []
        for aid, row_id in latest.items():
            view = get_alert(s, aid)
            if aid == FLOOD_ALERT:
                out.append(sse("flood", flood_doc(view), row_id))
            out.append(sse("alert", view.to_json(), row_id))
        return int(rows[-1][0]), out


async def _events(request: Request, state: ConsoleState, resume: int | None
                  ) -> AsyncIterator[str]:
    poll = max(0.02, float(state.config.sse_poll))
    if resume is None:
        cursor, first = await run_in_threadpool(_snapshot, state)
    else:
        cursor, first = await run_in_threadpool(_changes, state, resume)
    yield "retry: 2000\n\n"
    for chunk in first:
        yield chunk
    last_sent = time.monotonic()
    while not await request.is_disconnected():
        cursor, chunks = await run_in_threadpool(_changes, state, cursor)
        for chunk in chunks:
            yield chunk
        now = time.monotonic()
        if chunks:
            last_sent = now
        elif now - last_sent >= PING_EVERY:
            yield ": ping\n\n"
            last_sent = now
        if not chunks:
            await asyncio.sleep(poll)


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
    resume = int(last_event_id) if last_event_id and last_event_id.strip().isdigit() else None
    return StreamingResponse(_events(request, state, resume), media_type="text/event-stream",
                             headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
