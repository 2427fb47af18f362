"""`GET /api/v1/audit`: every state-changing request the console answered, newest first."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal, list_audit

from ..auth import ACT, require
from ..errors import ERROR_RESPONSES
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/audit", tags=["audit"])


@router.get("", responses=ERROR_RESPONSES)
async def get_audit(limit: Annotated[int, Query(ge=1, le=1000)] = 200,
                    user: Annotated[str | None, Query(max_length=64)] = None,
                    before: Annotated[int | None, Query(ge=1)] = None,
                    _: Principal = Depends(require(*ACT)),
                    state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Who did what and when: `{id, time, user, via, method, path, status, client, detail}`
    (`detail`: the answer's code or message, the alert or hold it concerned)."""
    def read() -> list[dict[str, Any]]:
        with state.ledger.reader() as s:
            return list_audit(s, limit=limit, user=user, before=before)

    return await run_in_threadpool(read)
