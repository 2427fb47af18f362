"""Genealogy queries: units, trace, work in progress. They return the read models of
`views.py` (the CLI's --json contract, field for field)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, bindparam, func, or_, select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .holds import NOT_STOPPED, load_holds_in_force, stopped_units
from .models import EventRow, Firmware, Hold, HoldUnit, Install, LotSerial, Measurement
from .models import Operation, RouteViolation, TestRun, Unit
from .sql import in_values
from .views import (
    DefectFound, FirmwareRecord, HistoryEntry, InstalledPart, MeasurementRecord,
    OperationRecord, PartPlacement, PartWhereabouts, RemovedPart, RouteViolationRecord,
    TestCheck, TestRecord, Trace, UnitHold, UnitRoute, UnitStatus, WipCount,
)

ON_HOLD = "on_hold"
UNIT_STATES = ("in_progress", ON_HOLD, "in_repair", "packed", "shipped", "scrapped", "installed")
_CHUNK = 400


class UnknownUnit(LedgerError):
    code = "unit.unknown"


def iso(t: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as every --json time (naive times are UTC)."""
    if t is None:
        return None
    if t.tzinfo is not None:
        if t.utcoffset():
            t = t.astimezone(UTC)
        t = t.replace(tzinfo=None)
    return t.isoformat(timespec="milliseconds") + "Z"


def list_units(session: Session, *, kind: str | None = None, state: str | None = None,
               product: str | None = None) -> list[UnitStatus]:
    """Units in serial order. A unit an active hold stops shows `on_hold` (worked out on
    read, `holds.stopped_units`: the units table keeps the state its route gives it)."""
    held = set(stopped_units(session))
    q = select(Unit).order_by(Unit.serial)
    if kind:
        q = q.where(Unit.kind == kind)
    if state and state != ON_HOLD:
        q = q.where(Unit.state == state)
    if product:
        q = q.where(Unit.product == product)
    if state == ON_HOLD:
        serials = sorted(held)
        found = [u for i in range(0, len(serials), _CHUNK) for u in session.scalars(
            q.where(in_values(session, Unit.serial, serials[i:i + _CHUNK])))]
        units: Sequence[Unit] = sorted(found, key=lambda u: u.serial)
    else:
        units = [u for u in session.scalars(q) if not (state and u.serial in held)]
    return [UnitStatus(serial=u.serial, product=u.product, kind=u.kind,
                       state=ON_HOLD if u.serial in held else u.state, step=u.step,
                       updated=iso(u.updated)) for u in units]


def _on_hold(session: Session, serial: str, state: str, work_order: str | None,
             parts: Sequence[Any]) -> bool:
    """Does an active hold stop this unit (its parts: those installed in it now, through
    sub-assemblies)? The check `holds.stopped_units` makes for every unit, for one."""
    if state in NOT_STOPPED:
        return False
    in_force = load_holds_in_force(session)
    if not in_force.any():
        return False
    lots = {p.lot for p in parts} | set(session.scalars(
        select(LotSerial.lot).where(LotSerial.serial == serial)))
    return bool(in_force.for_unit(serial, work_order=work_order, lots=lots,
                                  mpns={p.mpn for p in parts}, station=None))


def unit_holds(session: Session, serial: str, work_order: str | None) -> list[UnitHold]:
    """Each hold that stopped the unit (named it, or held its work order), in order placed."""
    cond = or_(Hold.hold_id.in_(select(HoldUnit.hold_id).where(HoldUnit.serial == serial)),
               (Hold.scope == "unit") & (Hold.target == serial))
    if work_order:
        cond = or_(cond, (Hold.scope == "work_order") & (Hold.target == work_order))
    return [UnitHold(id=h.hold_id, reason=h.reason, code=h.code, state=h.state,
                     placed=iso(h.placed), released=iso(h.released), decision=h.decision)
            for h in session.scalars(select(Hold).where(cond)
                                     .order_by(Hold.placed_seq, Hold.hold_id))]


def unit_violations(session: Session, serial: str) -> list[RouteViolationRecord]:
    """What the route check found wrong with the unit's events, in time order."""
    return [RouteViolationRecord(step=v.step, station=v.station, code=v.code,
                                 message=v.message, time=iso(v.time))
            for v in session.scalars(select(RouteViolation).where(RouteViolation.serial == serial)
                                     .order_by(RouteViolation.time, RouteViolation.id))]


_PART_COLUMNS = (Install.unit, Install.serial, Install.mpn, Install.lot, Install.parent,
                 Install.slot, Install.ref, Install.category, Install.qty, Install.station,
                 Install.installed_at, Install.removed_at, Install.removed_reason,
                 Install.removed_event)


def _part(row: Any) -> InstalledPart:
    return InstalledPart(serial=row.serial, mpn=row.mpn, lot=row.lot, parent=row.parent,
                         slot=row.slot, ref=row.ref, category=row.category, qty=row.qty,
                         station=row.station, installed=iso(row.installed_at))


def _removed_part(r: Any) -> RemovedPart:
    return RemovedPart(serial=r.serial, mpn=r.mpn, lot=r.lot, parent=r.parent, slot=r.slot,
                       ref=r.ref, category=r.category, qty=r.qty, station=r.station,
                       installed=iso(r.installed_at), removed=iso(r.removed_at),
                       reason=r.removed_reason, removed_event=r.removed_event)


# Statements built once: a select() built per call costs more in Python than a warm trace's
# database work (construction, cache key, result-column adaptation to the new objects).
_S: BindParameter[str] = bindparam("serial")
_UNIT = select(Unit.serial, Unit.product, Unit.kind, Unit.state, Unit.step, Unit.work_order,
               Unit.order, Unit.carton, Unit.installed_in, Unit.updated, Unit.route_product,
               Unit.route_revision, Unit.route_sha256).where(Unit.serial == _S)
# Each install joined to `units`: `sub_unit` says its serial is a sub-assembly (a PCBA).
_PARTS = (select(*_PART_COLUMNS, Install.id, Unit.serial.label("sub_unit"))
          .outerjoin(Unit, Unit.serial == Install.serial))
_OWN_PARTS = _PARTS.where(Install.unit == _S).order_by(Install.id)
_SUB_PARTS = (_PARTS.where(Install.unit.in_(bindparam("units", expanding=True)),
                           Install.removed_at.is_(None)).order_by(Install.id))
_OPERATIONS = (select(Operation.step, Operation.operation, Operation.station, Operation.operator,
                      Operation.result, Operation.started, Operation.completed)
               .where(Operation.serial == _S).order_by(Operation.started, Operation.id))
_FIRMWARE = (select(Firmware.component, Firmware.image, Firmware.version, Firmware.sha256,
                    Firmware.target, Firmware.station, Firmware.time)
             .where(Firmware.serial == _S).order_by(Firmware.time, Firmware.id))
# A unit's tests, each with its measurements (the test's columns repeated on each of them).
_TESTS = (select(TestRun.id, TestRun.kind, TestRun.method, TestRun.result, TestRun.station,
                 TestRun.time, TestRun.detail, Measurement.id.label("m_id"), Measurement.test,
                 Measurement.name, Measurement.value, Measurement.unit, Measurement.expected,
                 Measurement.min, Measurement.max)
          .outerjoin(Measurement, Measurement.test_id == TestRun.id)
          .where(TestRun.serial == _S).order_by(TestRun.time, TestRun.id, Measurement.id))
_HISTORY = (select(EventRow.time, EventRow.type, EventRow.source, EventRow.event_id,
                   EventRow.value)
            .where(EventRow.subject == _S, EventRow.topic != "line.telemetry")
            .order_by(EventRow.time, EventRow.seq))


def _installs(conn: Connection, serial: str) -> tuple[list[Any], list[Any]]:
    """The unit's parts now installed (level by level: its own, then those of sub-assemblies
    installed in it) and the parts removed from the unit itself, in their trace order.

    One statement per level of nesting, so a server with a PCBA costs two however many parts
    it has: the unit's own installs come removed ones and all (split here, instead of a query
    of their own), each row saying whether its serial is a sub-assembly.
    """
    rows = conn.execute(_OWN_PARTS, {"serial": serial}).all()
    removed = sorted((r for r in rows if r.removed_at is not None),
                     key=lambda r: (r.removed_at, r.id))
    level: Sequence[Any] = [r for r in rows if r.removed_at is None]
    parts: list[Any] = []
    seen = {serial}
    while level:
        parts.extend(level)
        frontier = sorted({r.sub_unit for r in level if r.sub_unit and r.sub_unit not in seen})
        if not frontier:
            break
        seen.update(frontier)
        level = conn.execute(_SUB_PARTS, {"units": frontier}).all()
    return parts, removed


def trace(session: Session, serial: str) -> Trace:
    # Selected columns on the session's connection, not ORM entities: seven statements, no
    # identity map (docs/benchmarks.md, "Ledger at plant scale: diagnosis").
    conn = session.connection()
    key = {"serial": serial}
    unit = conn.execute(_UNIT, key).first()
    if unit is None:
        raise UnknownUnit(_not_a_unit(session, serial))
    parts, removed = _installs(conn, serial)
    held = _on_hold(session, serial, unit.state, unit.work_order, parts)
    return Trace(
        serial=unit.serial,
        product=unit.product,
        kind=unit.kind,
        state=ON_HOLD if held else unit.state,
        step=unit.step,
        work_order=unit.work_order,
        order=unit.order,
        carton=unit.carton,
        installed_in=unit.installed_in,
        updated=iso(unit.updated),
        parts=[_part(r) for r in parts],
        operations=[OperationRecord(step=o.step, operation=o.operation, station=o.station,
                                    operator=o.operator, result=o.result,
                                    started=iso(o.started), completed=iso(o.completed))
                    for o in conn.execute(_OPERATIONS, key)],
        removed=[_removed_part(r) for r in removed],
        tests=_tests(conn, serial),
        firmware=[FirmwareRecord(component=f.component, image=f.image, version=f.version,
                                 sha256=f.sha256, target=f.target, station=f.station,
                                 time=iso(f.time))
                  for f in conn.execute(_FIRMWARE, key)],
        history=history(session, serial),
        route=(UnitRoute(product=unit.route_product, revision=unit.route_revision,
                         sha256=unit.route_sha256)
               if unit.route_product and unit.route_revision and unit.route_sha256 else None),
        holds=unit_holds(session, serial, unit.work_order),
        violations=unit_violations(session, serial),
    )


def part_whereabouts(session: Session, serial: str) -> PartWhereabouts | None:
    """Where a part serial (a GPU, a baseboard, a PCBA) is installed now and was before, and
    the lots it was received in; None if the ledger never saw the serial as a part."""
    rows = session.execute(select(Install.unit, Install.parent, Install.slot, Install.ref,
                                  Install.installed_at, Install.removed_at,
                                  Install.removed_reason)
                           .where(Install.serial == serial)
                           .order_by(Install.installed_at, Install.id)).all()
    lots = list(session.scalars(select(LotSerial.lot).where(LotSerial.serial == serial)
                                .order_by(LotSerial.lot)))
    if not rows and not lots:
        return None
    placements = [PartPlacement(unit=r.unit, top_unit=_top_unit(session, r.unit),
                                parent=r.parent, slot=r.slot, ref=r.ref,
                                installed=iso(r.installed_at), removed=iso(r.removed_at),
                                reason=r.removed_reason) for r in rows]
    now = [p for p in placements if p.removed is None]
    return PartWhereabouts(serial=serial, lots=lots, installed=now[-1] if now else None,
                           past=[p for p in placements if p.removed is not None])


def _top_unit(session: Session, serial: str) -> str:
    """The outermost unit `serial` is installed in (a PCBA's server), or itself."""
    seen = {serial}
    while True:
        container = session.scalar(select(Unit.installed_in).where(Unit.serial == serial))
        if container is None or container in seen:
            return serial
        seen.add(container)
        serial = container


def _not_a_unit(session: Session, serial: str) -> str:
    """What to say when `trace` is asked for something that is not a unit."""
    where = part_whereabouts(session, serial)
    recall = f"`linetrace recall --part {serial}` lists every unit it has been in"
    if where is None:
        return f"no unit {serial!r} in the ledger; `linetrace units` lists them"
    if where.installed is not None:
        p = where.installed
        at = f"slot {p.slot}" if p.slot is not None else f"ref {p.ref}" if p.ref else None
        inside = f"{p.unit}" + (f" (in {p.top_unit})" if p.top_unit != p.unit else "")
        return (f"{serial} is a part, not a unit: installed in {inside} on {p.parent}"
                + (f" at {at}" if at else "") + f" since {p.installed}; "
                f"`linetrace trace {p.top_unit}` traces that unit, {recall}")
    if where.past:
        p = where.past[-1]
        return (f"{serial} is a part, not a unit: removed from {p.unit} at {p.removed} "
                f"({p.reason}) and not installed since; {recall}")
    return (f"{serial} is a part, not a unit: received in lot {', '.join(where.lots)} and "
            f"never installed; `linetrace lots show {where.lots[0]}` shows the lot")


def _test_record(r: Any, ms: list[Any]) -> TestRecord:
    detail: dict[str, Any] = r.detail or {}
    measurements = [MeasurementRecord(test=m.test, name=m.name, value=m.value, unit=m.unit,
                                      expected=m.expected, min=m.min, max=m.max) for m in ms]
    if r.kind == "inspection":
        return TestRecord(kind=r.kind, method=r.method, result=r.result, station=r.station,
                          time=iso(r.time), measurements=measurements, defects=[
                              DefectFound(code=d["code"], category=d["category"],
                                          ref=d.get("ref"), confidence=d.get("confidence"))
                              for d in detail.get("defects", [])])
    return TestRecord(kind=r.kind, method=r.method, result=r.result, station=r.station,
                      time=iso(r.time), fixture=detail.get("fixture"), measurements=measurements,
                      tests=[TestCheck(name=t["name"], result=t["result"])
                             for t in detail.get("tests", [])])


def _tests(conn: Connection, serial: str) -> list[TestRecord]:
    """The unit's tests in time order, each with its measurements (one statement)."""
    rows = conn.execute(_TESTS, {"serial": serial})
    runs: dict[int, tuple[Any, list[Any]]] = {}
    for r in rows:
        ms = runs.setdefault(r.id, (r, []))[1]
        if r.m_id is not None:
            ms.append(r)
    return [_test_record(r, ms) for r, ms in runs.values()]


#: Fields that depend on where events landed in the log (leaf hashes), not on what happened.
#: Trace leaves them out so the same line history always reads the same; `linetrace evidence`
#: carries them, with the proofs that make them meaningful.
LOG_POSITION_FIELDS = frozenset({"chain_head"})
#: An event's JSON can hold one of those fields only if its bytes name it or escape a
#: character (`\u0063hain_head`); most events do neither and skip the walk that removes them.
_LOG_POSITION_MARKS = re.compile(b"|".join([*(re.escape(f'"{f}"'.encode())
                                               for f in sorted(LOG_POSITION_FIELDS)), rb"\\u"]))


def _without_log_positions(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _without_log_positions(v) if isinstance(v, (dict, list)) else v
                for k, v in data.items() if k not in LOG_POSITION_FIELDS}
    if isinstance(data, list):
        return [_without_log_positions(v) if isinstance(v, (dict, list)) else v for v in data]
    return data


def history(session: Session, serial: str) -> list[HistoryEntry]:
    """Every accepted event about the unit, in event-time order: who, what, when, where."""
    rows = session.connection().execute(_HISTORY, {"serial": serial}).all()
    out: list[HistoryEntry] = []
    for t, typ, source, event_id, value in rows:
        data = json.loads(value)["data"]
        if _LOG_POSITION_MARKS.search(value):
            data = _without_log_positions(data)
        out.append(HistoryEntry(time=iso(t), type=typ, station=source, event_id=event_id,
                                operator=data.get("operator"), step=data.get("step"), data=data))
    return out


_WIP_STATES = ("in_progress", ON_HOLD, "in_repair")


def work_in_progress(session: Session) -> list[WipCount]:
    """Units not yet in a final state, counted by current step and state (a unit an active
    hold stops counts as `on_hold`)."""
    counts: dict[tuple[str, int | None, str], int] = {
        (k, st, state): n for k, st, state, n in session.execute(
            select(Unit.kind, Unit.step, Unit.state, func.count())
            .where(Unit.state.in_(_WIP_STATES)).group_by(Unit.kind, Unit.step, Unit.state))}
    held = sorted(stopped_units(session))
    for i in range(0, len(held), _CHUNK):
        for k, st, state in session.execute(select(Unit.kind, Unit.step, Unit.state).where(
                in_values(session, Unit.serial, held[i:i + _CHUNK]),
                Unit.state.in_(_WIP_STATES))):
            counts[(k, st, state)] -= 1
            counts[(k, st, ON_HOLD)] = counts.get((k, st, ON_HOLD), 0) + 1
    return [WipCount(kind=k, step=st, state=state, units=n)
            for (k, st, state), n in sorted(counts.items(), key=lambda x: (
                x[0][0], x[0][1] is not None, x[0][1] or 0, x[0][2])) if n > 0]
