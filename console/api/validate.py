"""`POST /api/v1/validate`: the synchronous interlock (IPC-CFX ValidateUnits / BlockMaterials)
for stations and other systems.

"May unit `serial` start step `step` at station `station` (installing parts of these lots,
these part serials)?", judged from the ledger and the holds in force by the routes in force
(`ledger.interlock.validate`, the judgement the worker's route stage applies to every unit
event). The answer is `linetrace validate --json`: `{"allowed": bool, "reasons": [{"code",
"message"}]}`, 200 whether allowed or not. Any role may ask: stations use an API token of a
`viewer` user. A question that cannot be asked: a station that is not enrolled (404
`validate.unknown_station`), a step that cannot be (422).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal
from linetrace.ledger.interlock import InterlockError, validate

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/validate", tags=["interlock"])

Name = Annotated[str, Field(min_length=1, max_length=128)]


class Question(BaseModel):
    model_config = ConfigDict(extra="forbid")
    serial: Annotated[Name, Field(description="the unit's serial")]
    step: Annotated[int, Field(ge=0, le=1_000_000, description="the route step it would start")]
    station: Annotated[Name, Field(description="the asking station's id")]
    lots: Annotated[list[Name], Field(max_length=200, description="lots whose parts the step "
                                      "would install")] = []
    parts: Annotated[list[Name], Field(max_length=200, description="part or sub-assembly "
                                       "serials the step would install")] = []


@router.post("", responses=ERROR_RESPONSES)
async def post_validate(body: Question, _: Principal = Depends(require(*VIEW)),
                        state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """The interlock's answer: `{allowed, reasons: [{code, message}]}` (`linetrace validate
    --json`); every reason the unit may not start the step there."""
    def run() -> dict[str, Any]:
        with state.reader() as s:
            return validate(s, body.serial, body.step, body.station, routes=state.config.routes,
                            lots=body.lots, parts=body.parts).to_json()

    try:
        return await run_in_threadpool(run)
    except InterlockError as e:
        if e.code == "validate.unknown_station":
            raise ApiError(404, e.code, e.message, "body.station") from None
        raise ApiError(422, e.code, e.message, "body.step") from None
