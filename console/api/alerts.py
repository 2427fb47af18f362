"""The ISA-18.2 alerts: the list, the KPIs, one alert with its history, and the operator's
actions (acknowledge, shelve, unshelve, comment, out of service, return to service).

Bodies are the CLI's `--json` documents: `GET /api/v1/alerts` = `linetrace alerts --json`,
`/kpi` = `alerts kpi --json`, `/{id}` = `alerts show ID --json`, an action's answer =
`linetrace ack ID --json` (the alert, `recorded`, `new`, `message`).

An action is the console's attestation for the signed-in user (`ledger.console_key.attest`:
a statement naming the user, signed by the console's enrolled key), recorded by
`ledger.alerts.actions.act` exactly as a person's own signed statement is: a plant-signed
`alert.*` system event naming the user, and the alert's transition in its history.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.alerts.actions import (
    ALERT_ROLES, SHELVE_MAX, SHELVE_MIN, STATEMENT_ACTION, act, parse_duration, shelve_until,
    statement_details,
)
from linetrace.ledger.alerts.conditions import STATES
from linetrace.ledger.alerts.engine import Action
from linetrace.ledger.alerts.kpi import kpis
from linetrace.ledger.alerts.views import ALL, AlertError, alert_document, list_alerts
from linetrace.ledger.console_auth import Principal
from linetrace.ledger.console_key import attest
from linetrace.ledger.errors import LedgerError
from linetrace.ledger.line_clock import line_clock

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES, ApiError, ledger_error
from ..state import ConsoleState, get_state
from .text import TEXT_MAX, optional_text, required_text

router = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])

AlertId = Annotated[str, Path(min_length=1, max_length=64,
                              description="the alert's id, e.g. `AL-0123456789ab`")]


def _roles(action: Action) -> tuple[str, ...]:
    return ALERT_ROLES[STATEMENT_ACTION[action]]


# --- reading ---------------------------------------------------------------------------------


@router.get("", responses=ERROR_RESPONSES)
async def get_alerts(
        state_: Annotated[str | None, Query(
            alias="state", max_length=32,
            description=f"only alerts in this ISA-18.2 state ({', '.join(STATES)}; `{ALL}`: "
                        "every alert, normal ones included; none: every alert not normal)")
        ] = None,
        _: Principal = Depends(require(*VIEW)),
        state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """The alerts, the most urgent first (`linetrace alerts --json`): `{id, condition, subject,
    priority, state, occurrences, raised, updated, message, action, ...}`."""
    def read() -> list[dict[str, Any]]:
        with state.reader() as s:
            return [v.to_json() for v in list_alerts(s, state_)]

    try:
        return await run_in_threadpool(read)
    except AlertError as e:
        raise ApiError(422, e.code, e.message, "query.state") from None


def _window(text: str) -> timedelta:
    try:
        return parse_duration(text)
    except AlertError as e:
        raise ApiError(422, "request.invalid", f"since: {e.message}", "query.since") from None


@router.get("/kpi", responses=ERROR_RESPONSES)
async def get_kpi(
        since: Annotated[str, Query(max_length=16, description="the window back from the line "
                                    "clock: 1h, 24h, 7d (default 24h)")] = "24h",
        _: Principal = Depends(require(*VIEW)),
        state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """The alarm-system KPIs (EEMUA 191 / ISA-18.2) over the window, judged on the line clock
    (`linetrace alerts kpi --json`): alarms per 10 min, peak, priority mix, stale, top-10
    share, chattering, floods, `flood` (a flood going on now)."""
    window = _window(since)

    def read() -> dict[str, Any]:
        with state.reader() as s:
            return kpis(s, line_clock(s, datetime.now(UTC)), window).to_json()

    return await run_in_threadpool(read)


@router.get("/{alert_id}", responses=ERROR_RESPONSES)
async def get_one(alert_id: AlertId, _: Principal = Depends(require(*VIEW)),
                  state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """One alert with its details and every transition: who did what, when and why
    (`linetrace alerts show ID --json`; `history[].by` names the person)."""
    def read() -> dict[str, Any]:
        with state.reader() as s:
            return alert_document(s, alert_id)

    try:
        return await run_in_threadpool(read)
    except LedgerError as e:
        raise ledger_error(e) from None


# --- acting ----------------------------------------------------------------------------------


class Ack(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str | None, Field(max_length=TEXT_MAX, description="a note kept with the "
                                         "acknowledgement")] = None

    @field_validator("comment")
    @classmethod
    def _comment(cls, v: str | None) -> str | None:
        return optional_text(v, "comment")


_LIMITS = (f"{int(SHELVE_MIN.total_seconds() // 60)} minute to "
           f"{int(SHELVE_MAX.total_seconds() // 3600)} hours")


class Shelve(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    for_: Annotated[str, Field(alias="for", min_length=2, max_length=32,
                               description=f"how long: 30m, 2h, 1h30m, 1d (s, m, h, d); "
                                           f"{_LIMITS}")]
    reason: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]

    @field_validator("for_")
    @classmethod
    def _duration(cls, v: str) -> str:
        try:
            d = parse_duration(v)
        except AlertError as e:
            raise ValueError(e.message) from None
        if not SHELVE_MIN <= d <= SHELVE_MAX:
            raise ValueError(f"a shelve lasts {_LIMITS} (ISA-18.2: shelving is time-limited), "
                             f"not {v}; take a longer-lasting problem out of service instead "
                             "(a supervisor)")
        return v

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        return required_text(v, "reason")


class OptionalReason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str | None, Field(max_length=TEXT_MAX)] = None

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str | None) -> str | None:
        return optional_text(v, "reason")


class Comment(BaseModel):
    model_config = ConfigDict(extra="forbid")
    comment: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]

    @field_validator("comment")
    @classmethod
    def _comment(cls, v: str) -> str:
        return required_text(v, "comment")


class Reason(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        return required_text(v, "reason")


async def _act(state: ConsoleState, who: Principal, alert_id: str, action: Action, *,
               comment: str | None = None, reason: str | None = None,
               duration: timedelta | None = None) -> dict[str, Any]:
    """Attest the signed-in user's action with the console's key and record it."""
    def run() -> dict[str, Any]:
        state.enrol_console_key()
        until = shelve_until(duration, datetime.now(UTC)) if duration is not None else None
        details = statement_details(action, comment=comment, reason=reason, until=until)
        signed = attest(state.console_key, STATEMENT_ACTION[action], alert_id, details,
                        user=who.user)
        return act(state.ledger, state.plant_key, signed, alert_id, action, comment=comment,
                   reason=reason, until=until).to_json()

    try:
        return await run_in_threadpool(run)
    except LedgerError as e:
        raise ledger_error(e) from None


@router.post("/{alert_id}/ack", responses=ERROR_RESPONSES)
async def post_ack(alert_id: AlertId, body: Ack | None = None,
                   who: Principal = Depends(require(*_roles("acknowledge"))),
                   state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Acknowledge an alert (`linetrace ack ID --json`): an unacknowledged alert becomes
    acknowledged, one that returned to normal unacknowledged becomes normal, a latched one
    is reset. Recorded as an `alert.acknowledged` event naming you, attested by the console."""
    return await _act(state, who, alert_id, "acknowledge",
                      comment=body.comment if body else None)


@router.post("/{alert_id}/shelve", responses=ERROR_RESPONSES)
async def post_shelve(alert_id: AlertId, body: Shelve,
                      who: Principal = Depends(require(*_roles("shelve"))),
                      state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Shelve an alert for `for` (1 minute to 24 hours) with a reason (`linetrace shelve
    --json`): not announced until the time is up or it is unshelved."""
    return await _act(state, who, alert_id, "shelve", reason=body.reason,
                      duration=parse_duration(body.for_))


@router.post("/{alert_id}/unshelve", responses=ERROR_RESPONSES)
async def post_unshelve(alert_id: AlertId, body: OptionalReason | None = None,
                        who: Principal = Depends(require(*_roles("unshelve"))),
                        state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """End a shelve now (`linetrace unshelve --json`)."""
    return await _act(state, who, alert_id, "unshelve", reason=body.reason if body else None)


@router.post("/{alert_id}/comment", responses=ERROR_RESPONSES)
async def post_comment(alert_id: AlertId, body: Comment,
                       who: Principal = Depends(require(*_roles("comment"))),
                       state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Add a comment to the alert's record; its state does not change."""
    return await _act(state, who, alert_id, "comment", comment=body.comment)


@router.post("/{alert_id}/out-of-service", responses=ERROR_RESPONSES)
async def post_out_of_service(alert_id: AlertId, body: Reason,
                              who: Principal = Depends(require(*_roles("out_of_service"))),
                              state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Take an alert out of service with a reason (supervisor or admin): not announced until
    returned to service."""
    return await _act(state, who, alert_id, "out_of_service", reason=body.reason)


@router.post("/{alert_id}/return", responses=ERROR_RESPONSES)
async def post_return(alert_id: AlertId, body: OptionalReason | None = None,
                      who: Principal = Depends(require(*_roles("return_to_service"))),
                      state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Return an out-of-service alert to service (supervisor or admin)."""
    return await _act(state, who, alert_id, "return_to_service",
                      reason=body.reason if body else None)
