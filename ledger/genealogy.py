"""Genealogy queries: units, trace. Plain dicts shaped as the CLI's --json contract."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from .errors import LedgerError
from .models import Install, Operation, Unit

UNIT_STATES = ("in_progress", "on_hold", "in_repair", "packed", "shipped", "scrapped", "installed")


class UnknownUnit(LedgerError):
    code = "unit.unknown"


def iso(t: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds, as every --json time."""
    if t is None:
        return None
    t = t if t.tzinfo else t.replace(tzinfo=UTC)
    t = t.astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def list_units(session: Session, *, kind: str | None = None, state: str | None = None,
               product: str | None = None) -> list[dict[str, Any]]:
    q = select(Unit).order_by(Unit.serial)
    if kind:
        q = q.where(Unit.kind == kind)
    if state:
        q = q.where(Unit.state == state)
    if product:
        q = q.where(Unit.product == product)
    return [{"serial": u.serial, "product": u.product, "kind": u.kind, "state": u.state,
             "step": u.step, "updated": iso(u.updated)} for u in session.scalars(q)]


def _part(row: Install) -> dict[str, Any]:
    return {"serial": row.serial, "mpn": row.mpn, "lot": row.lot, "parent": row.parent,
            "slot": row.slot, "ref": row.ref, "category": row.category, "qty": row.qty,
            "station": row.station, "installed": iso(row.installed_at)}


def _installed_tree(session: Session, serial: str) -> list[Install]:
    """Current installs of the unit and, recursively, of sub-assemblies installed in it."""
    out: list[Install] = []
    todo, seen = [serial], {serial}
    while todo:
        unit = todo.pop(0)
        rows = session.scalars(select(Install)
                               .where(Install.unit == unit, Install.removed_at.is_(None))
                               .order_by(Install.id)).all()
        out.extend(rows)
        for r in rows:
            if r.serial and r.serial not in seen and session.get(Unit, r.serial) is not None:
                seen.add(r.serial)
                todo.append(r.serial)
    return out


def trace(session: Session, serial: str) -> dict[str, Any]:
    unit = session.get(Unit, serial)
    if unit is None:
        raise UnknownUnit(f"no unit {serial!r} in the ledger; `linetrace units` lists them")
    ops = session.scalars(select(Operation).where(Operation.serial == serial)
                          .order_by(Operation.started, Operation.id)).all()
    return {
        "serial": unit.serial,
        "product": unit.product,
        "kind": unit.kind,
        "state": unit.state,
        "step": unit.step,
        "work_order": unit.work_order,
        "order": unit.order,
        "carton": unit.carton,
        "installed_in": unit.installed_in,
        "updated": iso(unit.updated),
        "parts": [_part(r) for r in _installed_tree(session, serial)],
        "operations": [{"step": o.step, "operation": o.operation, "station": o.station,
                        "operator": o.operator, "result": o.result, "started": iso(o.started),
                        "completed": iso(o.completed)} for o in ops],
    }
