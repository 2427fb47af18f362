"""Dispositions: a quality user decides what happens to a unit held for one.

A unit that fails after its route's `max_loops` repairs, or that a repair could not repair, is
held for a disposition (`holds.is_disposition_code`). The decision (scrap, use-as-is or
another repair, always with a reason) is the user's signed statement, recorded as
`hold.disposition`, which ends the hold; a `command.route` to the unit's station sends it on:
scrap and repair to the repair step of the failed step, use-as-is to the step after it.
"""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.routes import Route, RouteBook
from linetrace.schemas.statements import read_statement

from .db import Ledger
from .hold_actions import (
    HoldError,
    HoldOutcome,
    Recorder,
    check_details,
    command_cause,
    recorded_again,
    unit_station,
)
from .hold_views import hold_view
from .holds import is_disposition_code
from .models import Hold, HoldUnit, Operation, Unit
from .users import verify_user_statement

DISPOSITION_ROLES = ("quality",)
DECISIONS = ("scrap", "use-as-is", "repair")


def disposition_hold(session: Session, serial: str) -> Hold | None:
    """The unit's active hold that waits for a disposition (the oldest, if several)."""
    named = select(HoldUnit.hold_id).where(HoldUnit.serial == serial)
    holds = session.scalars(select(Hold).where(
        Hold.state == "active", or_(Hold.hold_id.in_(named),
                                    (Hold.scope == "unit") & (Hold.target == serial)))
        .order_by(Hold.placed_seq, Hold.hold_id)).all()
    return next((h for h in holds if is_disposition_code(h.code)), None)


def no_disposition(session: Session, serial: str) -> HoldError:
    """The refusal for a disposition of a unit no hold holds for one: an unknown unit, a unit
    on other holds (released, not disposed of) or a unit on no hold, each said as such."""
    unit = session.get(Unit, serial)
    if unit is None:
        return HoldError(f"no unit {serial!r} in the ledger; check the spelling (`linetrace "
                         "units` lists them)", code="hold.target_unknown")
    named = select(HoldUnit.hold_id).where(HoldUnit.serial == serial)
    others = session.scalars(select(Hold.hold_id).where(
        Hold.state == "active", or_(Hold.hold_id.in_(named),
                                    (Hold.scope == "unit") & (Hold.target == serial)))
        .order_by(Hold.placed_seq, Hold.hold_id)).all()
    if others:
        return HoldError(f"{serial} is not held for a disposition; its holds in force "
                         f"({', '.join(others)}) end with `linetrace hold release HOLD_ID`",
                         code="hold.no_disposition")
    return HoldError(f"{serial} ({unit.state}) is on no hold that waits for a disposition "
                     "(`linetrace holds` lists the holds in force)", code="hold.no_disposition")


def _failed_step(session: Session, route: Route, hold: Hold, unit: Unit) -> int:
    """The flow step the unit failed: the hold's step, or, where that is a repair step (a
    repair that could not repair), the latest flow step the unit worked at."""
    step = hold.step if hold.step is not None else unit.step
    if step is not None and any(s.step == step for s in route.steps):
        return step
    flow = {s.step for s in route.steps}
    for worked in session.scalars(select(Operation.step).where(Operation.serial == unit.serial)
                                  .order_by(Operation.started.desc(), Operation.id.desc())):
        if worked in flow:
            return int(worked)
    raise HoldError(f"cannot tell which step {unit.serial} failed (hold {hold.hold_id} names "
                    f"step {step}); it has no flow step on route {route.product}")


def route_for_disposition(route: Route, failed: int, held_at: int | None, decision: str
                          ) -> tuple[int, str]:
    """(step, station type) a disposition sends the unit to: scrap and repair to the repair
    step of the failed step (where the unit was held at a repair step, that one), use-as-is
    to the flow step after the failed one. Pure."""
    if decision == "use-as-is":
        after = route.next_step(failed)
        if after is None:
            raise HoldError(f"step {failed} is the last of route {route.product}: nothing "
                            "comes after it to use the unit as is")
        return after.step, after.station_type
    repair = (route.step(held_at) if held_at is not None and route.has_step(held_at)
              and route.step(held_at).is_repair else route.repair_for(failed))
    if repair is None:
        repair = route.repair_steps[0] if route.repair_steps else None
    if repair is None:
        raise HoldError(f"route {route.product} has no repair step to send the unit to")
    return repair.step, repair.station_type


def dispose(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, serial: str,
            decision: str, reason: str, *, routes: RouteBook, now: datetime | None = None
            ) -> HoldOutcome:
    """Record a quality user's disposition of a unit held for one (`hold.disposition`, which
    ends the hold) and the `command.route` that sends it on; ERP notices (a scrap)."""
    if decision not in DECISIONS:
        raise HoldError(f"decision {decision!r} is not one of {', '.join(DECISIONS)}")
    if not reason.strip():
        raise HoldError("a disposition needs a reason (--reason)")
    statement = read_statement(signed)
    request = statement.request
    with ledger.transaction() as session:
        signed_hold = statement.details.get("hold_id")
        if signed_hold and recorded_again(session, signed, signed_hold, ("hold.disposition",)):
            return HoldOutcome(hold_view(session, signed_hold), False, "already recorded")
        hold = disposition_hold(session, serial)
        if hold is None:
            raise no_disposition(session, serial)
        st = verify_user_statement(session, signed, action="hold.disposition", target=serial,
                                   roles=DISPOSITION_ROLES)
        check_details(st, {"decision": decision, "reason": reason, "hold_id": hold.hold_id})
        unit = session.get(Unit, serial)
        if unit is None or unit.route_product is None:
            raise HoldError(f"{serial} has no route recorded; cannot route it")
        route = routes.route(unit.route_product)
        failed = _failed_step(session, route, hold, unit)
        step, station_type = route_for_disposition(route, failed, hold.step, decision)
        rec = Recorder(session, plant, now or datetime.now(UTC))
        decided = rec.record("hold.disposition", hold.hold_id, b.HoldDisposition(
            hold_id=hold.hold_id, unit=serial, decision=decision,  # type: ignore[arg-type]
            reason=reason, decided_by=st.user, statement=signed), request)
        station = unit_station(session, serial)
        if station is not None:
            rec.record("command.route", station, b.CommandRoute(
                unit=serial, step=step, station_type=station_type,
                decision=decision, reason=reason, hold_id=hold.hold_id),  # type: ignore[arg-type]
                command_cause(request, serial))
        rec.erp_notices([decided])
        return HoldOutcome(hold_view(session, hold.hold_id), True,
                           f"{serial}: {decision} ({st.user}); hold {hold.hold_id} ended, unit "
                           f"routed to step {step} ({station_type})",
                           [e.type for e in rec.events])
