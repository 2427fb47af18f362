"""Sign-in and out, the current session, and the user's own password change."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import (
    SESSION_MAX, AuthError, Principal, Throttled, change_password, sign_in, sign_out,
)

from ..auth import SESSION_COOKIE, client_of, principal
from ..errors import ERROR_RESPONSES, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/session", tags=["session"])


class SignIn(BaseModel):
    user: Annotated[str, Field(min_length=1, max_length=64)]
    password: Annotated[str, Field(min_length=1, max_length=1024)]


class PasswordChange(BaseModel):
    current: Annotated[str, Field(min_length=1, max_length=1024)]
    new: Annotated[str, Field(min_length=1, max_length=1024)]


def _same_origin(request: Request) -> None:
    """A sign-in from another site's page is refused (login CSRF): browsers send Origin on a
    cross-site POST. Scripts without an Origin header are fine."""
    origin = request.headers.get("origin")
    if origin is None:
        return
    host = request.headers.get("host", "")
    if origin.split("://", 1)[-1] != host:
        raise ApiError(403, "csrf.origin", f"sign-in from {origin} refused: sign in on the "
                       "console's own page")


@router.post("", responses=ERROR_RESPONSES)
async def create_session(body: SignIn, request: Request, response: Response,
                         state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Sign in with user name and password; sets the session cookie (HttpOnly,
    SameSite=Strict) and returns the session with its CSRF token."""
    _same_origin(request)
    request.state.signin_user = body.user
    try:
        token, who = await run_in_threadpool(sign_in, state.ledger, body.user, body.password,
                                             client=client_of(request))
    except Throttled as e:
        raise ApiError(429, e.code, e.message, headers={"Retry-After": str(e.retry_after)}
                       ) from None
    except AuthError as e:
        raise ApiError(401, e.code, e.message) from None
    request.state.principal = who
    response.set_cookie(SESSION_COOKIE, token, httponly=True, samesite="strict",
                        secure=state.config.secure_cookies, path="/",
                        max_age=int(SESSION_MAX.total_seconds()))  # the server ends it
    return who.to_json()


@router.get("", responses=ERROR_RESPONSES)
async def get_session(who: Principal = Depends(principal)) -> dict[str, Any]:
    """The signed-in user, role, CSRF token and expiry (401 when not signed in)."""
    return who.to_json()


@router.delete("", status_code=204, responses=ERROR_RESPONSES)
async def delete_session(request: Request, response: Response,
                         who: Principal = Depends(principal),
                         state: ConsoleState = Depends(get_state)) -> None:
    """Sign out: the session ends on the server, the cookie is cleared."""
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie and who.via == "session":
        await run_in_threadpool(sign_out, state.ledger, cookie)
    response.delete_cookie(SESSION_COOKIE, path="/")


@router.post("/password", status_code=204, responses=ERROR_RESPONSES)
async def post_password(body: PasswordChange, request: Request,
                        who: Principal = Depends(principal),
                        state: ConsoleState = Depends(get_state)) -> None:
    """Change your own password (the current one must be right); your other sessions end."""
    try:
        await run_in_threadpool(change_password, state.ledger, who.user, body.current, body.new,
                                keep_session=request.cookies.get(SESSION_COOKIE))
    except Throttled as e:
        raise ApiError(429, e.code, e.message, "body.current",
                       headers={"Retry-After": str(e.retry_after)}) from None
    except AuthError as e:
        field = "body.new" if e.code == "auth.weak_password" else "body.current"
        raise ApiError(422 if e.code == "auth.weak_password" else 403, e.code, e.message,
                       field) from None
