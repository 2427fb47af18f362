"""One unit's page: everything the console's unit page shows, as one document
(`GET /api/v1/units/{serial}`, docs/console.md). Built from `genealogy.trace` (the `trace
--json` document), the route in force, the holds in force, the alerts and the burn-in verdicts.

The document (`unit_page`; times RFC 3339 UTC with milliseconds, as every `--json`)::

    {"serial", "kind", "product", "work_order", "order", "carton", "installed_in",
     "state",            # as `units` shows it (`on_hold` while a hold in force stops it)
     "step",             # current step (the latest arrival or start)
     "station",          # the station of its latest operation (null before any)
     "updated",
     "sealed": bool,     # an HBOM was sealed for it (`hbom`, `evidence` serve it)
     "route": {"product", "revision", "sha256",
               "in_force": bool} | null,   # false: the route it started on is no longer
                                           # the one in force (progress then lists the
                                           # steps it was worked at, station types null)
     "progress": [       # each step of its route in order, then repair steps it visited
        {"step", "operation", "station_type", "repair": bool,
         "status": "done" | "current" | "pending" | "failed",
         "attempts": N,                    # operations recorded at the step
         "result": str | null,             # the latest operation's result
         "time": RFC3339 | null,           # its completion (its start while in progress)
         "station": str | null}],          # where
     "holds": [          # holds in force that stop it (on it, its work order, a lot or MPN
        {"id", "scope", "target", "category", "code", "reason", "placed"}],  # it contains)
     "hold_history": [...],                # `trace --json` holds: those that named it or
                                           # its work order, released ones too
     "violations": [...],                  # `trace --json` violations
     "history": [        # its events in order
        {"time", "type", "station", "operator", "step", "event_id", "summary"}],
     "measurements": [   # every test's measurements, in test time order
        {"time", "station", "method", "test", "name", "value", "unit", "expected", "min",
         "max", "pass": bool}],
     "alerts": [         # alerts about it (or one of its GPUs), latest raised first
        {"id", "condition", "priority", "state", "active", "acked", "subject", "raised",
         "message"}],
     "burnin": {"result", "verdicts": [   # latest first; null when never judged
        {"id", "run_id", "time", "result", "station", "sku", "failed_gpus": [index],
         "reasons": [{"code", "message", "gpu_index"}]}]} | null,
     "parts": [...], "removed": [...]}     # `trace --json` parts and removed parts
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from linetrace.schemas.routes import Route, RouteBook

from .alerts.models import Alert
from .genealogy import UnknownUnit, _not_a_unit, iso, trace
from .holds import load_holds_in_force
from .models import Hold, LotSerial, Unit
from .system_events import SealedHbom
from .verdicts import verdicts_of
from .views import HistoryEntry, OperationRecord, Trace, to_data

_FAILED = ("Failed", "Aborted", "Error")


def require_unit(session: Session, serial: str) -> None:
    """UnknownUnit (`unit.unknown`, saying what the serial is if it is a part) unless the
    ledger has a unit `serial`."""
    if session.get(Unit, serial) is None:
        raise UnknownUnit(_not_a_unit(session, serial))


def _route_of(routes: RouteBook, t: Trace) -> tuple[Route | None, dict[str, Any] | None]:
    if t.route is None:
        return None, None
    route = routes.routes.get(t.route.product)
    in_force = route is not None and route.sha256 == t.route.sha256
    return (route if in_force else None,
            {"product": t.route.product, "revision": t.route.revision,
             "sha256": t.route.sha256, "in_force": in_force})


def _step_doc(step: int, operation: str | None, station_type: str | None, repair: bool,
              ops: list[OperationRecord], t: Trace) -> dict[str, Any]:
    last = ops[-1] if ops else None
    if last is None:
        current = t.step == step and t.state in ("in_progress", "on_hold", "in_repair")
        status = "current" if current else "pending"
    elif last.completed is None:
        status = "current"
    elif last.result in _FAILED:
        status = "failed"
    else:
        status = "done"
    return {"step": step, "operation": operation or (last.operation if last else None),
            "station_type": station_type, "repair": repair, "status": status,
            "attempts": len(ops), "result": last.result if last else None,
            "time": (last.completed or last.started) if last else None,
            "station": last.station if last else None}


def route_progress(t: Trace, route: Route | None) -> list[dict[str, Any]]:
    """Each step of the unit's route (or, without the route, each step it was worked at):
    done, current, pending or failed, when and where (module docstring)."""
    by_step: dict[int, list[OperationRecord]] = {}
    for o in t.operations:
        by_step.setdefault(o.step, []).append(o)
    if route is None:
        return [_step_doc(n, None, None, False, ops, t) for n, ops in sorted(by_step.items())]
    out = [_step_doc(s.step, s.operation, s.station_type, False, by_step.get(s.step, []), t)
           for s in route.steps]
    out += [_step_doc(s.step, s.operation, s.station_type, True, by_step[s.step], t)
            for s in route.repair_steps if s.step in by_step]
    return out


def summary(h: HistoryEntry) -> str:
    """One event in a person's words: what happened (the station, time and operator are
    beside it on the page)."""
    d = h.data
    step = f" (step {d['step']})" if isinstance(d.get("step"), int) else ""
    match h.type:
        case "unit.arrived":
            return f"arrived{step}"
        case "unit.departed":
            return f"departed{step}"
        case "work.started":
            return f"started {d.get('operation', 'work')}{step}"
        case "work.completed":
            return f"completed{step}: {d.get('result')}"
        case "unit.tested" | "unit.inspected":
            failed = [x.get("name") for x in d.get("tests", []) or []
                      if isinstance(x, dict) and x.get("result") not in ("Passed", "Skipped")]
            what = "tested" if h.type == "unit.tested" else "inspected"
            return (f"{what} ({d.get('method')}): {d.get('result')}"
                    + (f"; failed {', '.join(map(str, failed))}" if failed else ""))
        case "materials.installed":
            items = d.get("items", []) or []
            names = [str(i.get("serial") or f"{i.get('qty') or 1} x {i.get('mpn')}")
                     for i in items if isinstance(i, dict)]
            shown = ", ".join(names[:4]) + (f" and {len(names) - 4} more" if len(names) > 4
                                            else "")
            return f"installed {len(names)} part(s): {shown}"
        case "materials.uninstalled":
            items = [str(i.get("serial") or i.get("ref") or i.get("lot"))
                     for i in d.get("items", []) or [] if isinstance(i, dict)]
            return f"removed {', '.join(items)}: {d.get('reason')}" + (
                f" ({d['note']})" if d.get("note") else "")
        case "unit.repaired":
            return f"repaired: {d.get('result')}" + (f" ({d['note']})" if d.get("note") else "")
        case "unit.scrapped":
            return f"scrapped: {d.get('reason')}"
        case "firmware.flashed":
            return f"flashed {d.get('component')} {d.get('version')} ({d.get('image')})"
        case "burnin.verdict":
            reasons = [r.get("message") for r in d.get("reasons", []) or []
                       if isinstance(r, dict)]
            return (f"burn-in verdict: {d.get('result')}"
                    + (f": {'; '.join(map(str, reasons))}" if reasons else ""))
        case "unit.packed":
            return f"packed in carton {d.get('carton')} for order {d.get('order')}"
        case "unit.sealed":
            return f"sealed (tamper seal {d.get('tamper_seal')}, HBOM SHA-256 " \
                   f"{str(d.get('hbom_sha256'))[:12]}...)"
        case "unit.shipped":
            return f"shipped {d.get('shipment')} to {d.get('destination')}"
        case "command.route":
            return "linetrace routed it" + (f" to step {d['step']}" if "step" in d else "")
        case _:
            return h.type


def _holds_in_force(session: Session, t: Trace) -> list[dict[str, Any]]:
    lots = {p.lot for p in t.parts} | set(session.scalars(
        select(LotSerial.lot).where(LotSerial.serial == t.serial)))
    found = load_holds_in_force(session).for_unit(
        t.serial, work_order=t.work_order, lots=lots, mpns={p.mpn for p in t.parts},
        station=None)
    placed = {h.hold_id: h.placed for h in session.scalars(
        select(Hold).where(Hold.hold_id.in_([f.hold_id for f in found])))} if found else {}
    return [{"id": h.hold_id, "scope": h.scope, "target": h.target, "category": h.category,
             "code": h.code, "reason": h.reason, "placed": iso(placed.get(h.hold_id))}
            for h in found]


def _alerts(session: Session, serial: str) -> list[dict[str, Any]]:
    about = or_(Alert.unit == serial, Alert.subject == serial,
                Alert.subject.startswith(serial + "/", autoescape=True))
    rows = session.scalars(select(Alert).where(about)
                           .order_by(Alert.raised.desc(), Alert.alert_id))
    return [{"id": a.alert_id, "condition": a.condition, "priority": a.priority,
             "state": a.state, "active": a.active, "acked": a.acked, "subject": a.subject,
             "raised": iso(a.raised), "message": a.message} for a in rows]


def _burnin(session: Session, serial: str) -> dict[str, Any] | None:
    found = verdicts_of(session, serial)
    if not found:
        return None
    return {"result": found[0].body.result, "verdicts": [
        {"id": v.event.id, "run_id": v.body.run_id, "time": v.event.envelope.time,
         "result": v.body.result, "station": v.body.station, "sku": v.body.sku,
         "failed_gpus": [g.gpu_index for g in v.body.gpus if g.result == "Failed"],
         "reasons": [{"code": r.code, "message": r.message, "gpu_index": r.gpu_index}
                     for r in v.body.reasons]} for v in found]}


def unit_page(session: Session, serial: str, routes: RouteBook) -> dict[str, Any]:
    """The unit page document (module docstring). UnknownUnit for a serial that is not a
    unit; `routes`: the routes in force (route progress)."""
    t = trace(session, serial)
    route, route_doc = _route_of(routes, t)
    sealed = session.scalar(select(SealedHbom.serial).where(SealedHbom.serial == serial)
                            .limit(1)) is not None
    return {
        "serial": t.serial, "kind": t.kind, "product": t.product, "work_order": t.work_order,
        "order": t.order, "carton": t.carton, "installed_in": t.installed_in,
        "state": t.state, "step": t.step,
        "station": t.operations[-1].station if t.operations else None,
        "updated": t.updated, "sealed": sealed, "route": route_doc,
        "progress": route_progress(t, route),
        "holds": _holds_in_force(session, t),
        "hold_history": to_data(t.holds),
        "violations": to_data(t.violations),
        "history": [{"time": h.time, "type": h.type, "station": h.station,
                     "operator": h.operator, "step": h.step, "event_id": h.event_id,
                     "summary": summary(h)} for h in t.history],
        "measurements": [{"time": x.time, "station": x.station, "method": x.method,
                          "test": m.test, "name": m.name, "value": m.value, "unit": m.unit,
                          "expected": m.expected, "min": m.min, "max": m.max,
                          "pass": not m.out_of_limits()}
                         for x in t.tests for m in x.measurements],
        "alerts": _alerts(session, serial),
        "burnin": _burnin(session, serial),
        "parts": to_data(t.parts),
        "removed": to_data(t.removed),
    }
