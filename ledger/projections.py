"""Derive the genealogy tables from accepted events (one function per event type).

Every function is given the already-stored event and appends to or stamps the derived rows;
nothing here reads Kafka. Replaying the events from `events` into empty genealogy tables
rebuilds them (a unit's route columns come from the routes in force during the replay).

A unit records the route it starts on when its product becomes known (its first
`work.started`), from the routes in force that the writer puts in `session.info["routes"]`
(a `RouteBook`); it keeps that route when the route files change later.

Every table here is a function of the events, never of the order in which partitions are
read: each row belongs to the unit (or lot, or station) whose own partition carries the
events that write it, except a sub-assembly's state, which its installs into other units
decide too; `unit_state` settles that once per batch (`settle`, called by the writer).

The append-only rows (operations, installs, tests with their measurements, firmware) are not
ORM objects: they are buffered as plain rows and inserted in bulk, in the order the events
made them (`flush_rows`), before anything reads those tables (an uninstall, `settle`, the end
of `project_batch`). Units are read for a whole batch in one query (`project_batch`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import datetime

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Table, bindparam, insert, select, update
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, parse_time
from linetrace.schemas.routes import RouteBook
from linetrace.schemas.signing import keyid_of, load_public_key, raw_public_key

from .models import Firmware, Install, Lot, LotSerial, Measurement, Operation, Station
from .models import StationKey, TestRun, Unit
from .holds import HOLD_PROJECTIONS, project_hold_event
from .users import USER_PROJECTIONS, project_user_event
from .console_key import CONSOLE_PROJECTIONS, project_console_event
from .verdicts import project_verdict
from .sql import in_values
from .unit_state import FINAL_STATES, REPAIR_STATION_TYPE, aware, mark, needs_settling
from .unit_state import route_state, settle_units


def _unit(session: Session, serial: str, t: datetime, *, product: str | None = None,
          kind: str | None = None) -> Unit:
    cache: dict[str, Unit] = session.info.setdefault("units", {})
    unit = cache.get(serial)
    if unit is None and serial not in session.info.get(_ABSENT, ()):
        unit = session.get(Unit, serial)
    if unit is None:
        unit = Unit(serial=serial, product=product or "unknown", kind=kind or "server",
                    state="in_progress", step=None, created=t, updated=t)
        session.add(unit)
        session.info.get(_ABSENT, set()).discard(serial)
        mark(session, serial)  # installs read earlier may already name it
        if product:
            _start_route(session, unit)
    else:
        starts = bool(product) and unit.product == "unknown"
        if product and unit.product == "unknown":
            unit.product = product
        if kind and unit.kind != kind:
            unit.kind = kind
        if starts:
            _start_route(session, unit)
        if t > aware(unit.updated):
            unit.updated = t
    cache[serial] = unit
    return unit


_ROWS = "projected_rows"  # table -> rows to insert, in the order the events made them
_COMPLETIONS = "operations_completed"  # completions of operations already inserted
_ABSENT = "units_absent"  # serials `project_batch` looked up and did not find
_CHUNK = 400
_TABLES: tuple[Table, ...] = tuple(m.__table__ for m in (  # type: ignore[misc]
    Operation, Install, TestRun, Firmware))


def _add(s: Session, table: Table, row: dict[str, Any]) -> dict[str, Any]:
    s.info.setdefault(_ROWS, {}).setdefault(table, []).append(row)
    return row


def flush_rows(s: Session) -> None:
    """Insert the buffered rows (executemany per table), then the completions of operations
    inserted earlier. Tests get their ids back in order (RETURNING) for their measurements."""
    buffered: dict[Table, list[dict[str, Any]]] = s.info.pop(_ROWS, {})
    s.info.pop("operations", None)  # their rows are inserted: a completion now updates
    tests: Table = TestRun.__table__  # type: ignore[assignment]
    for table in _TABLES:
        rows = buffered.get(table)
        if not rows:
            continue
        if table is not tests:
            s.execute(insert(table), rows)
            continue
        measured = [r.pop("measurements") for r in rows]
        ids: Sequence[int] = s.execute(
            insert(table).returning(table.c.id, sort_by_parameter_order=True), rows
        ).scalars().all()
        found = [dict(m, test_id=i) for i, ms in zip(ids, measured, strict=True) for m in ms]
        if found:
            s.execute(insert(Measurement.__table__), found)  # type: ignore[arg-type]
    done: list[dict[str, Any]] = s.info.pop(_COMPLETIONS, [])
    if done:
        ops: Table = Operation.__table__  # type: ignore[assignment]
        s.execute(update(ops).where(ops.c.serial == bindparam("b_serial"),
                                    ops.c.transaction_id == bindparam("b_txn"))
                  .values(completed=bindparam("b_completed"), result=bindparam("b_result")),
                  done)


def _start_route(session: Session, unit: Unit) -> None:
    """Record the route in force for the unit (module docstring); none in force: NULL."""
    routes: RouteBook | None = session.info.get("routes")
    route = routes.find_route_for_unit(unit.product, unit.kind) if routes is not None else None
    if route is not None and unit.route_sha256 is None:
        unit.route_product, unit.route_revision = route.product, route.revision
        unit.route_sha256 = route.sha256


def _station_type(session: Session, station_id: str) -> str | None:
    """A station's type (read once per batch: it never changes after enrolment)."""
    cache: dict[str, str | None] = session.info.setdefault("station_types", {})
    if station_id not in cache:
        cache[station_id] = session.scalar(
            select(Station.station_type).where(Station.station_id == station_id))
    return cache[station_id]


def _route(s: Session, unit: Unit, e: Event) -> None:
    """Apply one of the unit's own state-bearing events (`unit_state.route_state`)."""
    if needs_settling(unit):
        mark(s, unit.serial)
    at_repair = (isinstance(e.body, b.WorkStarted) and unit.state not in FINAL_STATES
                 and _station_type(s, e.source) == REPAIR_STATION_TYPE)
    unit.state, unit.step = route_state(unit.state, unit.step, e.body, at_repair)


def _work_started(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.WorkStarted)
    unit = _unit(s, e.subject, t, product=body.product, kind=body.kind)
    unit.work_order = body.work_order
    _route(s, unit, e)
    op = _add(s, Operation.__table__, {  # type: ignore[arg-type]
        "serial": e.subject, "transaction_id": body.transaction_id, "step": body.step,
        "operation": body.operation, "station": e.source, "operator": body.operator,
        "work_order": body.work_order, "started": t, "completed": None, "result": None})
    s.info.setdefault("operations", {})[(e.subject, body.transaction_id)] = op


def _work_completed(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.WorkCompleted)
    _unit(s, e.subject, t)
    op = s.info.setdefault("operations", {}).get((e.subject, body.transaction_id))
    if op is not None:  # started in this batch, not inserted yet
        op["completed"], op["result"] = t, body.result
    else:  # inserted already: updated at the next `flush_rows` (none started: no row)
        s.info.setdefault(_COMPLETIONS, []).append({
            "b_serial": e.subject, "b_txn": body.transaction_id, "b_completed": t,
            "b_result": body.result})


def _moved(s: Session, e: Event, t: datetime) -> None:
    _unit(s, e.subject, t)


def _test(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, (b.UnitTested, b.UnitInspected))
    _unit(s, e.subject, t)
    tests: Table = TestRun.__table__  # type: ignore[assignment]
    if isinstance(body, b.UnitTested):
        _add(s, tests, {
            "serial": e.subject, "event_id": e.id, "station": e.source, "time": t,
            "kind": "test", "method": body.method, "result": body.result,
            "detail": {"fixture": body.fixture, "tests": [
                {"name": x.name, "result": x.result} for x in body.tests]},
            "measurements": [{"test": x.name, "name": m.name, "value": m.value,
                              "unit": m.unit, "expected": m.expected, "min": m.min,
                              "max": m.max} for x in body.tests for m in x.measurements]})
    else:
        _add(s, tests, {
            "serial": e.subject, "event_id": e.id, "station": e.source, "time": t,
            "kind": "inspection", "method": body.method, "result": body.result,
            "detail": {"defects": [{"code": d.code, "category": d.category, "ref": d.ref,
                                    "confidence": d.confidence} for d in body.defects]},
            "measurements": []})


def _installed(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.MaterialsInstalled)
    _unit(s, e.subject, t)
    installs: Table = Install.__table__  # type: ignore[assignment]
    for item in body.items:
        _add(s, installs, {
            "unit": e.subject, "parent": item.parent or e.subject, "serial": item.serial,
            "mpn": item.mpn, "lot": item.lot, "category": item.category, "pn": item.pn,
            "qty": item.qty, "slot": item.slot, "ref": item.ref, "station": e.source,
            "installed_at": t, "installed_event": e.id, "removed_at": None,
            "removed_event": None, "removed_reason": None})
        if item.serial is not None:  # perhaps a sub-assembly with a route of its own
            mark(s, item.serial)


_REF_RANGE = re.compile(r"^([A-Za-z]+)(\d+)-\1?(\d+)$")


def ref_in_group(ref: str, group: str) -> bool:
    """Is designator `ref` (C212) one of a placed group (C1-C480, or R1,R2,R7)?"""
    for part in group.split(","):
        part = part.strip()
        if part == ref:
            return True
        m = _REF_RANGE.match(part)
        r = re.match(r"^([A-Za-z]+)(\d+)$", ref)
        if m and r and m.group(1) == r.group(1) and int(m.group(2)) <= int(r.group(2)) <= int(m.group(3)):
            return True
    return False


def _remove_from_group(s: Session, e: Event, t: datetime, reason: str, item: b.RemovedItem) -> None:
    """One designator replaced out of a placed group: record that one as removed.

    The group row stays (the rest of the reel's parts are still on the board); a removed row for
    the single designator keeps the history, and the replacement arrives as its own install.
    """
    assert item.ref is not None
    q = select(Install).where(Install.unit == e.subject, Install.removed_at.is_(None),
                              Install.serial.is_(None), Install.ref.is_not(None))
    if item.lot is not None:
        q = q.where(Install.lot == item.lot)
    for row in s.scalars(q):
        if row.ref is not None and ref_in_group(item.ref, row.ref):
            _add(s, Install.__table__, {  # type: ignore[arg-type]
                "unit": row.unit, "parent": row.parent, "serial": None, "mpn": row.mpn,
                "lot": row.lot, "category": row.category, "pn": row.pn, "qty": 1,
                "slot": None, "ref": item.ref, "station": row.station,
                "installed_at": row.installed_at, "installed_event": row.installed_event,
                "removed_at": t, "removed_event": e.id, "removed_reason": reason})
            return


def _uninstalled(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.MaterialsUninstalled)
    _unit(s, e.subject, t)
    flush_rows(s)  # the installs it removes may be buffered still
    s.flush()
    for item in body.items:
        q = select(Install).where(Install.unit == e.subject, Install.removed_at.is_(None))
        if item.serial is not None:
            q = q.where(Install.serial == item.serial)
        elif item.slot is not None:
            q = q.where(Install.slot == item.slot)
        elif item.ref is not None:
            q = q.where(Install.ref == item.ref)
        elif item.lot is not None:
            q = q.where(Install.lot == item.lot)
        rows = s.scalars(q).all()
        for row in rows:
            row.removed_at, row.removed_event, row.removed_reason = t, e.id, body.reason
            if row.serial is not None:
                mark(s, row.serial)
        if not rows and item.serial is None and item.ref is not None:
            _remove_from_group(s, e, t, body.reason, item)


def _repaired(s: Session, e: Event, t: datetime) -> None:
    assert isinstance(e.body, b.UnitRepaired)
    _route(s, _unit(s, e.subject, t), e)


def _scrapped(s: Session, e: Event, t: datetime) -> None:
    _route(s, _unit(s, e.subject, t), e)


def _firmware(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.FirmwareFlashed)
    _unit(s, e.subject, t)
    _add(s, Firmware.__table__, {  # type: ignore[arg-type]
        "serial": e.subject, "component": body.component, "image": body.image,
        "version": body.version, "sha256": body.sha256, "target": body.target,
        "station": e.source, "time": t, "event_id": e.id})


def _packed(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.UnitPacked)
    unit = _unit(s, e.subject, t)
    _route(s, unit, e)
    unit.order, unit.carton = body.order, body.carton


def _shipped(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.UnitShipped)
    unit = _unit(s, e.subject, t)
    _route(s, unit, e)
    unit.order, unit.carton = body.order, body.carton


def _received(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.MaterialReceived)
    if s.get(Lot, body.lot) is not None:
        return  # a lot is received once; a second receipt stays in `events`
    s.add(Lot(lot=body.lot, mpn=body.mpn, supplier=body.supplier, date_code=body.date_code,
              qty=body.qty, received_at=t, station=e.source, event_id=e.id,
              documents={"documents": [{"kind": d.kind, "sha256": d.sha256, "name": d.name}
                                       for d in body.documents]}))
    s.add_all(LotSerial(lot=body.lot, serial=x) for x in dict.fromkeys(body.serials))


def _enrolled(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.StationEnrolled)
    record_station_key(s, body.station_id, body.station_type, body.public_key, t, e.id)


def record_station_key(s: Session, station_id: str, station_type: str, public_key_b64: str,
                       t: datetime, event_id: str | None) -> str:
    """Register a station (if new) and one of its public keys; returns the key id."""
    raw = load_public_key(public_key_b64)
    keyid = keyid_of(raw)
    if s.get(Station, station_id) is None:
        s.add(Station(station_id=station_id, station_type=station_type, enrolled_at=t))
        s.info.get("station_types", {}).pop(station_id, None)
    if s.get(StationKey, keyid) is None:
        s.add(StationKey(keyid=keyid, station_id=station_id, public_key=raw_public_key(raw),
                         enrolled_event=event_id, enrolled_at=t))
    s.flush()
    return keyid


def _revoked(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.StationRevoked)
    key = s.get(StationKey, body.keyid)
    if key is not None and key.revoked_at is None:
        key.revoked_at = t
        key.revoked_after = {x.topic: int(x.stationseq) for x in body.last_valid}


PROJECTIONS: dict[str, Callable[[Session, Event, datetime], None]] = {
    "work.started": _work_started,
    "work.completed": _work_completed,
    "unit.arrived": _moved,
    "unit.departed": _moved,
    "unit.inspected": _test,
    "unit.tested": _test,
    "materials.installed": _installed,
    "materials.uninstalled": _uninstalled,
    "unit.repaired": _repaired,
    "unit.scrapped": _scrapped,
    "firmware.flashed": _firmware,
    "unit.packed": _packed,
    "unit.shipped": _shipped,
    "material.received": _received,
    "station.enrolled": _enrolled,
    "station.revoked": _revoked,
    "hold.placed": project_hold_event,
    "hold.approved": project_hold_event,
    "hold.released": project_hold_event,
    "hold.disposition": project_hold_event,
    "user.enrolled": project_user_event,
    "user.changed": project_user_event,
    "user.revoked": project_user_event,
    "user.removed": project_user_event,
    "console.enrolled": project_console_event,
    "console.revoked": project_console_event,
    "burnin.verdict": project_verdict,
}


_UNIT_EVENTS = frozenset(PROJECTIONS) - {"material.received", "station.enrolled",
                                          "station.revoked", *HOLD_PROJECTIONS,
                                          *USER_PROJECTIONS, *CONSOLE_PROJECTIONS}


def project(session: Session, event: Event) -> None:
    fn = PROJECTIONS.get(event.type)
    if fn is not None:
        fn(session, event, parse_time(event.envelope.time))


def settle(session: Session) -> None:
    """Finish a batch of `project` calls: their buffered rows, then the states that installs
    decide (`unit_state`)."""
    flush_rows(session)
    settle_units(session)


def project_batch(session: Session, events: Sequence[Event]) -> None:
    """`project` each event in order, then `settle`, with the batch's units read in one query
    (the writer's path)."""
    cache: dict[str, Unit] = session.info.setdefault("units", {})
    wanted = sorted({e.subject for e in events if e.type in _UNIT_EVENTS} - cache.keys())
    absent = session.info.setdefault(_ABSENT, set())
    absent.update(wanted)
    for i in range(0, len(wanted), _CHUNK):
        for unit in session.scalars(select(Unit).where(
                in_values(session, Unit.serial, wanted[i:i + _CHUNK]))):
            cache[unit.serial] = unit
            absent.discard(unit.serial)
    types: dict[str, str | None] = session.info.setdefault("station_types", {})
    sources = sorted({e.source for e in events if e.type == "work.started"} - types.keys())
    if sources:  # `_station_type` of every station that starts work in the batch, at once
        types.update(dict.fromkeys(sources))
        types.update((r[0], r[1]) for r in session.execute(
            select(Station.station_id, Station.station_type)
            .where(Station.station_id.in_(sources))))
    try:
        with session.no_autoflush:  # projections flush where they must
            for ev in events:
                project(session, ev)
            settle(session)
        session.flush()
    finally:
        session.info.pop(_ABSENT, None)
