"""SPC charts: `GET /api/v1/spc` (the body of `linetrace spc --json`) and one chart,
`GET /api/v1/spc/{station_type}/{measurement}`: its points in event order with the rules each
completes, its individuals and moving-range limits and the rules fired
(`ledger/spc_views.py` documents both). A measurement name may hold slashes or spaces: the
rest of the path after the station type is the name (URL-encode spaces)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal
from linetrace.ledger.spc_rules import SpcConfig, load_config
from linetrace.ledger.spc_views import chart_document, spc_document

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES, ERROR_SCHEMA, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1/spc", tags=["spc"])

_CHART_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES, 404: {"description": "no such chart",
                             "content": {"application/json": {"schema": ERROR_SCHEMA}}}}


def _config(state: ConsoleState) -> SpcConfig:
    return load_config(state.config.spc_file)


@router.get("", responses=ERROR_RESPONSES)
async def get_spc(_: Principal = Depends(require(*VIEW)),
                  state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Every chart: `{station_type, measurement, test, unit, centre, lcl, ucl, sigma,
    baseline, points, state, holds, last_violation}` (any role)."""
    def read() -> list[dict[str, Any]]:
        config = _config(state)
        with state.reader() as s:
            return spc_document(s, config)

    return await run_in_threadpool(read)


@router.get("/{station_type}/{measurement:path}", responses=_CHART_RESPONSES)
async def get_chart(station_type: Annotated[str, Path(min_length=1, max_length=64)],
                    measurement: Annotated[str, Path(min_length=1, max_length=256,
                                                     description="the measurement name; may "
                                                     "contain slashes")],
                    _: Principal = Depends(require(*VIEW)),
                    state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """One chart (any role): `points` [{t, value, serial, station, violations, ...}],
    `centre`, `ucl`, `lcl`, `mr_bar`, `mr_ucl`, `mr_lcl`, `rules_fired`, `violations`."""
    def read() -> dict[str, Any] | None:
        config = _config(state)
        with state.reader() as s:
            return chart_document(s, config, station_type, measurement)

    doc = await run_in_threadpool(read)
    if doc is None:
        raise ApiError(404, "spc.unknown_chart", f"no SPC chart {station_type}/{measurement}: "
                       "GET /api/v1/spc lists the charts")
    return doc
