"""The supervisors' console and REST API (issue 13; docs/console.md): `create_app(config)`.

It reads the ledger (read-only sessions) and changes state only through ledger functions,
which record people's attested statements as signed system events and queue their outbox
copies; the worker's relay publishes them. Run by `linetrace console` and `linetrace up`
(uvicorn).
"""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from . import errors, pages
from .auth import AuditMiddleware
from .config import ConsoleConfig
from .security import SecurityHeaders
from .state import ConsoleState

API_VERSION = "v1"

#: The API's routers: `linetrace.console.api.<name>.router` (`stream` before `alerts`, whose
#: `/api/v1/alerts/{id}` would otherwise take `/api/v1/alerts/stream`).
ROUTERS = ("session", "stream", "alerts", "holds", "validate", "units", "line", "spc",
           "checkpoints", "audit", "tokens")


def create_app(config: ConsoleConfig) -> FastAPI:
    state = ConsoleState(config)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(state.enrol_console_key)
        try:
            yield
        finally:
            state.close()

    app = FastAPI(
        title="linetrace console API", version="1.0.0", lifespan=lifespan,
        description="The supervisors' console and the REST API of linetrace: alerts, units, "
        "genealogy, recall, holds, the interlock, HBOMs, evidence, checkpoints. Errors are "
        '`{"code", "message", "field"?}`. Sign in with `POST /api/v1/session` (a cookie, '
        "plus `X-CSRF-Token` on changes) or send `Authorization: Bearer <API token>`.",
        docs_url=None, redoc_url=None)
    app.state.console = state
    errors.install(app)
    app.add_middleware(AuditMiddleware)
    app.add_middleware(SecurityHeaders)
    for name in ROUTERS:
        module = importlib.import_module(f"linetrace.console.api.{name}")
        app.include_router(module.router)
    app.include_router(pages.router)
    return app
