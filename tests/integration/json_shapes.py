"""The pinned JSON shapes of the query commands' `--json` (CONTRACTS.md: fields may be added,
never renamed or removed). Each shape lists, in print order, the fields and the JSON types
their values may have; `check` compares a command's output with it."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

S, I, F, N, D, L, B = str, int, float, type(None), dict, list, bool


@dataclass(frozen=True)
class ByKind:
    """An object whose shape depends on the value of one of its fields."""

    key: str
    shapes: dict[str, dict[str, Any]]


UNIT = {"serial": S, "product": S, "kind": S, "state": S, "step": (I, N), "updated": (S, N)}
PART = {"serial": (S, N), "mpn": S, "lot": S, "parent": S, "slot": (I, N), "ref": (S, N),
        "category": (S, N), "qty": (I, N), "station": S, "installed": S}
REMOVED = {**PART, "removed": S, "reason": (S, N), "removed_event": (S, N)}
OPERATION = {"step": I, "operation": S, "station": S, "operator": (S, N), "result": (S, N),
             "started": (S, N), "completed": (S, N)}
MEASUREMENT = {"test": S, "name": S, "value": F, "unit": S, "expected": (F, N), "min": (F, N),
               "max": (F, N)}
TEST_RUN = ByKind("kind", {
    "test": {"kind": S, "method": S, "result": S, "station": S, "time": S, "fixture": (S, N),
             "tests": [{"name": S, "result": S}], "measurements": [MEASUREMENT]},
    "inspection": {"kind": S, "method": S, "result": S, "station": S, "time": S,
                   "defects": [{"code": S, "category": S, "ref": (S, N),
                                "confidence": (I, N)}],
                   "measurements": [MEASUREMENT]},
})
FIRMWARE = {"component": S, "image": S, "version": S, "sha256": S, "target": (S, N),
            "station": S, "time": S}
HISTORY = {"time": S, "type": S, "station": S, "event_id": S, "operator": (S, N),
           "step": (I, N), "data": D}
#: A hold that stopped the unit (trace's `holds`); `decision`: the disposition that ended it.
UNIT_HOLD = {"id": S, "reason": S, "code": S, "state": S, "placed": (S, N),
             "released": (S, N), "decision": (S, N)}
#: What the route check found wrong with one of the unit's events (trace's `violations`).
VIOLATION = {"step": (I, N), "station": (S, N), "code": S, "message": S, "time": (S, N)}
TRACE = {"serial": S, "product": S, "kind": S, "state": S, "step": (I, N),
         "work_order": (S, N), "order": (S, N), "carton": (S, N), "installed_in": (S, N),
         "updated": S, "parts": [PART], "operations": [OPERATION], "removed": [REMOVED],
         "tests": [TEST_RUN], "firmware": [FIRMWARE], "history": [HISTORY],
         "route": (D, N),  # {product, revision, sha256} of the route the unit started on
         "holds": [UNIT_HOLD], "violations": [VIOLATION]}
#: `linetrace holds [--all] --json` (each hold; also `hold place|release --json`, which add
#: fields): the issue's {id, scope, target, reason, placed_by, placed, state, approvals,
#: affected_units}, then what docs/holds.md adds.
HOLD = {"id": S, "scope": S, "target": S, "reason": S, "placed_by": S, "placed": (S, N),
        "state": S, "approvals": [{"user": S, "keyid": S, "approved": (S, N)}],
        "affected_units": [S], "category": S, "code": S, "released": (S, N),
        "released_by": [S], "release_reason": (S, N), "decision": (S, N), "shipped": [S],
        "step": (I, N), "station": (S, N)}
#: `linetrace validate SERIAL --step N --station X --json`.
VERDICT = {"allowed": B, "reasons": [{"code": S, "message": S}]}
RECALL = {"serial": S, "product": S, "state": S, "status": S, "part": S, "lot": S,
          "order": (S, N), "carton": (S, N), "via": (S, N)}
WIP = {"kind": S, "step": (I, N), "state": S, "units": I}
EVENT = {"time": S, "type": S, "source": S, "event_id": S, "data": D}
LOT = {"lot": S, "mpn": S, "supplier": S, "date_code": S, "qty": I, "received": S,
       "station": S, "event_id": S, "documents": [{"kind": S, "sha256": S, "name": (S, N)}],
       "serials": [S], "installs": I, "units": I, "events": [EVENT]}
STATION = {"station_id": S, "station_type": S, "enrolled": S,
           "keys": [{"keyid": S, "enrolled": S, "revoked": (S, N), "revoked_after": (D, N)}],
           "state": (I, N), "open_faults": [EVENT], "events_by_type": D, "events": [EVENT]}
REJECTED = {"id": I, "recorded": S, "destination": S, "code": S, "message": S, "stage": S,
            "topic": S, "partition": (I, N), "offset": (I, N), "source": (S, N),
            "event_id": (S, N), "key_b64": (S, N), "value_b64": (S, N)}


@dataclass
class Report:
    problems: list[str] = field(default_factory=list)
    empty_lists: set[str] = field(default_factory=set)  # paths without indexes: $.tests[].x
    filled_lists: set[str] = field(default_factory=set)

    @property
    def never_exercised(self) -> set[str]:
        """Pinned lists that were empty wherever they occurred: their items were not checked."""
        return self.empty_lists - self.filled_lists


def _generic(path: str) -> str:
    return re.sub(r"\[\d+\]", "[]", path)


def check(value: Any, shape: Any, path: str = "$", report: Report | None = None) -> Report:
    """Every problem of `value` against `shape`; lists found empty are noted (a shape that
    was never exercised proves nothing)."""
    rep = report or Report()
    if isinstance(shape, ByKind):
        kind = value.get(shape.key) if isinstance(value, dict) else None
        if kind not in shape.shapes:
            rep.problems.append(f"{path}: {shape.key} {kind!r} is none of {list(shape.shapes)}")
        else:
            check(value, shape.shapes[kind], path, rep)
    elif isinstance(shape, dict):
        if not isinstance(value, dict):
            rep.problems.append(f"{path}: expected an object, got {type(value).__name__}")
            return rep
        missing = [k for k in shape if k not in value]
        if missing:
            rep.problems.append(f"{path}: fields removed or renamed: {missing}")
        order = [k for k in value if k in shape]
        if order != [k for k in shape if k in value]:
            rep.problems.append(f"{path}: fields out of order: {order}")
        for k, sub in shape.items():
            if k in value:
                check(value[k], sub, f"{path}.{k}", rep)
    elif isinstance(shape, list):
        if not isinstance(value, list):
            rep.problems.append(f"{path}: expected a list, got {type(value).__name__}")
        elif not value:
            rep.empty_lists.add(_generic(path))
        else:
            rep.filled_lists.add(_generic(path))
            for i, item in enumerate(value):
                check(item, shape[0], f"{path}[{i}]", rep)
    else:
        types = shape if isinstance(shape, tuple) else (shape,)
        if type(value) not in types:
            rep.problems.append(f"{path}: {type(value).__name__} {value!r} is not "
                                f"{' | '.join(t.__name__ for t in types)}")
    return rep
