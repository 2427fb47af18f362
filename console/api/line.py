"""`GET /api/v1/line`: the line status document, the body of `linetrace line --json`
(`ledger/line_status.py` documents it): stations with their state, WIP per route step,
throughput, first-pass yield, holds in force and alert counts."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal
from linetrace.ledger.line_status import line_status

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/line", tags=["line"])


@router.get("", responses=ERROR_RESPONSES)
async def get_line(_: Principal = Depends(require(*VIEW)),
                   state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """The line at a glance (any role): `{clock, stations, wip, wip_total, throughput,
    first_pass_yield, holds, alerts}`."""
    def read() -> dict[str, Any]:
        with state.reader() as s:
            return line_status(s, state.config.routes)

    return await run_in_threadpool(read)
