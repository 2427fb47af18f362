"""The line status document: what `linetrace line --json` prints and `GET /api/v1/line`
answers (the same body), for the line view and the plant-floor board.

    {
      "clock": RFC 3339,            # the line clock (ledger/line_clock.py: the newest event
                                    # time, never before the latest alert transition)
      "stations": [{                # every enrolled station (not linetrace itself), by id
        "id", "type",
        "state",                    # running | idle | engineering | maintenance | down | off
                                    # | unknown (no station.state yet), from the SEMI E10 code
        "code", "state_name",       # 1000..6000 and "PRD (productive)", or null
        "reason", "since",          # the latest station.state's reason and event time
        "unit", "step",             # the unit at the station now (work started, not
                                    # completed), or null
        "faults_open": [{"fault_id", "code", "severity", "cause", "since"}],
        "locked": bool, "hold": hold id or null   # an active station hold locks it
      }],
      "wip": [{"product", "kind", "step", "operation", "state", "units"}],
                                    # open units per route step and state (a unit an active
                                    # hold stops counts as on_hold); operation: the route's
                                    # name of the step (null if no route names it)
      "wip_total": int,
      "throughput": {"window_end": RFC 3339, "windows": {"1h": {...}, "8h": {...}}},
                                    # per window: {"since", "completed" (units packed),
                                    # "shipped" (units shipped), "operations" (work.completed
                                    # events, any result)}, on the line clock
      "first_pass_yield": [{        # per station with tests or inspections: each unit's first
                                    # result at the station type is its first pass (as the
                                    # SPC stage's FPY rule counts them); the last `window`
        "station", "type", "window", "first_passes", "failed", "yield"   # yield: 0..1 or null
      }],
      "holds": {"count": int, "by_scope": {scope: int}, "list": [hold as `holds --json`]},
      "alerts": {"total": int (not normal), "by_priority": {"high"|"medium"|"low": int},
                 "by_state": {ISA-18.2 state: int},
                 "by_priority_state": {priority: {state: int}}}
    }

Every time is RFC 3339 UTC with milliseconds. Read-only: it opens nothing for writing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.schemas.routes import RouteBook
from linetrace.schemas.envelope import SYSTEM_SOURCE
from linetrace.schemas.topics import ALL_TOPICS, EVENTS

from .alerts.views import list_alerts
from .genealogy import iso
from .hold_views import list_holds
from .holds import load_holds_in_force, stopped_units
from .line_clock import line_clock
from .models import EventRow, Operation, Station, Unit
from .spc import results_of_types
from .spc_rates import FPY_WINDOW, Result, first_passes
from .sql import in_values
from .views import station_state_name

#: SEMI E10 state code -> the line view's word for it (andon colour in the console).
STATE_WORDS: dict[int, str] = {1000: "running", 2000: "idle", 3000: "engineering",
                               4000: "maintenance", 5000: "down", 6000: "off"}
WINDOWS: dict[str, timedelta] = {"1h": timedelta(hours=1), "8h": timedelta(hours=8)}
#: Unit states still on the line (genealogy.UNIT_STATES less the final ones).
_OPEN = ("in_progress", "in_repair")
_CHUNK = 400
_STATION_TYPES = ("station.state", "fault.occurred", "fault.cleared")


def _data(value: bytes) -> dict[str, Any]:
    doc = json.loads(value)
    data = doc.get("data") if isinstance(doc, dict) else None
    return data if isinstance(data, dict) else {}


def _station_events(session: Session, stations: Iterable[str]
                    ) -> dict[str, list[tuple[datetime, str, dict[str, Any]]]]:
    """Each station's station.state and fault events, in event order (one query a station,
    through the subject index: a station's own events are few)."""
    out: dict[str, list[tuple[datetime, str, dict[str, Any]]]] = {}
    for sid in stations:
        q = (select(EventRow.time, EventRow.type, EventRow.value)
             .where(EventRow.subject == sid, EventRow.type.in_(_STATION_TYPES))
             .order_by(EventRow.time, EventRow.seq))
        out[sid] = [(t, str(typ), _data(value)) for t, typ, value in session.execute(q)]
    return out


def _at_station(session: Session) -> dict[str, tuple[str, int]]:
    """station -> (unit, step) of the latest operation started there and not completed."""
    q = (select(Operation.station, Operation.serial, Operation.step)
         .select_from(Unit).join(Operation, Operation.serial == Unit.serial)
         .where(Unit.state.in_(_OPEN), Operation.completed.is_(None),
                Operation.started.is_not(None))
         .order_by(Operation.started, Operation.id))
    return {str(st): (str(serial), int(step)) for st, serial, step in session.execute(q)}


def _stations(session: Session) -> list[dict[str, Any]]:
    stations = list(session.scalars(select(Station).where(Station.station_id != SYSTEM_SOURCE)
                                    .order_by(Station.station_id)))
    events = _station_events(session, [st.station_id for st in stations])
    current = _at_station(session)
    in_force = load_holds_in_force(session)
    out: list[dict[str, Any]] = []
    for st in stations:
        code: int | None = None
        reason: str | None = None
        since: datetime | None = None
        faults: dict[str, dict[str, Any]] = {}
        for t, typ, data in events.get(st.station_id, []):
            if typ == "station.state":
                code = data.get("state") if isinstance(data.get("state"), int) else None
                reason, since = data.get("reason"), t
            elif typ == "fault.occurred":
                faults[str(data.get("fault_id"))] = {
                    "fault_id": data.get("fault_id"), "code": data.get("code"),
                    "severity": data.get("severity"), "cause": data.get("cause"),
                    "since": iso(t)}
            else:
                faults.pop(str(data.get("fault_id")), None)
        lock = in_force.station_locked(st.station_id)
        unit = current.get(st.station_id)
        out.append({
            "id": st.station_id, "type": st.station_type,
            "state": STATE_WORDS.get(code, "unknown") if code is not None else "unknown",
            "code": code, "state_name": station_state_name(code), "reason": reason,
            "since": iso(since), "unit": unit[0] if unit else None,
            "step": unit[1] if unit else None, "faults_open": list(faults.values()),
            "locked": lock is not None, "hold": lock.hold_id if lock else None})
    return out


def _operation_names(routes: RouteBook | None, product: str, kind: str, step: int | None
                     ) -> str | None:
    if routes is None or step is None:
        return None
    route = routes.find_route_for_unit(product, kind)
    if route is None:
        return None
    for s in (*route.steps, *route.repair_steps):
        if s.step == step:
            return str(s.operation)
    return None


def _wip(session: Session, routes: RouteBook | None) -> list[dict[str, Any]]:
    """Open units by (product, kind, step, state); held ones count as on_hold (as
    `genealogy.work_in_progress` counts them, with the product kept apart)."""
    counts: dict[tuple[str, str, int | None, str], int] = {}
    for p, k, st, state, n in session.execute(
            select(Unit.product, Unit.kind, Unit.step, Unit.state, func.count())
            .where(Unit.state.in_(_OPEN))
            .group_by(Unit.product, Unit.kind, Unit.step, Unit.state)):
        counts[(str(p), str(k), st, str(state))] = int(n)
    held = sorted(stopped_units(session))
    for i in range(0, len(held), _CHUNK):
        for p, k, st, state in session.execute(
                select(Unit.product, Unit.kind, Unit.step, Unit.state).where(
                    in_values(session, Unit.serial, held[i:i + _CHUNK]),
                    Unit.state.in_(_OPEN))):
            counts[(p, k, st, state)] -= 1
            counts[(p, k, st, "on_hold")] = counts.get((p, k, st, "on_hold"), 0) + 1
    rows = sorted(((key, n) for key, n in counts.items() if n > 0),
                  key=lambda x: (x[0][0], x[0][1], x[0][2] is not None, x[0][2] or 0, x[0][3]))
    return [{"product": p, "kind": k, "step": st,
             "operation": _operation_names(routes, p, k, st), "state": state, "units": n}
            for (p, k, st, state), n in rows]


def _count(session: Session, types: Iterable[str], since: datetime, until: datetime,
           distinct: bool) -> int:
    """Events of `types` on line.events with event times in (since, until]: read through the
    partitions' time index."""
    what = func.count(func.distinct(EventRow.subject)) if distinct else func.count()
    n = session.scalar(select(what).where(
        EventRow.topic == EVENTS, EventRow.partition.in_(range(ALL_TOPICS[EVENTS])),
        EventRow.time > since, EventRow.time <= until,
        EventRow.type.in_(sorted(types))))
    return int(n or 0)


def _throughput(session: Session, clock: datetime) -> dict[str, Any]:
    end = clock.astimezone(UTC)
    windows: dict[str, Any] = {}
    for name, span in WINDOWS.items():
        since = end - span
        windows[name] = {
            "since": iso(since),
            "completed": _count(session, ("unit.packed",), since, end, True),
            "shipped": _count(session, ("unit.shipped",), since, end, True),
            "operations": _count(session, ("work.completed",), since, end, False)}
    return {"window_end": iso(end), "windows": windows}


def _first_pass_yield(session: Session) -> list[dict[str, Any]]:
    types = {str(t) for t in session.scalars(select(Station.station_type).distinct())}
    out: list[dict[str, Any]] = []
    for station_type, results in sorted(results_of_types(session, types).items()):
        by_station: dict[str, list[bool]] = {}
        for r in first_passes([Result(x.serial, x.station, x.event_id, x.failed)
                               for x in results]):
            by_station.setdefault(r.station, []).append(r.failed)
        for station, failed in sorted(by_station.items()):
            window = failed[-FPY_WINDOW:]
            fails = sum(window)
            out.append({"station": station, "type": station_type, "window": FPY_WINDOW,
                        "first_passes": len(window), "failed": fails,
                        "yield": round(1 - fails / len(window), 4) if window else None})
    return out


def _holds(session: Session) -> dict[str, Any]:
    holds = list_holds(session)
    by_scope: dict[str, int] = {}
    for h in holds:
        by_scope[h["scope"]] = by_scope.get(h["scope"], 0) + 1
    return {"count": len(holds), "by_scope": dict(sorted(by_scope.items())), "list": holds}


def _alerts(session: Session) -> dict[str, Any]:
    by_priority: dict[str, int] = {"high": 0, "medium": 0, "low": 0}
    by_state: dict[str, int] = {}
    both: dict[str, dict[str, int]] = {}
    views = list_alerts(session)  # every alert not in normal
    for a in views:
        by_priority[a.priority] = by_priority.get(a.priority, 0) + 1
        by_state[a.state] = by_state.get(a.state, 0) + 1
        row = both.setdefault(a.priority, {})
        row[a.state] = row.get(a.state, 0) + 1
    return {"total": len(views), "by_priority": by_priority,
            "by_state": dict(sorted(by_state.items())),
            "by_priority_state": {p: dict(sorted(s.items())) for p, s in sorted(both.items())}}


def line_status(session: Session, routes: RouteBook | None = None,
                now: datetime | None = None) -> dict[str, Any]:
    """The line status document (module docstring). `routes`: the route book in force, to
    name the steps; `now`: the wall time (the line clock before any event)."""
    clock = line_clock(session, now or datetime.now(UTC))
    wip = _wip(session, routes)
    return {"clock": iso(clock), "stations": _stations(session), "wip": wip,
            "wip_total": sum(r["units"] for r in wip),
            "throughput": _throughput(session, clock),
            "first_pass_yield": _first_pass_yield(session), "holds": _holds(session),
            "alerts": _alerts(session)}
