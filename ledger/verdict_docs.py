"""Burn-in verdicts as documents: what `linetrace burnin show --json` prints and the console's
`GET /api/v1/units/{serial}/burnin` answers (docs/burnin.md)."""

from __future__ import annotations

from typing import Any

import msgspec
from sqlalchemy.orm import Session

from .verdicts import StoredVerdict, verdicts_of


def full_body(value: Any) -> Any:
    """A body as plain JSON with every field, defaults included (events omit defaults on the
    wire; a `--json` contract names every field every time)."""
    if isinstance(value, msgspec.Struct):
        return {f: full_body(getattr(value, f)) for f in value.__struct_fields__}
    if isinstance(value, list):
        return [full_body(v) for v in value]
    return value


def verdict_json(event_id: str, subject: str, time: str, body: Any) -> dict[str, Any]:
    """One verdict as `burnin show --json` prints it: the event's id, unit and time, then
    every field of the `burnin.verdict` body (docs/burnin.md)."""
    return {"id": event_id, "unit": subject, "time": time, **full_body(body)}


def verdict_document(v: StoredVerdict) -> dict[str, Any]:
    return verdict_json(v.event.id, v.event.subject, v.event.envelope.time, v.body)


def verdict_documents(session: Session, serial: str) -> list[dict[str, Any]]:
    """The unit's verdicts, latest first, as `burnin show --json` prints them ([] if none)."""
    return [verdict_document(v) for v in verdicts_of(session, serial)]
