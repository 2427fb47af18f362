"""Units, genealogy, burn-in, downloads, recall and lots: the read side of the ledger.

Every body is the CLI's `--json` document for the same question (`units`, `trace`, `burnin
show`, `recall`, `lots show`), built by the same ledger function; the unit page and the
telemetry series have their own documents (`ledger/unit_page.py`,
`ledger/telemetry_series.py`). Downloads: the HBOM (`linetrace hbom`: the sealed bytes once
sealed) and the evidence bundle (`linetrace evidence`, zipped). Any signed-in role may read.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query
from fastapi.responses import FileResponse, Response
from sqlalchemy.orm import Session
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from linetrace.ledger.console_auth import Principal
from linetrace.ledger.evidence import write_evidence
from linetrace.ledger.genealogy import UNIT_STATES, list_units, trace
from linetrace.ledger.lookups import show_lot
from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.recall import recall
from linetrace.ledger.system_events import sealed_hbom, unsealed_hbom
from linetrace.ledger.telemetry_series import telemetry_series
from linetrace.ledger.unit_page import require_unit, unit_page
from linetrace.ledger.verdict_docs import verdict_documents
from linetrace.ledger.views import to_data

from ..auth import VIEW, require
from ..errors import ERROR_RESPONSES, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1", tags=["units"])

T = TypeVar("T")
Serial = Annotated[str, "a unit serial"]
_NOT_FOUND: dict[int | str, dict[str, Any]] = {
    404: {"description": "no such unit (`unit.unknown`), lot or verdict"}}
RESPONSES = {**ERROR_RESPONSES, **_NOT_FOUND}
HBOM_MEDIA_TYPE = "application/vnd.cyclonedx+json"


async def _read(state: ConsoleState, fn: Callable[[Session], T]) -> T:
    """`fn` in a read-only session, off the event loop."""
    def run() -> T:
        with state.reader() as s:
            return fn(s)

    return await run_in_threadpool(run)


def _filename(serial: str, suffix: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", serial)[:100] + suffix


@router.get("/units", responses=ERROR_RESPONSES)
async def get_units(kind: Annotated[str | None, Query(max_length=16, description=
                                                      "server or assembly")] = None,
                    state: Annotated[str | None, Query(description=", ".join(UNIT_STATES))]
                    = None,
                    product: Annotated[str | None, Query(max_length=128)] = None,
                    _: Principal = Depends(require(*VIEW)),
                    console: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Units in serial order: `linetrace units --json` (`{serial, product, kind, state, step,
    updated}`; `state` is `on_hold` while a hold in force stops the unit)."""
    if state is not None and state not in UNIT_STATES:
        raise ApiError(422, "request.invalid", f"unknown state {state!r}; one of "
                       f"{', '.join(UNIT_STATES)}", "query.state")
    units = await _read(console, lambda s: list_units(s, kind=kind, state=state,
                                                      product=product))
    data: list[dict[str, Any]] = to_data(units)
    return data


@router.get("/units/{serial}", responses=RESPONSES)
async def get_unit(serial: Serial, _: Principal = Depends(require(*VIEW)),
                   console: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """The unit page: identity and state, route progress, holds in force, history, test
    measurements, alerts, burn-in verdicts, parts (the document: `ledger/unit_page.py`,
    docs/console.md)."""
    return await _read(console, lambda s: unit_page(s, serial, console.config.routes))


@router.get("/units/{serial}/trace", responses=RESPONSES)
async def get_trace(serial: Serial, _: Principal = Depends(require(*VIEW)),
                    console: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """The unit's genealogy: `linetrace trace SERIAL --json`."""
    doc: dict[str, Any] = await _read(console, lambda s: to_data(trace(s, serial)))
    return doc


@router.get("/units/{serial}/burnin", responses=RESPONSES)
async def get_burnin(serial: Serial, _: Principal = Depends(require(*VIEW)),
                     console: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """linetrace's burn-in verdicts on the unit, latest first: `linetrace burnin show SERIAL
    --json` (docs/burnin.md). 404 `burnin.no_verdict` when it has none."""
    def read(s: Session) -> list[dict[str, Any]]:
        require_unit(s, serial)
        return verdict_documents(s, serial)

    docs = await _read(console, read)
    if not docs:
        raise ApiError(404, "burnin.no_verdict", f"unit {serial} has no burn-in verdict: it "
                       "was never burned in, or its run's end or results are not in the "
                       "ledger yet")
    return docs


@router.get("/units/{serial}/telemetry", responses=RESPONSES)
async def get_telemetry(serial: Serial, _: Principal = Depends(require(*VIEW)),
                        console: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """Per burn-in run, per GPU: temperature, power and clocks over time (at most 600 points
    a GPU), the GPU off its peers marked `outlier` with `why`
    (`ledger/telemetry_series.py`). A unit never burned in has `runs: []`."""
    def read(s: Session) -> dict[str, Any]:
        require_unit(s, serial)
        return telemetry_series(s, serial)

    return await _read(console, read)


@router.get("/units/{serial}/hbom", response_class=Response, responses={
    **RESPONSES, 200: {"description": "the CycloneDX 1.6 HBOM", "content": {
        HBOM_MEDIA_TYPE: {"schema": {"type": "object"}}}}})
async def get_hbom(serial: Serial, _: Principal = Depends(require(*VIEW)),
                   console: ConsoleState = Depends(get_state)) -> Response:
    """The unit's CycloneDX HBOM, as `linetrace hbom SERIAL` prints it: the sealed bytes once
    the unit is sealed (header `X-Linetrace-Hbom: sealed`); before that, one generated now
    (`X-Linetrace-Hbom: unsealed`: not the sealed one)."""
    def read(s: Session) -> tuple[bytes, bool]:
        require_unit(s, serial)
        sealed = sealed_hbom(s, serial)
        return (sealed, True) if sealed is not None else (unsealed_hbom(s, serial), False)

    data, sealed = await _read(console, read)
    return Response(data, media_type=HBOM_MEDIA_TYPE, headers={
        "Content-Disposition": f'attachment; filename="{_filename(serial, ".hbom.cdx.json")}"',
        "X-Linetrace-Hbom": "sealed" if sealed else "unsealed"})


@router.get("/units/{serial}/evidence", response_class=FileResponse, responses={
    **RESPONSES, 409: {"description": "the unit is not sealed (`evidence.not_sealed`), or its "
                       "telemetry was pruned (`telemetry.pruned`)"},
    200: {"description": "the evidence bundle, zipped", "content": {
        "application/zip": {"schema": {"type": "string", "format": "binary"}}}}})
async def get_evidence(serial: Serial,
                       telemetry: Annotated[bool, Query(description=
                                                        "also carry each burn-in run's raw "
                                                        "telemetry")] = False,
                       _: Principal = Depends(require(*VIEW)),
                       console: ConsoleState = Depends(get_state)) -> FileResponse:
    """The evidence bundle of a sealed unit, zipped (`linetrace evidence SERIAL -o DIR
    [--telemetry]`): check it offline with `linetrace verify DIR --key VKEY` (the key:
    `GET /api/v1/verifier-key`). 409 `evidence.not_sealed` before the unit is sealed."""
    await _read(console, lambda s: require_unit(s, serial))
    work = Path(tempfile.mkdtemp(prefix="linetrace-evidence-"))

    def build() -> Path:
        bundle = work / _filename(serial, "")
        signer = plant_signer(console.plant_key, console.config.origin)
        write_evidence(console.ledger, serial, bundle, signer, telemetry=telemetry)
        out = work / "bundle.zip"
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
            for f in sorted(p for p in bundle.rglob("*") if p.is_file()):
                z.write(f, f.relative_to(work).as_posix())
        return out

    try:
        path = await run_in_threadpool(build)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return FileResponse(path, media_type="application/zip",
                        filename=_filename(serial, "-evidence.zip"),
                        background=BackgroundTask(shutil.rmtree, work, ignore_errors=True))


def _time(value: str | None, field: str) -> datetime | None:
    if value is None:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ApiError(422, "request.invalid", f"{value!r} is not an RFC 3339 time (e.g. "
                       "2026-01-05T06:00:00Z)", field) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


@router.get("/recall", responses={**ERROR_RESPONSES, 404: {
    "description": "the lot, part or MPN was never seen (`recall.unknown`)"}})
async def get_recall(lot: Annotated[str | None, Query(max_length=128)] = None,
                     part: Annotated[str | None, Query(max_length=128)] = None,
                     mpn: Annotated[str | None, Query(max_length=128)] = None,
                     since: Annotated[str | None, Query(
                         alias="from", description="installed at or after (RFC 3339)")] = None,
                     until: Annotated[str | None, Query(
                         alias="to", description="installed at or before (RFC 3339)")] = None,
                     _: Principal = Depends(require(*VIEW)),
                     console: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Every unit that contains or contained the lot, part serial or MPN (exactly one of
    them): `linetrace recall --lot|--part|--mpn X [--from T] [--to T] --json`."""
    given = [name for name, v in (("lot", lot), ("part", part), ("mpn", mpn)) if v is not None]
    if len(given) != 1:
        raise ApiError(422, "request.invalid", "give exactly one of lot, part or mpn"
                       + (f" (got {', '.join(given)})" if given else ""),
                       f"query.{given[1] if len(given) > 1 else 'lot'}")
    t0, t1 = _time(since, "query.from"), _time(until, "query.to")
    hits = await _read(console, lambda s: recall(s, lot=lot, part=part, mpn=mpn, since=t0,
                                                 until=t1))
    data: list[dict[str, Any]] = to_data(hits)
    return data


@router.get("/lots/{lot}", responses={**ERROR_RESPONSES, 404: {
    "description": "the lot was never received (`ledger.not_found`)"}})
async def get_lot(lot: str, _: Principal = Depends(require(*VIEW)),
                  console: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """A received lot: `linetrace lots show LOT --json`."""
    doc: dict[str, Any] = await _read(console, lambda s: to_data(show_lot(s, lot)))
    return doc
