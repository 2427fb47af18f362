"""Every error the API answers is `{"code", "message", "field"?}` (docs/console.md).

`code` is stable and machine-readable (`auth.required`, `role.forbidden`, `csrf.missing`,
`request.invalid`, `alert.unknown`, ...); `message` says what is wrong and what to do;
`field` names the request field at fault (dotted: `body.reason`, `query.state`).
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from linetrace.ledger.errors import LedgerError
from linetrace.schemas.errors import LinetraceError


class ApiError(LinetraceError):
    """An answer other than success: HTTP `status`, the error document's `code`, `message`
    and `field`, and any headers (Retry-After, WWW-Authenticate)."""

    code = "api.error"

    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message, code=code)
        self.status, self.field, self.headers = status, field, headers

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.field is not None:
            out["field"] = self.field
        return out


#: OpenAPI description of the error document, for `responses=` on routes.
ERROR_SCHEMA: dict[str, Any] = {
    "type": "object", "required": ["code", "message"],
    "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                   "field": {"type": "string"}}}
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": what, "content": {"application/json": {"schema": ERROR_SCHEMA}}}
    for status, what in ((401, "no or invalid credentials"), (403, "the role may not"),
                         (422, "the request is not valid"))}

log = logging.getLogger("linetrace.console")

_NOT_FOUND = ("unknown", "not_found", "missing")
_FORBIDDEN = ("user.role", "user.forbidden", "user.not_allowed", "statement.invalid",
              "hold.needs_user_keys")


def ledger_error(e: LedgerError) -> ApiError:
    """An error from a ledger function, as the API answers it."""
    code = getattr(e, "code", "ledger.error") or "ledger.error"
    message = getattr(e, "message", None) or str(e)
    if code.endswith(_NOT_FOUND) or code.split(".")[-1] in _NOT_FOUND:
        return ApiError(404, code, message)
    if code in _FORBIDDEN or code.startswith("user.") and "role" in message.lower():
        return ApiError(403, code, message)
    if code.endswith(".invalid"):
        return ApiError(422, code, message)
    return ApiError(409, code, message)


def _loc(loc: Any) -> str:
    return ".".join(str(p) for p in loc if p != "__root__")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    async def _api(_: Request, e: ApiError) -> JSONResponse:
        return JSONResponse(e.body(), status_code=e.status, headers=e.headers)

    @app.exception_handler(LedgerError)
    async def _ledger(_: Request, e: LedgerError) -> JSONResponse:
        err = ledger_error(e)
        return JSONResponse(err.body(), status_code=err.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, e: RequestValidationError) -> JSONResponse:
        errors = e.errors()
        first = errors[0] if errors else {}
        field = _loc(first.get("loc", ())) or None
        msgs = [f"{_loc(err.get('loc', ())) or 'request'}: {err.get('msg', 'invalid')}"
                for err in errors[:5]]
        body = {"code": "request.invalid",
                "message": "; ".join(msgs) + " (see /openapi.json for this request's shape)"}
        if field:
            body["field"] = field
        return JSONResponse(body, status_code=422)

    @app.exception_handler(Exception)
    async def _internal(request: Request, e: Exception) -> JSONResponse:
        # Logged by the server with its traceback; the client gets the error document only.
        log.exception("%s %s failed", request.method, request.url.path)
        return JSONResponse({"code": "internal", "message": "the console failed to answer "
                             "this request; its log has the details (nothing was changed unless "
                             "the answer to a retry says so)"}, status_code=500)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, e: StarletteHTTPException) -> JSONResponse:
        code = {401: "auth.required", 403: "role.forbidden", 404: "not_found",
                405: "method.not_allowed"}.get(e.status_code, f"http.{e.status_code}")
        message = e.detail if isinstance(e.detail, str) else str(e.detail)
        if e.status_code == 404 and message == "Not Found":
            message = "no such resource: /openapi.json lists the API"
        return JSONResponse({"code": code, "message": message}, status_code=e.status_code,
                            headers=getattr(e, "headers", None))
