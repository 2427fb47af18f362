"""Who is asking, whether their role may, and the audit of every state-changing request.

Credentials: the session cookie (`SESSION_COOKIE`, set by `POST /api/v1/session`) or an API
token (`Authorization: Bearer lt_...`). A cookie-authenticated request that changes state
must carry the session's CSRF token in `X-CSRF-Token` (the page reads it from `GET
/api/v1/session`): a form or script on another site cannot. API tokens are not sent by
browsers on their own, so they need none.

`require(*roles)` answers 401 without credentials and 403 naming the roles it takes;
`AuditMiddleware` records every non-GET request under /api (refused ones included): who, how,
what, the answer's status and the client's address, in `console_audit`.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from linetrace.ledger.console_auth import Principal, audit, session_principal, token_principal
from linetrace.ledger.users import ROLES

from .errors import ApiError
from .state import ConsoleState, get_state

SESSION_COOKIE = "linetrace_session"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

VIEW: tuple[str, ...] = ROLES
ACT: tuple[str, ...] = ("supervisor", "quality", "admin")
QUALITY: tuple[str, ...] = ("quality", "admin")
ADMIN: tuple[str, ...] = ("admin",)


def client_of(request: Request) -> str:
    return request.client.host if request.client is not None else "unknown"


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None


async def find_principal(request: Request, state: ConsoleState) -> Principal | None:
    """The request's principal (cached on the request), or None without valid credentials."""
    if hasattr(request.state, "principal"):
        found: Principal | None = request.state.principal
        return found
    token = _bearer(request)
    principal: Principal | None = None
    if token is not None:
        principal = await run_in_threadpool(token_principal, state.ledger, token)
    else:
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie:
            principal = await run_in_threadpool(session_principal, state.ledger, cookie,
                                                idle=state.config.session_idle)
    request.state.principal = principal
    return principal


async def recheck(request: Request, state: ConsoleState) -> Principal | None:
    """Look the request's credentials up again (not the cached principal): a long-lived
    request (the alert stream) ends once its session ends or its token is revoked."""
    if hasattr(request.state, "principal"):
        del request.state.principal
    return await find_principal(request, state)


def check_csrf(request: Request, principal: Principal) -> None:
    if request.method in SAFE_METHODS or principal.via != "session":
        return
    sent = request.headers.get(CSRF_HEADER)
    if not sent:
        raise ApiError(403, "csrf.missing", f"a change from a browser session needs the "
                       f"{CSRF_HEADER} header (the console's pages send it; scripts use an "
                       "API token)")
    if principal.csrf is None or not hmac.compare_digest(sent, principal.csrf):
        raise ApiError(403, "csrf.invalid", f"the {CSRF_HEADER} header does not match this "
                       "session: reload the page")


async def principal(request: Request, state: ConsoleState = Depends(get_state)) -> Principal:
    """Dependency: the signed-in user or token holder (401 otherwise); CSRF checked."""
    found = await find_principal(request, state)
    if found is None:
        raise ApiError(401, "auth.required", "sign in (POST /api/v1/session) or send an API "
                       "token (Authorization: Bearer lt_...)",
                       headers={"WWW-Authenticate": 'Bearer realm="linetrace"'})
    check_csrf(request, found)
    if found.must_change and request.url.path not in _ONE_TIME_PATHS:
        raise ApiError(403, "auth.password_change_required", f"{found.user} signed in with a "
                       "one-time password: choose your own first (POST "
                       "/api/v1/session/password, or the console's account page)")
    return found


#: What a session signed in with a one-time password may do before choosing its own.
_ONE_TIME_PATHS = frozenset({"/api/v1/session", "/api/v1/session/password"})


def require(*roles: str) -> Callable[..., Awaitable[Principal]]:
    """Dependency factory: the principal, if their role is one of `roles` (403 otherwise)."""
    allowed = tuple(roles)

    async def dep(who: Principal = Depends(principal)) -> Principal:
        if who.role not in allowed:
            raise ApiError(403, "role.forbidden", f"this needs the role {' or '.join(allowed)}; "
                           f"{who.user} is {who.role}")
        return who

    dep.__name__ = "require_" + "_".join(allowed)
    return dep


class AuditMiddleware:
    """Record every state-changing /api request, whatever its answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (scope["type"] != "http" or scope["method"] in SAFE_METHODS
                or not scope["path"].startswith("/api/")):
            await self.app(scope, receive, send)
            return
        status = 500
        body = bytearray()

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body" and len(body) < 4096:
                body.extend(message.get("body", b"")[:4096])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            await self._record(scope, status, bytes(body))

    async def _record(self, scope: Scope, status: int, body: bytes) -> None:
        request = Request(scope)
        state: ConsoleState = request.app.state.console
        who: Principal | None = getattr(request.state, "principal", None)
        if who is None and scope["path"] != "/api/v1/session":
            try:
                who = await find_principal(request, state)
            except Exception:  # noqa: BLE001 - the audit never fails a request
                who = None
        detail: dict[str, Any] = {}
        try:
            doc = json.loads(body) if body else None
        except ValueError:
            doc = None
        if isinstance(doc, dict):
            for k in ("code", "message", "id", "state", "hold", "alert", "user"):
                v = doc.get(k)
                if isinstance(v, (str, int, bool)):
                    detail[k] = v if not isinstance(v, str) else v[:300]
        if scope["path"] == "/api/v1/session" and who is None:
            detail["user"] = getattr(request.state, "signin_user", None)
        await run_in_threadpool(
            audit, state.ledger, user=who.user if who else None,
            via=who.via if who else "anonymous", method=scope["method"], path=scope["path"],
            status=status, client=client_of(request), detail=detail)
