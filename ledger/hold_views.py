"""Holds as `linetrace holds` and a unit's trace show them (the `--json` contract).

A hold: `{id, scope, target, reason, placed_by, placed, state, approvals, affected_units}`,
then `category`, `code`, `released`, `released_by`, `release_reason`, `decision`, `shipped`,
`step`, `station` (fields may be added, never renamed). `approvals`: each user who signed its
release, `{user, keyid, approved}`; `affected_units`: the units it stops or stopped (for a
work-order, lot or MPN hold in force, those it reaches now); `shipped`: shipped units that
contained the held lot or MPN when it was placed, for the quality team.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .genealogy import iso
from .holds import hold_units_of, placed_body
from .models import Hold, HoldApproval
from .errors import LedgerError


class UnknownHold(LedgerError):
    code = "hold.unknown"


def _view(session: Session, h: Hold) -> dict[str, Any]:
    approvals = session.scalars(select(HoldApproval).where(HoldApproval.hold_id == h.hold_id)
                                .order_by(HoldApproval.approved, HoldApproval.user_id)).all()
    placed = placed_body(session, h)
    return {
        "id": h.hold_id, "scope": h.scope, "target": h.target, "reason": h.reason,
        "placed_by": h.placed_by, "placed": iso(h.placed), "state": h.state,
        "approvals": [{"user": a.user_id, "keyid": a.keyid, "approved": iso(a.approved)}
                      for a in approvals],
        "affected_units": hold_units_of(session, h),
        "category": h.category, "code": h.code, "released": iso(h.released),
        "released_by": h.released_by.split(",") if h.released_by else [],
        "release_reason": h.release_reason, "decision": h.decision,
        "shipped": list(placed.shipped) if placed is not None else [],
        "step": h.step, "station": h.station,
    }


def hold_view(session: Session, hold_id: str) -> dict[str, Any]:
    """One hold as `holds` lists it (read afresh: the projections update rows directly)."""
    h = session.get(Hold, hold_id, populate_existing=True)
    if h is None:
        raise UnknownHold(f"no hold {hold_id}; `linetrace holds --all` lists them")
    return _view(session, h)


def list_holds(session: Session, all_: bool = False) -> list[dict[str, Any]]:
    """The holds in force (every hold with `all_`), in the order they were placed."""
    q = select(Hold).order_by(Hold.placed_seq, Hold.hold_id).execution_options(
        populate_existing=True)
    if not all_:
        q = q.where(Hold.state == "active")
    return [_view(session, h) for h in session.scalars(q).all()]
