"""The ERP messages the ledger's events cause, for the outbox (`erp.outbound`, docs/erp.md).

`messages_for(session, events)` = `decide_messages(events, load_state(session, events))`:
`load_state` reads what the messages need (a few queries per batch, none for a batch without
an ERP-relevant event), `decide_messages` is pure. The worker's ERP stage calls the two halves;
the CLI-side hold actions call `messages_for` for the hold events they record.

What causes what (one message per unit):
- `work.completed` Completed or Skipped at a reporting step -> `erp.yield`. Reporting steps are
  the route's flow steps (`steps`, not `repair_steps`) up to the last production step: the
  step at the `pack` station type, or the route's last step when it has none (a sub-assembly).
  Steps after it (ship) are a delivery, not an operation of the order. A unit is confirmed
  once per step: its first completion there; a step done again after a repair is not
  confirmed again (ERP would count the unit twice). The yield at the last production step
  carries `final_confirmation`. Its components are the parts the unit's own events installed
  after its previous confirmation, up to this one, and not removed by then (backflush);
  `removed`: parts reported at an earlier confirmation and taken out since.
- `unit.sealed` -> `erp.goods_receipt`: the parts as the sealed HBOM states them (exact bytes
  in `hboms`), with the order, carton and tamper seal of the `unit.packed` it answers.
- `unit.scrapped` -> `erp.scrap` (a `unit.repaired` with result Scrap is reported through the
  `unit.scrapped` that stations send with it).
- `hold.placed` -> `erp.hold` per unit in its `units`; `hold.released` -> `erp.release` per
  unit in the hold's `hold_units`; `hold.disposition` -> `erp.release` for its unit. A unit
  that joins a hold later (the route stage joins an install from a held lot to the lot's
  hold and tells the station with `command.hold`) -> `erp.hold` from that `command.hold`,
  under the id the hold's placement would have given it (cause = the `hold.placed`), so the
  unit's later stations, told again, add no second notice.

A unit's work order at a cause is that of its latest operation started at or before the
cause's time (`operations.work_order`, from `work.started`), else `units.work_order`; a unit
with neither gets no ERP message. Everything a message says comes from its cause and from
the unit's own history up to the cause's time, so a redo, a retried stage or a replay in
another partition order produce the same bytes under the same id, and `enqueue` ignores them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event, parse_time
from linetrace.schemas.erp import (
    Component, ErpMessage, GoodsReceipt, HoldNotice, ReleaseNotice, RemovedComponent, Scrap,
    Yield, encode_message, schema_urn,
)
from linetrace.schemas.routes import Route, RouteBook, packaged_routes
from linetrace.schemas.topics import ERP_OUTBOUND

from . import outbox
from .models import EventRow, Hold, HoldUnit, Install, Operation, Unit
from .proof import hbom as h
from .sql import in_values
from .system_events import SealedHbom
from .unit_state import aware

KIND = "erp"
CONFIRMED = ("Completed", "Skipped")
CAUSES = frozenset({"work.completed", "unit.sealed", "unit.scrapped", "hold.placed",
                    "hold.released", "hold.disposition", "command.hold"})
_CHUNK = 400


@dataclass(frozen=True)
class Op:
    """One operation of a unit (`operations` row), in the order it was started (`id`)."""

    serial: str
    id: int
    transaction_id: str
    step: int
    operation: str
    station: str
    operator: str | None
    work_order: str | None
    started: datetime | None
    completed: datetime | None
    result: str | None


@dataclass(frozen=True)
class UnitInfo:
    product: str | None
    work_order: str | None
    route: Route | None
    route_revision: str | None


@dataclass(frozen=True)
class Part:
    """An `installs` row of a unit: the part, and when it went in and came out."""

    component: Component
    installed_at: datetime
    removed_at: datetime | None
    removed_reason: str | None


@dataclass
class ErpState:
    """What `decide_messages` needs, read by `load_state`."""

    units: dict[str, UnitInfo] = field(default_factory=dict)
    ops: dict[str, list[Op]] = field(default_factory=dict)
    parts: dict[str, list[Part]] = field(default_factory=dict)
    hboms: dict[str, bytes] = field(default_factory=dict)  # sealed event id -> HBOM bytes
    packed: dict[str, b.UnitPacked] = field(default_factory=dict)  # unit.packed id -> body
    hold_units: dict[str, list[str]] = field(default_factory=dict)  # hold id -> serials
    #: hold id -> its `hold.placed`, for the holds a `command.hold` of the events names
    placed: dict[str, Event] = field(default_factory=dict)


def relevant(events: Iterable[Event]) -> list[Event]:
    """The events that may cause an ERP message."""
    return [e for e in events if e.type in CAUSES and not (
        isinstance(e.body, b.WorkCompleted) and e.body.result not in CONFIRMED)]


def messages_for(session: Session, events: Sequence[Event], *,
                 routes: RouteBook | None = None) -> list[outbox.Message]:
    """Every ERP message the given stored events cause (see the module docstring)."""
    return decide_messages(events, load_state(session, events, routes))


# --- load: the reads ---------------------------------------------------------------------


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def load_state(session: Session, events: Sequence[Event], routes: RouteBook | None = None
               ) -> ErpState:
    """Read what the ERP messages of `events` need (no query when none can cause one)."""
    state = ErpState()
    causes = relevant(events)
    if not causes:
        return state
    book: RouteBook = routes or session.info.get("routes") or packaged_routes()
    released = sorted({e.body.hold_id for e in causes if isinstance(e.body, b.HoldReleased)})
    for ids in _chunks(released):
        for hold_id, serial in session.execute(
                select(HoldUnit.hold_id, HoldUnit.serial)
                .where(in_values(session, HoldUnit.hold_id, ids))):
            state.hold_units.setdefault(hold_id, []).append(serial)
    for named in state.hold_units.values():
        named.sort()
    _load_placements(session, state, sorted({
        e.body.hold_id for e in causes
        if isinstance(e.body, b.CommandHold) and e.body.hold_id is not None}))
    wanted = sorted(set(_serials(causes, state)))
    for serials in _chunks(wanted):
        for r in session.execute(select(Unit.serial, Unit.product, Unit.kind, Unit.work_order,
                                        Unit.route_product, Unit.route_revision)
                                 .where(in_values(session, Unit.serial, serials))):
            route = book.routes.get(r.route_product) if r.route_product else None
            state.units[r.serial] = UnitInfo(None if r.product == "unknown" else r.product,
                                             r.work_order, route, r.route_revision)
        for o in session.execute(select(*_OP_COLUMNS).where(
                in_values(session, Operation.serial, serials)).order_by(Operation.id)):
            state.ops.setdefault(o.serial, []).append(Op(
                o.serial, o.id, o.transaction_id, o.step, o.operation, o.station, o.operator,
                o.work_order, _utc(o.started), _utc(o.completed), o.result))
    windows = [found for e in causes if isinstance(e.body, b.WorkCompleted)
               and (found := _confirmation(e.subject, e.body, state)) is not None]
    starts = [_since(confirmed, n) for confirmed, n in windows]
    _load_parts(session, state, sorted({confirmed[n].serial for confirmed, n in windows}),
                None if None in starts or not starts else min(s for s in starts if s))
    _load_seals(session, state, [e for e in causes if isinstance(e.body, b.UnitSealed)])
    return state


def _serials(causes: Sequence[Event], state: ErpState) -> Iterable[str]:
    for e in causes:
        body = e.body
        if isinstance(body, b.HoldPlaced):
            yield from body.units
        elif isinstance(body, b.HoldReleased):
            yield from state.hold_units.get(body.hold_id, ())
        elif isinstance(body, (b.HoldDisposition, b.CommandHold)):
            yield body.unit
        else:
            yield e.subject


def _load_placements(session: Session, state: ErpState, hold_ids: Sequence[str]) -> None:
    """The `hold.placed` event of each hold named (by a `command.hold`)."""
    for ids in _chunks(hold_ids):
        placed = {r[0]: r[1] for r in session.execute(select(
            Hold.placed_event, Hold.hold_id).where(in_values(session, Hold.hold_id, ids)))}
        if not placed:
            continue
        for event_id, value in session.execute(select(EventRow.event_id, EventRow.value).where(
                EventRow.source == SYSTEM_SOURCE, in_values(session, EventRow.event_id,
                                                          sorted(placed)))):
            state.placed[placed[event_id]] = decode_stored_event(value)


def _utc(t: datetime | None) -> datetime | None:
    return aware(t) if t is not None else None


_OP_COLUMNS = (Operation.serial, Operation.id, Operation.transaction_id, Operation.step,
               Operation.operation, Operation.station, Operation.operator, Operation.work_order,
               Operation.started, Operation.completed, Operation.result)
_INSTALL_COLUMNS = (Install.unit, Install.serial, Install.lot, Install.mpn, Install.pn,
                    Install.category, Install.qty, Install.slot, Install.ref, Install.parent,
                    Install.installed_at, Install.removed_at, Install.removed_reason)


def _load_parts(session: Session, state: ErpState, serials: Sequence[str],
                after: datetime | None) -> None:
    """The installs of `serials` that can fall into a confirmation window starting at or
    after `after` (installed or removed later; None: all)."""
    for chunk in _chunks(serials):
        q = select(*_INSTALL_COLUMNS).where(in_values(session, Install.unit, chunk))
        if after is not None:
            q = q.where((Install.installed_at > after) | (Install.removed_at > after))
        for i in session.execute(q.order_by(Install.id)):
            location = f"slot {i.slot}" if i.slot is not None else i.ref
            state.parts.setdefault(i.unit, []).append(Part(
                Component(serial=i.serial, lot=i.lot, mpn=i.mpn, pn=i.pn, category=i.category,
                          qty=i.qty if i.qty is not None else 1, location=location,
                          parent=i.parent),
                aware(i.installed_at), _utc(i.removed_at), i.removed_reason))


def _load_seals(session: Session, state: ErpState, seals: Sequence[Event]) -> None:
    if not seals:
        return
    ids = [e.id for e in seals]
    state.hboms.update((str(r[0]), bytes(r[1])) for r in session.execute(
        select(SealedHbom.sealed_event, SealedHbom.data)
        .where(in_values(session, SealedHbom.sealed_event, ids))))
    for e in seals:  # the unit.packed a seal answers has the seal's time (index on both)
        assert isinstance(e.body, b.UnitSealed)
        value = session.scalar(select(EventRow.value).where(
            EventRow.subject == e.subject, EventRow.time == parse_time(e.envelope.time),
            EventRow.event_id == e.body.packed))
        if value is not None:
            body = decode_stored_event(value).body
            if isinstance(body, b.UnitPacked):
                state.packed[e.body.packed] = body


# --- decide: pure ------------------------------------------------------------------------


def decide_messages(events: Sequence[Event], state: ErpState) -> list[outbox.Message]:
    """The ERP messages of `events`, in their order (pure: a function of its arguments)."""
    out: list[outbox.Message] = []
    for e in relevant(events):
        body = e.body
        if isinstance(body, b.WorkCompleted):
            out += _message(_yield(e, body, state))
        elif isinstance(body, b.UnitSealed):
            out += _message(_goods_receipt(e, body, state))
        elif isinstance(body, b.UnitScrapped):
            out += _message(_scrap(e, body, state))
        elif isinstance(body, b.HoldPlaced):
            for serial in dict.fromkeys(body.units):
                out += _message(_hold(e, body, serial, state))
        elif isinstance(body, b.HoldReleased):
            for serial in state.hold_units.get(body.hold_id, ()):
                out += _message(_release(e, serial, body.hold_id, "released", body.reason,
                                         body.released_by, state))
        elif isinstance(body, b.HoldDisposition):
            out += _message(_release(e, body.unit, body.hold_id, body.decision, body.reason,
                                     [body.decided_by], state))
        elif isinstance(body, b.CommandHold) and body.hold_id is not None:
            out += _message(_joined(e, body, state))
    return out


def _message(m: ErpMessage | None) -> list[outbox.Message]:
    if m is None:
        return []
    msg_type = _TYPE_OF[type(m)]
    return [outbox.Message(kind=KIND, topic=ERP_OUTBOUND, key=m.work_order.encode(),
                           value=encode_message(m), message_id=m.message_id,
                           headers=[("content-type", b"application/json"),
                                    ("linetrace-type", msg_type.encode())])]


_TYPE_OF: dict[type[ErpMessage], str] = {
    Yield: "erp.yield", GoodsReceipt: "erp.goods_receipt", Scrap: "erp.scrap",
    HoldNotice: "erp.hold", ReleaseNotice: "erp.release"}


def message_id(message_type: str, work_order: str, serial: str, cause: str) -> str:
    """The outbox id of one ERP message: (kind, key = work order, cause = type, unit, event)."""
    return outbox.message_id(KIND, work_order.encode(), f"{message_type}\x00{serial}\x00{cause}")


def _header(message_type: str, e: Event, serial: str, work_order: str, state: ErpState
            ) -> dict[str, Any]:
    """The fields every ERP message has."""
    unit = state.units.get(serial)
    return {"schema": schema_urn(message_type),
            "message_id": message_id(message_type, work_order, serial, e.id),
            "cause": e.id, "cause_type": e.type, "time": e.envelope.time,
            "posting_date": e.envelope.time[:10], "serial": serial, "work_order": work_order,
            "product": unit.product if unit is not None else None}


def _latest_op(state: ErpState, serial: str, at: datetime, route: Route | None = None
               ) -> Op | None:
    """The unit's latest operation started at or before `at` (at a flow step of `route`,
    when given)."""
    found = None
    for op in state.ops.get(serial, ()):
        if op.started is not None and op.started <= at and (
                route is None or any(s.step == op.step for s in route.steps)):
            if found is None or (op.started, op.id) >= (found.started, found.id):
                found = op
    return found


def _work_order(state: ErpState, serial: str, at: datetime) -> str | None:
    op = _latest_op(state, serial, at)
    if op is not None and op.work_order:
        return op.work_order
    unit = state.units.get(serial)
    return unit.work_order if unit is not None else None


def reporting_steps(route: Route) -> list[int]:
    """The flow steps up to the last production step (the `pack` step, else the last)."""
    steps = [s.step for s in route.steps]
    pack = [i for i, s in enumerate(route.steps) if s.station_type == "pack"]
    return steps[: pack[-1] + 1] if pack else steps


def _confirmations(ops: Sequence[Op], steps: Sequence[int]) -> list[Op]:
    """The unit's first completion at each reporting step, in the order completed."""
    first: dict[int, Op] = {}
    for op in ops:  # in the order started
        if op.step in steps and op.result in CONFIRMED and op.completed is not None:
            first.setdefault(op.step, op)
    return sorted(first.values(), key=lambda o: (o.completed, o.id))


def _confirmation(serial: str, body: b.WorkCompleted, state: ErpState
                  ) -> tuple[list[Op], int] | None:
    """The unit's confirmations and the index of the one `body` completes; None when it
    confirms nothing (not a reporting step, not the first completion there, never started,
    or the unit has no route)."""
    unit = state.units.get(serial)
    if unit is None or unit.route is None:
        return None
    confirmed = _confirmations(state.ops.get(serial, ()), reporting_steps(unit.route))
    for n, op in enumerate(confirmed):
        if op.transaction_id == body.transaction_id and op.step == body.step:
            return confirmed, n
    return None


def _since(confirmed: Sequence[Op], n: int) -> datetime | None:
    """Where the window of confirmation `n` starts: the previous one's completion."""
    return confirmed[n - 1].completed if n > 0 else None


def _yield(e: Event, body: b.WorkCompleted, state: ErpState) -> Yield | None:
    serial = e.subject
    unit = state.units.get(serial)
    found = _confirmation(serial, body, state)
    if unit is None or unit.route is None or found is None:
        return None
    confirmed, n = found
    steps = reporting_steps(unit.route)
    op = confirmed[n]
    assert op.completed is not None
    since = _since(confirmed, n)
    end = op.completed
    parts = state.parts.get(serial, ())
    consumed = [p.component for p in parts if (since is None or p.installed_at > since)
                and p.installed_at <= end and (p.removed_at is None or p.removed_at > end)]
    removed = [RemovedComponent(**_fields(p.component), reason=p.removed_reason or "Other")
               for p in parts if since is not None and p.installed_at <= since
               and p.removed_at is not None and since < p.removed_at <= end]
    work_order = op.work_order or unit.work_order
    if not work_order:
        return None
    step = unit.route.step(op.step)
    return Yield(**_header("erp.yield", e, serial, work_order, state), step=op.step,
                 operation=step.operation, work_center=step.station_type, station=op.station,
                 transaction_id=op.transaction_id, result=body.result,  # type: ignore[arg-type]
                 yield_qty=1, scrap_qty=0, unit_of_measure="EA",
                 final_confirmation=op.step == steps[-1], operator=op.operator,
                 route_revision=unit.route_revision, components=consumed, removed=removed)


def _fields(c: Component) -> dict[str, Any]:
    return {f: getattr(c, f) for f in c.__struct_fields__}


def hbom_components(data: bytes) -> tuple[str | None, list[Component]]:
    """The product (the HBOM's subject) and every part an HBOM states, in its order, each with
    the serial it is mounted on (`parent`); firmware is left out."""
    doc = json.loads(data)
    root = doc["metadata"]["component"]
    unit = _props(root)[h.SERIAL]
    out: list[Component] = []

    def walk(comps: list[dict[str, Any]], parent: str) -> None:
        for c in comps:
            if c.get("type") == "firmware":
                continue
            p = _props(c)
            qty = p.get(h.QTY)
            out.append(Component(serial=p.get(h.SERIAL), lot=p.get(h.LOT, ""),
                                 mpn=p.get(h.MPN, ""), pn=p.get(h.PN),
                                 category=p.get(h.CATEGORY),
                                 qty=int(qty) if qty is not None else 1,
                                 location=p.get(h.LOCATION), parent=parent))
            walk(c.get("components", []), p.get(h.SERIAL) or parent)

    walk(doc.get("components", []), unit)
    name = root.get("name")
    return (str(name) if name else None), out


def _props(comp: dict[str, Any]) -> dict[str, str]:
    return {str(p["name"]): str(p["value"]) for p in comp.get("properties", [])}


def _goods_receipt(e: Event, body: b.UnitSealed, state: ErpState) -> GoodsReceipt | None:
    data = state.hboms.get(e.id)
    work_order = _work_order(state, e.subject, parse_time(e.envelope.time))
    if data is None or not work_order:
        return None
    product, parts = hbom_components(data)
    header = _header("erp.goods_receipt", e, e.subject, work_order, state)
    material = header["product"] or product
    if not material:
        return None
    packed = state.packed.get(body.packed)
    return GoodsReceipt(**header, movement_type="101", material=material, qty=1,
                        unit_of_measure="EA", packed=body.packed, sealed=e.id,
                        hbom_sha256=body.hbom_sha256,
                        sales_order=packed.order if packed is not None else None,
                        carton=packed.carton if packed is not None else None,
                        tamper_seal=body.tamper_seal, components=parts)


def _scrap(e: Event, body: b.UnitScrapped, state: ErpState) -> Scrap | None:
    at = parse_time(e.envelope.time)
    work_order = _work_order(state, e.subject, at)
    if not work_order:
        return None
    unit = state.units.get(e.subject)
    route = unit.route if unit is not None else None
    last = _latest_op(state, e.subject, at)
    flow = _latest_op(state, e.subject, at, route) if route is not None else last
    operation = work_center = None
    if flow is not None and route is not None:
        operation, work_center = route.step(flow.step).operation, route.step(flow.step).station_type
    elif flow is not None:
        operation = flow.operation
    return Scrap(**_header("erp.scrap", e, e.subject, work_order, state), reason=body.reason,
                 scrap_qty=1, unit_of_measure="EA", station=e.source,
                 step=flow.step if flow is not None else None, operation=operation,
                 work_center=work_center, scrapped_at_step=last.step if last is not None else None)


def _hold(e: Event, body: b.HoldPlaced, serial: str, state: ErpState) -> HoldNotice | None:
    work_order = _work_order(state, serial, parse_time(e.envelope.time))
    if not work_order:
        return None
    return HoldNotice(**_header("erp.hold", e, serial, work_order, state),
                      hold_id=body.hold_id, scope=body.scope, target=body.target,
                      reason=body.reason, category=body.category, code=body.code,
                      placed_by=body.placed_by, step=body.step, station=body.station)


def _joined(e: Event, body: b.CommandHold, state: ErpState) -> HoldNotice | None:
    """The hold notice of a unit that joined a hold after it was placed (None: the unit was
    named at placement, so the `hold.placed` gave its notice)."""
    placed = state.placed.get(body.hold_id or "")
    if placed is None or not isinstance(placed.body, b.HoldPlaced) \
            or body.unit in placed.body.units:
        return None
    notice = _hold(e, placed.body, body.unit, state)
    if notice is None:
        return None
    return msgspec.structs.replace(notice, message_id=message_id(
        "erp.hold", notice.work_order, body.unit, placed.id))


def _release(e: Event, serial: str, hold_id: str, decision: str, reason: str | None,
             released_by: Sequence[str], state: ErpState) -> ReleaseNotice | None:
    work_order = _work_order(state, serial, parse_time(e.envelope.time))
    if not work_order:
        return None
    return ReleaseNotice(**_header("erp.release", e, serial, work_order, state),
                         hold_id=hold_id, decision=decision,  # type: ignore[arg-type]
                         reason=reason, released_by=list(released_by))
