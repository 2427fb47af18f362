"""Read models: what the ledger's queries return, shared by the CLI and the console.

Typed, immutable msgspec structs instead of loose dicts. Each one's fields, in order, are the
`--json` contract of the command that prints it (CONTRACTS.md "CLI, settings and JSON": fields
may be added, never renamed or removed), so `msgspec.to_builtins(view)` is that JSON. Times are
RFC 3339 UTC strings with milliseconds, exactly as printed. The `data` of an event is the
event's own `data` object, as the station sent it.
"""

from __future__ import annotations

from typing import Any

import msgspec
from msgspec import UNSET, UnsetType


class View(msgspec.Struct, frozen=True, kw_only=True):
    """Base of every read model."""


def to_data(view: View | list[Any]) -> Any:
    """The JSON-ready builtins of a view (or a list of views), fields in contract order."""
    return msgspec.to_builtins(view)


# --- units and work in progress ----------------------------------------------------------

class UnitStatus(View, frozen=True, kw_only=True):
    """One unit as `linetrace units` lists it."""

    serial: str
    product: str
    kind: str
    state: str
    step: int | None
    updated: str | None


class WipCount(View, frozen=True, kw_only=True):
    """Open units of one kind at one step in one state."""

    kind: str
    step: int | None
    state: str
    units: int


# --- trace -------------------------------------------------------------------------------

class InstalledPart(View, frozen=True, kw_only=True):
    """A part (serialized, or a quantity of a lot on a reference designator group)."""

    serial: str | None
    mpn: str
    lot: str
    parent: str
    slot: int | None
    ref: str | None
    category: str | None
    qty: int | None
    station: str
    installed: str | None


class RemovedPart(InstalledPart, frozen=True, kw_only=True):
    """A part taken out (in repair), with when, why and by which event."""

    removed: str | None
    reason: str | None
    removed_event: str | None


class OperationRecord(View, frozen=True, kw_only=True):
    step: int
    operation: str
    station: str
    operator: str | None
    result: str | None
    started: str | None
    completed: str | None


class TestCheck(View, frozen=True, kw_only=True):
    """One named test of a test run and its result."""

    name: str
    result: str


class DefectFound(View, frozen=True, kw_only=True):
    """One defect an inspection found."""

    code: str
    category: str
    ref: str | None
    confidence: int | None


class MeasurementRecord(View, frozen=True, kw_only=True):
    test: str
    name: str
    value: float
    unit: str
    expected: float | None
    min: float | None
    max: float | None

    def out_of_limits(self) -> bool:
        return ((self.min is not None and self.value < self.min)
                or (self.max is not None and self.value > self.max))


class TestRecord(View, frozen=True, kw_only=True):
    """A test run (`kind` "test": fixture and tests) or an inspection (`kind` "inspection":
    defects); fields that do not apply to the kind are absent from the JSON."""

    kind: str
    method: str
    result: str
    station: str
    time: str | None
    fixture: str | None | UnsetType = UNSET
    tests: list[TestCheck] | UnsetType = UNSET
    defects: list[DefectFound] | UnsetType = UNSET
    measurements: list[MeasurementRecord]

    def failure_reasons(self) -> list[str]:
        """Why it failed, in a person's words: failed tests, measurements out of limits,
        defects found."""
        reasons = [f"{t.name} {t.result}" for t in self.tests or ()
                   if t.result not in ("Passed", "Skipped")]
        reasons += [f"{m.test}/{m.name} {m.value:g} {m.unit} outside "
                    f"[{'' if m.min is None else f'{m.min:g}'}, "
                    f"{'' if m.max is None else f'{m.max:g}'}]"
                    for m in self.measurements if m.out_of_limits()]
        reasons += [f"defect {d.code} ({d.category}" + (f" at {d.ref}" if d.ref else "") + ")"
                    for d in self.defects or ()]
        return reasons


class FirmwareRecord(View, frozen=True, kw_only=True):
    component: str
    image: str
    version: str
    sha256: str
    target: str | None
    station: str
    time: str | None


class HistoryEntry(View, frozen=True, kw_only=True):
    """One accepted event about the unit: who, what, when, where."""

    time: str | None
    type: str
    station: str
    event_id: str
    operator: str | None
    step: int | None
    data: dict[str, Any]


class UnitRoute(View, frozen=True, kw_only=True):
    """The route a unit started on and keeps (docs/routes.md): the route's product (A-PCBA for
    A's mainboard), its revision and SHA-256."""

    product: str
    revision: str
    sha256: str


class UnitHold(View, frozen=True, kw_only=True):
    """A hold that stopped the unit (named it, or held its work order): `decision` is the
    disposition that ended it, if one did."""

    id: str
    reason: str
    code: str
    state: str
    placed: str | None
    released: str | None
    decision: str | None


class RouteViolationRecord(View, frozen=True, kw_only=True):
    """What the route check found wrong with one of the unit's events."""

    step: int | None
    station: str | None
    code: str
    message: str
    time: str | None


class Trace(View, frozen=True, kw_only=True):
    """A unit's genealogy: `linetrace trace SERIAL`. `route` is null where none was in force
    when the unit started (or it started before routes were recorded). `state` is `on_hold`
    while an active hold stops the unit; `holds` are the holds that stopped it, `violations`
    what the route check found."""

    serial: str
    product: str
    kind: str
    state: str
    step: int | None
    work_order: str | None
    order: str | None
    carton: str | None
    installed_in: str | None
    updated: str | None
    parts: list[InstalledPart]
    operations: list[OperationRecord]
    removed: list[RemovedPart]
    tests: list[TestRecord]
    firmware: list[FirmwareRecord]
    history: list[HistoryEntry]
    route: UnitRoute | None = None
    holds: list[UnitHold] = msgspec.field(default_factory=list)
    violations: list[RouteViolationRecord] = msgspec.field(default_factory=list)


class PartPlacement(View, frozen=True, kw_only=True):
    """Where a part serial is, or was, installed (trace of a part, not a unit)."""

    unit: str
    top_unit: str
    parent: str
    slot: int | None
    ref: str | None
    installed: str | None
    removed: str | None
    reason: str | None


class PartWhereabouts(View, frozen=True, kw_only=True):
    serial: str
    lots: list[str]
    installed: PartPlacement | None
    past: list[PartPlacement]


# --- recall ------------------------------------------------------------------------------

class RecallHit(View, frozen=True, kw_only=True):
    """A unit that contains (`installed`) or contained (`removed`) the recalled material;
    `via` names the sub-assembly it came through, if any."""

    serial: str
    product: str
    state: str
    status: str
    part: str
    lot: str
    order: str | None
    carton: str | None
    via: str | None


# --- lots, stations, rejected records ----------------------------------------------------

class LedgerEvent(View, frozen=True, kw_only=True):
    time: str | None
    type: str
    source: str
    event_id: str
    data: dict[str, Any]


class LotDocument(View, frozen=True, kw_only=True):
    kind: str
    sha256: str
    name: str | None


class AvlResult(View, frozen=True, kw_only=True):
    """The plant-signed check of a receipt against the approved vendor list."""

    result: str
    reason: str | None
    avl_sha256: str | None
    time: str | None
    event_id: str


class LotReport(View, frozen=True, kw_only=True):
    """A received lot: `linetrace lots show LOT`."""

    lot: str
    mpn: str
    supplier: str
    date_code: str
    qty: int
    received: str | None
    station: str
    event_id: str
    documents: list[LotDocument]
    serials: list[str]
    installs: int
    units: int
    events: list[LedgerEvent]
    avl: AvlResult | None


class StationKeyRecord(View, frozen=True, kw_only=True):
    keyid: str
    enrolled: str | None
    revoked: str | None
    revoked_after: dict[str, int] | None


#: SEMI E10 equipment states of `station.state` (DOMAIN.md): code -> (abbreviation, meaning).
STATION_STATES: dict[int, tuple[str, str]] = {
    1000: ("PRD", "productive"),
    2000: ("SBY", "standby"),
    3000: ("ENG", "engineering"),
    4000: ("SDT", "scheduled downtime"),
    5000: ("USD", "unscheduled downtime"),
    6000: ("NST", "non-scheduled"),
}


def station_state_name(code: Any) -> str | None:
    """`SDT (scheduled downtime)` for 4000; None for no state; the code itself if unknown."""
    if code is None:
        return None
    known = STATION_STATES.get(code) if isinstance(code, int) else None
    return f"{known[0]} ({known[1]})" if known else str(code)


class StationReport(View, frozen=True, kw_only=True):
    """An enrolled station: `linetrace stations show ID`."""

    station_id: str
    station_type: str
    enrolled: str | None
    keys: list[StationKeyRecord]
    state: int | None
    open_faults: list[LedgerEvent]
    events_by_type: dict[str, int]
    events: list[LedgerEvent]
    state_name: str | None


class RejectedRecord(View, frozen=True, kw_only=True):
    """A record ingest refused: `linetrace rejected`. Key and value are base64 of the exact
    bytes received (None when the record had none)."""

    id: int
    recorded: str | None
    destination: str
    code: str
    message: str
    stage: str
    topic: str
    partition: int | None
    offset: int | None
    source: str | None
    event_id: str | None
    key_b64: str | None
    value_b64: str | None
