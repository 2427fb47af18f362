"""Public checkpoint endpoints: what witnesses and customers fetch and keep, no credentials.

- `GET /api/v1/checkpoint`: the latest signed checkpoint, a C2SP signed note
  (`text/plain; charset=utf-8`): origin line, tree size, base64 root, blank line, signature.
- `GET /api/v1/checkpoints`: every stored checkpoint, oldest first:
  `[{"tree_size": int, "root": base64, "time": RFC 3339}]`.
- `GET /api/v1/checkpoints/{size}`: the note of the checkpoint of that tree size.
- `GET /api/v1/proofs/consistency?from=M&to=N`: `{"from": M, "to": N, "proof": [base64]}`,
  the RFC 6962 consistency proof that tree N extends tree M (both checkpointed sizes).
- `GET /api/v1/verifier-key`: the plant's note verifier key (`name+keyid+base64`, as
  `linetrace checkpoint --json` reports `verifier_key`), to check the notes' signatures.

A witness keeps the notes it saw; with the proof between two of them and
`merkle.verify_consistency` it checks the log only grew (docs/LEDGER.md).
"""

from __future__ import annotations

import base64
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import PlainTextResponse
from starlette.concurrency import run_in_threadpool

from linetrace.ledger import log
from linetrace.ledger.genealogy import iso
from linetrace.ledger.proof.checkpoints import plant_signer

from ..errors import ERROR_SCHEMA, ApiError
from ..state import ConsoleState, get_state

router = APIRouter(prefix="/api/v1", tags=["checkpoints"])

NOTE_TYPE = "text/plain; charset=utf-8"
_NOTE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "a C2SP signed note", "content": {NOTE_TYPE: {"schema": {
        "type": "string"}}}},
    404: {"description": "no such checkpoint",
          "content": {"application/json": {"schema": ERROR_SCHEMA}}}}
_PROOF_RESPONSES: dict[int | str, dict[str, Any]] = {
    422: {"description": "a size is not a checkpoint, or from > to",
          "content": {"application/json": {"schema": ERROR_SCHEMA}}}}


def _note(text: str) -> PlainTextResponse:
    return PlainTextResponse(text, media_type=NOTE_TYPE)


@router.get("/checkpoint", response_class=PlainTextResponse, responses=_NOTE_RESPONSES)
async def get_latest_checkpoint(state: ConsoleState = Depends(get_state)) -> PlainTextResponse:
    """The latest signed checkpoint (public: no credentials)."""
    def read() -> str | None:
        with state.reader() as s:
            cp = log.latest_checkpoint(s)
            return cp.note if cp is not None else None

    note = await run_in_threadpool(read)
    if note is None:
        raise ApiError(404, "checkpoint.none", "the log has no checkpoint yet: the worker "
                       "signs one as events are stored (or run `linetrace checkpoint`)")
    return _note(note)


@router.get("/checkpoints")
async def get_checkpoints(state: ConsoleState = Depends(get_state)) -> list[dict[str, Any]]:
    """Every stored checkpoint, oldest first: `{tree_size, root (base64), time}` (public)."""
    def read() -> list[dict[str, Any]]:
        with state.reader() as s:
            return [{"tree_size": cp.size, "root": base64.b64encode(cp.root).decode("ascii"),
                     "time": iso(cp.created)} for cp in log.stored_checkpoints(s)]

    return await run_in_threadpool(read)


@router.get("/checkpoints/{size}", response_class=PlainTextResponse,
            responses=_NOTE_RESPONSES)
async def get_checkpoint(size: Annotated[int, Path(ge=1, description="tree size")],
                         state: ConsoleState = Depends(get_state)) -> PlainTextResponse:
    """The signed checkpoint note of tree size `size` (public)."""
    def read() -> str | None:
        with state.reader() as s:
            cp = s.get(log.LogCheckpoint, size)
            return cp.note if cp is not None else None

    note = await run_in_threadpool(read)
    if note is None:
        raise ApiError(404, "checkpoint.unknown", f"no checkpoint of tree size {size}: "
                       "GET /api/v1/checkpoints lists them")
    return _note(note)


@router.get("/proofs/consistency", responses=_PROOF_RESPONSES)
async def get_consistency(
        from_: Annotated[int, Query(alias="from", ge=1, description="the older tree size")],
        to: Annotated[int, Query(ge=1, description="the newer tree size")],
        state: ConsoleState = Depends(get_state)) -> dict[str, Any]:
    """`{from, to, proof: [base64 hashes]}`: the consistency proof that the tree of size `to`
    extends the tree of size `from` (both sizes of stored checkpoints; public)."""
    if from_ > to:
        raise ApiError(422, "proof.invalid", f"from ({from_}) is after to ({to}): a "
                       "consistency proof goes from an older (smaller) tree to a newer one",
                       "query.from")

    def read() -> dict[str, Any]:
        with state.reader() as s:
            for field, size in (("query.from", from_), ("query.to", to)):
                if s.get(log.LogCheckpoint, size) is None:
                    raise ApiError(422, "proof.invalid", f"no checkpoint of tree size {size}: "
                                   "proofs are between checkpointed sizes (GET "
                                   "/api/v1/checkpoints lists them)", field)
            proof = log.consistency(s, from_, to)
        return {"from": from_, "to": to,
                "proof": [base64.b64encode(h).decode("ascii") for h in proof]}

    return await run_in_threadpool(read)


@router.get("/verifier-key", response_class=PlainTextResponse,
            responses={200: {"description": "name+keyid+base64 key",
                             "content": {NOTE_TYPE: {"schema": {"type": "string"}}}}})
async def get_verifier_key(state: ConsoleState = Depends(get_state)) -> PlainTextResponse:
    """The plant's checkpoint verifier key, `name+keyid+base64(0x01 || key)` (public)."""
    signer = plant_signer(state.plant_key, state.config.origin)
    return PlainTextResponse(f"{signer.verifier}\n", media_type=NOTE_TYPE)
