"""Holds: the list, placing one, and releasing one with the two-person rule.

Bodies are the CLI's `--json` documents: `GET /api/v1/holds` = `linetrace holds --json`,
placing = `linetrace hold place --json`, releasing = `linetrace hold release --json` (the
hold as listed now, `recorded`, `new`, `message`).

Each action is the console's attestation for the signed-in user (`ledger.console_key.attest`),
recorded by `ledger.hold_actions` exactly as a person's own signed statement. A quality hold
needs two different quality users: the first one's release is recorded as an approval and the
answer shows the hold still `active`, saying a second quality user must confirm. Where the
plant takes only the users' own keys for quality releases (`quality_release = "user-keys"`,
LINETRACE_QUALITY_RELEASE), the console refuses such a release (403 `hold.needs_user_keys`)
and says to run `linetrace hold release HOLD --reason R`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from pydantic import BaseModel, ConfigDict, Field, field_validator
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal
from linetrace.ledger.console_key import attest
from linetrace.ledger.errors import LedgerError
from linetrace.ledger.hold_actions import PLACE_ROLES, HoldOutcome, place_hold, release_hold
from linetrace.ledger.hold_views import list_holds

from ..auth import ACT, VIEW, require
from ..errors import ERROR_RESPONSES, ApiError, ledger_error
from ..state import ConsoleState, get_state
from .text import TEXT_MAX, required_text

router = APIRouter(prefix="/api/v1/holds", tags=["holds"])

Scope = Literal["unit", "lot", "mpn", "work_order", "station"]


class PlaceHold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scope: Annotated[Scope, Field(description="what the hold stops: a unit, every unshipped "
                                  "unit containing a lot or MPN (quality and admin only), a "
                                  "work order, or a station (locked)")]
    target: Annotated[str, Field(min_length=1, max_length=128,
                                 description="the serial, lot, MPN, work order or station id")]
    reason: Annotated[str, Field(min_length=1, max_length=TEXT_MAX)]

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        return required_text(v, "target")

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        return required_text(v, "reason")


class ReleaseHold(BaseModel):
    model_config = ConfigDict(extra="forbid")
    reason: Annotated[str, Field(min_length=1, max_length=TEXT_MAX,
                                 description="why the hold may end")]

    @field_validator("reason")
    @classmethod
    def _reason(cls, v: str) -> str:
        return required_text(v, "reason")


@router.get("", responses=ERROR_RESPONSES)
async def get_holds(
        all_: Annotated[bool, Query(alias="all", description="released and disposed holds "
                                    "too")] = False,
        _: Principal = Depends(require(*VIEW)),
        state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """The holds in force (every hold with `all=true`), in the order they were placed
    (`linetrace holds --json`): `{id, scope, target, reason, placed_by, placed, state,
    approvals, affected_units, category, code, released, released_by, release_reason, ...}`."""
    def read() -> list[dict[str, Any]]:
        with state.reader() as s:
            return list_holds(s, all_=all_)

    return await run_in_threadpool(read)


@router.post("", responses=ERROR_RESPONSES)
async def post_hold(body: PlaceHold, who: Principal = Depends(require(*ACT)),
                    state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Place a hold (`linetrace hold place --json`). Supervisors hold units, work orders and
    stations; quality and admin users anything. A lot or MPN hold stops every unshipped unit
    containing it and lists the shipped ones (`shipped`)."""
    if who.role not in PLACE_ROLES[body.scope]:
        raise ApiError(403, "role.forbidden", f"a {body.scope} hold needs the role "
                       f"{' or '.join(PLACE_ROLES[body.scope])}; {who.user} is {who.role}",
                       "body.scope")

    def run() -> HoldOutcome:
        state.enrol_console_key()
        details = {"scope": body.scope, "reason": body.reason}
        signed = attest(state.console_key, "hold.place", body.target, details, user=who.user)
        return place_hold(state.ledger, state.plant_key, signed, scope=body.scope,
                          target=body.target, reason=body.reason)

    try:
        outcome = await run_in_threadpool(run)
    except LedgerError as e:
        err = ledger_error(e)
        if getattr(e, "code", "") == "hold.target_unknown":
            err.field = "body.target"
        raise err from None
    return outcome.to_json()


@router.post("/{hold_id}/release", responses=ERROR_RESPONSES)
async def post_release(
        hold_id: Annotated[str, Path(min_length=1, max_length=128)], body: ReleaseHold,
        who: Principal = Depends(require(*ACT)),
        state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Release a hold (`linetrace hold release --json`). An operational hold: one supervisor,
    quality or admin user. A quality hold: two different quality users; the first answer
    shows the hold still `active` and says a second quality user must confirm. With the
    plant's `user-keys` policy a quality hold is released only with the users' own keys:
    403 `hold.needs_user_keys` (run `linetrace hold release HOLD --reason R`)."""
    own_keys = state.config.quality_release == "user-keys"

    def run() -> HoldOutcome:
        state.enrol_console_key()
        signed = attest(state.console_key, "hold.release", hold_id, {"reason": body.reason},
                        user=who.user)
        return release_hold(state.ledger, state.plant_key, signed, hold_id, body.reason,
                            console_attested_quality=not own_keys)

    try:
        outcome = await run_in_threadpool(run)
    except LedgerError as e:
        raise ledger_error(e) from None
    return outcome.to_json()  # `hold release --json`, the same document
