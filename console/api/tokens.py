"""API tokens for machines and scripts: made for a user, shown once, revocable.

Anyone signed in may list, make and revoke their own; an admin may make one for a `viewer`
user (a machine: the stations' interlock calls, ERP) and revoke any. Nobody makes a token that
acts as another person who may act: what a token does is attested as its user's statement.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import (
    AuthError, Principal, create_token, list_tokens, revoke_token,
)

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/tokens", tags=["tokens"])


class NewToken(BaseModel):
    name: Annotated[str, Field(min_length=1, max_length=128,
                               description="what uses it, e.g. `ict-31 interlock`")]
    user: Annotated[str | None, Field(max_length=64, description="whom it acts as (admins "
                                      "only; default: you)")] = None


@router.get("", responses=ERROR_RESPONSES)
async def get_tokens(who: Principal = Depends(require(*VIEW)),
                     state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Your tokens (an admin: everyone's), never their secrets."""
    def read() -> list[dict[str, Any]]:
        with state.ledger.reader() as s:
            return list_tokens(s, None if who.role == "admin" else who.user)

    return await run_in_threadpool(read)


@router.post("", status_code=201, responses=ERROR_RESPONSES)
async def post_token(body: NewToken, who: Principal = Depends(require(*VIEW)),
                     state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """A new token; `token` is in this answer only: keep it now."""
    user = body.user or who.user
    if user != who.user and who.role != "admin":
        raise ApiError(403, "role.forbidden", "only an admin makes tokens for someone else",
                       "body.user")
    try:
        secret, doc = await run_in_threadpool(create_token, state.ledger, user, body.name,
                                              by=who.user)
    except AuthError as e:
        status = {"token.invalid": 422, "token.forbidden": 403}.get(e.code, 404)
        raise ApiError(status, e.code, e.message,
                       "body.name" if e.code == "token.invalid" else "body.user") from None
    return {**doc, "token": secret}


@router.delete("/{token_id}", responses=ERROR_RESPONSES)
async def delete_token(token_id: str, who: Principal = Depends(require(*VIEW)),
                       state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Revoke a token: it stops working at once."""
    try:
        return await run_in_threadpool(revoke_token, state.ledger, token_id, by=who.user,
                                       admin=who.role == "admin")
    except AuthError as e:
        raise ApiError(404, e.code, e.message) from None
