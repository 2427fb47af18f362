"""The `data` bodies of every event type, modelled on IPC-CFX (DOMAIN.md §2).

Bodies accept unknown optional fields (new schema versions only add optional fields), so
these structs do not forbid unknown fields; the envelope does. The JSON Schema files under
`schemas/json/` are generated from these models (`python -m linetrace.schemas.jsonschema`)
and a test keeps the two in agreement.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec
from msgspec import Meta

#: The largest integers the ledger's columns hold (PostgreSQL `integer` and `bigint`): a value
#: beyond them would pass ingest and then fail the database write, so admission refuses it.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1

#: Characters no identifier or label may contain: C0 and C1 controls and DEL (terminal
#: escapes, newlines), the Unicode line and paragraph separators, and the bidirectional marks,
#: overrides and isolates (they reorder or hide text on a screen). A regex character range.
CONTROL_CHARS = r"\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
#: Serials, lots, MPNs, work orders, ...: a letter or digit, then letters, digits and `._:/-`.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:/-]*\Z"
#: A station id (`source`): 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
STATION_ID_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}\Z"
#: Names a person reads (operations, test and measurement names, reference designators,
#: firmware images and versions): any text on one line, without control characters.
LABEL_PATTERN = rf"^[^{CONTROL_CHARS}]*\Z"
#: Free text (reasons, notes, raw driver messages) may span lines, but never holds NUL (which
#: PostgreSQL cannot store in text and many tools cut at).
TEXT_PATTERN = r"^[^\x00]*\Z"

Id = Annotated[str, Meta(min_length=1, max_length=128, pattern=ID_PATTERN)]
#: Identifiers stored in 64-character columns (part category, date code, station type).
ShortId = Annotated[str, Meta(min_length=1, max_length=64, pattern=ID_PATTERN)]
StationId = Annotated[str, Meta(min_length=1, max_length=64, pattern=STATION_ID_PATTERN)]
Label = Annotated[str, Meta(min_length=1, max_length=256, pattern=LABEL_PATTERN)]
ShortLabel = Annotated[str, Meta(min_length=1, max_length=128, pattern=LABEL_PATTERN)]
LongLabel = Annotated[str, Meta(min_length=1, max_length=1024, pattern=LABEL_PATTERN)]
UnitSymbol = Annotated[str, Meta(max_length=32, pattern=LABEL_PATTERN)]  # "V", "°C", "" (none)
Text = Annotated[str, Meta(max_length=4096, pattern=TEXT_PATTERN)]
Sha256Hex = Annotated[str, Meta(pattern=r"^[0-9a-f]{64}\Z")]
Uuid = Annotated[
    str, Meta(pattern=r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\Z")
]
Step = Annotated[int, Meta(ge=0, le=100000)]
Count = Annotated[int, Meta(ge=0, le=INT32_MAX)]
#: Hardware event counters (ECC, PCIe replays, NVLink CRC errors): 64-bit in NVML.
Counter64 = Annotated[int, Meta(ge=0, le=INT64_MAX)]
GpuIndex = Annotated[int, Meta(ge=0, le=63)]


class Body(msgspec.Struct, kw_only=True, omit_defaults=True):
    """Base of every body."""


# --- unit lifecycle (line.events) -------------------------------------------------------


class UnitArrived(Body, kw_only=True):
    step: Step
    lane: Count = 0


class UnitDeparted(Body, kw_only=True):
    step: Step
    lane: Count = 0


class WorkStarted(Body, kw_only=True):
    transaction_id: Uuid
    step: Step
    operation: Label
    work_order: Id
    product: Id
    kind: Literal["server", "assembly"] = "server"
    recipe: Label | None = None
    recipe_revision: ShortLabel | None = None
    operator: Id | None = None


class WorkCompleted(Body, kw_only=True):
    transaction_id: Uuid
    step: Step
    result: Literal["Completed", "Failed", "Aborted", "Skipped"]


class Defect(Body, kw_only=True):
    code: Id
    category: Label
    ref: Label | None = None
    confidence: Annotated[int, Meta(ge=1, le=100)] | None = None
    image_ref: LongLabel | None = None


class UnitInspected(Body, kw_only=True):
    transaction_id: Uuid | None = None
    method: Literal["Human", "AOI", "AXI"]
    result: Literal["Passed", "Failed"]
    defects: list[Defect] = []


class Measurement(Body, kw_only=True):
    name: Label
    value: float
    unit: UnitSymbol
    expected: float | None = None
    min: float | None = None
    max: float | None = None


class TestResult(Body, kw_only=True):
    name: Label
    result: Literal["Passed", "Failed", "Error", "Aborted", "Skipped"]
    measurements: list[Measurement] = []


class UnitTested(Body, kw_only=True):
    transaction_id: Uuid | None = None
    method: Literal["ICT", "FCT", "BST", "Burnin"]
    result: Literal["Passed", "Failed", "Error", "Aborted"]
    fixture: Id | None = None
    tests: list[TestResult] = []


class InstalledItem(Body, kw_only=True):
    """One installed part. `lot` always; `serial` for serialized parts, else `qty`.

    `parent` is the serial of the part it is mounted on (a GPU on its baseboard); absent means
    the unit itself. An item whose serial is a unit with a route of its own (the mainboard PCBA)
    is a sub-assembly: its own genealogy becomes part of this unit's. For a sub-assembly,
    `last_event` is the id of its last event before this install (its chain head as the
    installing station knew it): the unit's `unit.sealed` covers the sub-assembly's events up
    to that one, and waits for it if the ledger has not read it yet.
    """

    lot: Id
    mpn: Id
    category: ShortId | None = None
    pn: Id | None = None
    serial: Id | None = None
    qty: Annotated[int, Meta(ge=1, le=INT32_MAX)] | None = None
    slot: Annotated[int, Meta(ge=0, le=1023)] | None = None
    ref: Label | None = None
    parent: Id | None = None
    last_event: Uuid | None = None


class MaterialsInstalled(Body, kw_only=True):
    transaction_id: Uuid | None = None
    items: Annotated[list[InstalledItem], Meta(min_length=1)]


class RemovedItem(Body, kw_only=True):
    serial: Id | None = None
    lot: Id | None = None
    mpn: Id | None = None
    slot: Annotated[int, Meta(ge=0, le=1023)] | None = None
    ref: Label | None = None


class MaterialsUninstalled(Body, kw_only=True):
    transaction_id: Uuid | None = None
    items: Annotated[list[RemovedItem], Meta(min_length=1)]
    reason: Literal["DefectiveMaterial", "DefectiveInstallation", "IncorrectMaterial", "Other"]
    defect: Id | None = None
    note: Text | None = None


class UnitRepaired(Body, kw_only=True):
    result: Literal["RepairSuccessful", "UnableToRepair", "Scrap"]
    repairs: list[Id] = []
    return_step: Step | None = None
    note: Text | None = None


class UnitScrapped(Body, kw_only=True):
    reason: Text


class FirmwareFlashed(Body, kw_only=True):
    component: Id
    image: Label
    version: ShortLabel
    sha256: Sha256Hex
    target: Id | None = None


class UnitPacked(Body, kw_only=True):
    tamper_seal: Id
    carton: Id
    order: Id


class UnitShipped(Body, kw_only=True):
    order: Id
    carton: Id
    shipment: Id
    destination: Text


# --- receipts (line.receipts) -----------------------------------------------------------


class Document(Body, kw_only=True):
    kind: Id
    sha256: Sha256Hex
    name: Label | None = None


class MaterialReceived(Body, kw_only=True):
    lot: Id
    mpn: Id
    supplier: Id
    date_code: ShortId
    qty: Annotated[int, Meta(ge=1, le=INT32_MAX)]
    serials: list[Id] = []
    documents: list[Document] = []


# --- burn-in (line.telemetry) -----------------------------------------------------------


class GpuSample(Body, kw_only=True):
    gpu_index: GpuIndex
    gpu_serial: Id
    gpu_uuid: ShortLabel
    temp_c: float
    mem_temp_c: float | None = None
    temp_margin_c: float | None = None
    power_w: float
    sm_clock_mhz: float
    mem_clock_mhz: float
    util_pct: Annotated[float, Meta(ge=0, le=100)]
    clocks_event_reasons: Counter64 = 0
    ecc_sbe_vol: Counter64 = 0
    ecc_dbe_vol: Counter64 = 0
    remap_unc: Counter64 = 0
    remap_pending: Counter64 = 0
    remap_failed: Counter64 = 0
    pcie_replay: Counter64 = 0
    pcie_gen: Count | None = None
    pcie_width: Count | None = None
    nvlink_crc: Counter64 = 0
    nvlink_recovery: Counter64 = 0
    nvlink_links_up: Count | None = None


class BurninTelemetry(Body, kw_only=True):
    run_id: Uuid
    samples: list[GpuSample]


class BurninXid(Body, kw_only=True):
    run_id: Uuid
    gpu_index: GpuIndex
    xid: Annotated[int, Meta(ge=0, le=INT32_MAX)]
    gpu_serial: Id | None = None
    recovery_action: Text | None = None
    raw: Text = ""


class GpuInventory(Body, kw_only=True):
    gpu_index: GpuIndex
    serial: Id
    uuid: ShortLabel
    board_pn: ShortLabel | None = None


class Thresholds(Body, kw_only=True):
    slowdown_c: float
    shutdown_c: float
    max_operating_c: float | None = None


class BurninRun(Body, kw_only=True):
    run_id: Uuid
    phase: Literal["start", "end"]
    sku: Id | None = None
    inventory: list[GpuInventory] = []
    driver: ShortLabel | None = None
    vbios: ShortLabel | None = None
    thresholds: Thresholds | None = None
    power_limit_w: float | None = None


# --- stations (line.stations) -----------------------------------------------------------

E10_STATES = {1000: "PRD", 2000: "SBY", 3000: "ENG", 4000: "SDT", 5000: "USD", 6000: "NST"}


class StationState(Body, kw_only=True):
    state: Literal[1000, 2000, 3000, 4000, 5000, 6000]
    reason: Text | None = None


class FaultOccurred(Body, kw_only=True):
    fault_id: Id
    cause: Text
    severity: Literal["Information", "Warning", "Error", "Alarm"]
    code: Id
    description: Text | None = None


class FaultCleared(Body, kw_only=True):
    fault_id: Id


class StationEnrolled(Body, kw_only=True):
    """System event: a station public key, registered by the plant (CONTRACTS.md)."""

    station_id: StationId
    station_type: ShortId
    public_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{43}=\Z")]
    keyid: Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")]



# --- verifiable ledger (system events, issue 5) -----------------------------------------


class MaterialChecked(Body, kw_only=True):
    """System event on line.receipts: a receipt checked against the approved vendor list."""

    lot: Id
    mpn: Id
    supplier: Id
    receipt: Uuid  # id of the material.received event checked
    result: Literal["Passed", "Failed"]
    reason: Text | None = None
    avl_sha256: Sha256Hex  # which revision of the AVL decided (SHA-256 of its RFC 8785 form)


class SealedAssembly(Body, kw_only=True):
    serial: Id
    chain_head: Sha256Hex  # leaf hash of the sub-assembly's last leaf when sealed


class UnitSealed(Body, kw_only=True):
    """System event on line.events after `unit.packed`: the frozen HBOM and the unit's chain.

    `chain_head` is the leaf hash (hex) of the unit's previous leaf, so the seal covers every
    earlier event of the unit; `assemblies` does the same for sub-assemblies installed in it.
    """

    hbom_sha256: Sha256Hex
    chain_head: Sha256Hex
    packed: Uuid  # id of the unit.packed event that caused the seal
    tamper_seal: Id | None = None
    assemblies: list[SealedAssembly] = []


class TopicSeq(Body, kw_only=True):
    topic: Id
    stationseq: Annotated[str, Meta(pattern=r"^[0-9]{16}\Z")]


class StationRevoked(Body, kw_only=True):
    """System event: a station key revoked. Events signed by it stay valid up to `last_valid`.

    `last_valid` names, per topic, the last stationseq (16 digits) accepted from the station
    there before the revocation; a later stationseq signed by this key is quarantined, and so is
    any event signed by it on a topic not listed.
    """

    station_id: StationId
    keyid: Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")]
    last_valid: list[TopicSeq] = []
    reason: Text | None = None


class VerdictReason(Body, kw_only=True):
    """One reason a burn-in verdict failed: a DOMAIN.md §4 hard-fail rule, in plain words;
    `gpu_index`/`gpu_serial` when it is about one GPU."""

    code: ShortId
    message: Text
    gpu_index: GpuIndex | None = None
    gpu_serial: Id | None = None


class GpuFigures(Body, kw_only=True):
    """One GPU's figures over a burn-in run (counters: last reading minus first)."""

    gpu_index: GpuIndex
    gpu_serial: Id | None = None
    result: Literal["Passed", "Failed"]
    samples: Count
    temp_max_c: float | None = None
    temp_mean_c: float | None = None
    margin_min_c: float | None = None
    power_mean_w: float | None = None  # under load
    sm_clock_mean_mhz: float | None = None  # under load
    ecc_sbe_new: Counter64 = 0
    ecc_dbe_new: Counter64 = 0
    remap_unc_new: Counter64 = 0
    remap_pending: Counter64 = 0
    remap_failed: Counter64 = 0
    pcie_gen_min: Count | None = None  # under load
    pcie_width_min: Count | None = None  # under load
    pcie_replay_new: Counter64 = 0
    nvlink_crc_per_s: float = 0.0
    nvlink_recovery_new: Counter64 = 0
    xids: list[Annotated[int, Meta(ge=0, le=INT32_MAX)]] = []
    clock_event_bits: Counter64 = 0  # every clocks_event_reasons bit seen under load


class BurninVerdict(Body, kw_only=True):
    """System event on line.events (subject = the unit): linetrace's verdict on one burn-in
    run, decided from the run's own events by the DOMAIN.md §4 hard-fail rules (docs/burnin.md).

    `telemetry_sha256` commits the run's `burnin.telemetry` events (`telemetry_events` of
    them): SHA-256 over the concatenated SHA-256 digests of their exact signed bytes, in
    `stationseq` order. `limits_sha256` names the per-SKU limits file that decided it.
    """

    run_id: Uuid
    station: StationId
    sku: Id | None = None
    result: Literal["Passed", "Failed"]
    reasons: list[VerdictReason] = []
    gpus: list[GpuFigures] = []
    started: Text
    ended: Text
    run_start: Uuid | None = None  # id of the run's burnin.run (start)
    run_end: Uuid  # id of the burnin.run (end) that caused the verdict
    results: list[Uuid] = []  # ids of the run's unit.tested (method Burnin) events
    station_result: Literal["Passed", "Failed", "Error", "Aborted"] | None = None
    telemetry_sha256: Sha256Hex
    telemetry_events: Count
    limits_sha256: Sha256Hex
    limits_version: ShortLabel


# --- line commands (line.commands, linetrace -> stations) --------------------------------


class CommandHold(Body, kw_only=True):
    """System event on line.commands, keyed by the station it is addressed to: hold `unit`.

    A held unit is not started anywhere until a `command.release` for it (CFX ValidateUnits
    answered "no"). `hold_id` names the hold so a release can say which one it ends.
    """

    unit: Id
    reason: Text
    hold_id: Id | None = None


class CommandRelease(Body, kw_only=True):
    """System event on line.commands, keyed by station id: `unit` may move again."""

    unit: Id
    reason: Text
    hold_id: Id | None = None


class CommandRoute(Body, kw_only=True):
    """System event on line.commands, keyed by station id: send `unit` to `step` next.

    `decision` says why: `rework` (the route's rework loop after a `Failed` result, to the
    repair step), or a person's disposition of a unit held for one: `scrap` (to `step`, the
    repair station, where it is scrapped), `repair` (one more repair loop) or `use-as-is`
    (on to `step`, the step after the one it failed). `hold_id` names the hold a disposition
    ended.
    """

    unit: Id
    step: Step
    station_type: ShortId
    decision: Literal["rework", "scrap", "repair", "use-as-is"] = "rework"
    reason: Text
    hold_id: Id | None = None


class CommandLock(Body, kw_only=True):
    """System event on line.commands, keyed by the station it locks: while `locked`, the
    station starts no unit (CFX LockStation); `locked: false` unlocks it. `hold_id`: the
    station hold that locked it."""

    station: StationId
    locked: bool
    reason: Text
    hold_id: Id | None = None


# --- people and holds (line.holds, system events carrying a person's signed statement) ---

#: A user name: 1-64 of `a-z 0-9 . _ -`, starting with a letter or digit.
UserId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]{0,63}\Z")]
KeyId = Annotated[str, Meta(pattern=r"^[0-9a-f]{16}\Z")]
B64 = Annotated[str, Meta(max_length=65536, pattern=r"^[A-Za-z0-9+/]*={0,2}\Z")]
Role = Literal["viewer", "supervisor", "quality", "admin"]
HoldScope = Literal["unit", "lot", "mpn", "work_order", "station"]


class SignedStatement(Body, kw_only=True):
    """A person's statement, signed by their own Ed25519 key (`linetrace.schemas.statements`).

    `statement` is base64 of the exact bytes signed (a JSON object naming the action, its
    target and details, the request UUID and the wall-clock time); `signature` is base64 of
    the Ed25519 signature over those bytes by `keyid`, a key enrolled for `user`. Anyone with
    the user's public key can check it, so not even the plant key can forge a person's
    approval.
    """

    user: UserId
    keyid: KeyId
    statement: B64
    signature: B64


class HoldPlaced(Body, kw_only=True):
    """System event on line.holds (subject = `hold_id`): a hold is in force from its position
    in the log.

    `scope` and `target` say what is held (a unit serial, a lot, an MPN, a work order or a
    station id). `category` `quality` holds need two quality users to release; `operational`
    ones one supervisor. `code` names why linetrace placed it (`route.*`, `disposition.*`) or
    `hold.manual`. `units`: the units it held when placed (a lot or MPN hold cascades through
    sub-assemblies); `shipped`: shipped units that contain the held lot or MPN (for the
    quality team). `placed_by` is `linetrace` or the user whose `statement` placed it.
    """

    hold_id: Id
    scope: HoldScope
    target: Id
    reason: Text
    category: Literal["quality", "operational"]
    code: ShortId
    placed_by: Id
    units: list[Id] = []
    shipped: list[Id] = []
    step: Step | None = None
    station: StationId | None = None
    cause: Id | None = None  # the event that caused a hold linetrace placed
    statement: SignedStatement | None = None


class HoldApproved(Body, kw_only=True):
    """System event on line.holds: one quality user's signed approval to release a quality
    hold; the hold stays in force until a second quality user signs (`hold.released`)."""

    hold_id: Id
    reason: Text | None = None
    statement: SignedStatement


class HoldReleased(Body, kw_only=True):
    """System event on line.holds: the hold ended; `statements` are the signatures that
    released it (two quality users' for a quality hold)."""

    hold_id: Id
    reason: Text | None = None
    released_by: list[UserId]
    statements: list[SignedStatement]


class HoldDisposition(Body, kw_only=True):
    """System event on line.holds: the decision on a unit held for disposition (after its
    route's `max_loops` repairs, or a repair that could not repair it): `scrap`, `use-as-is`
    (with a reason) or another `repair`. It ends the hold."""

    hold_id: Id
    unit: Id
    decision: Literal["scrap", "use-as-is", "repair"]
    reason: Text
    decided_by: UserId
    statement: SignedStatement


class UserEnrolled(Body, kw_only=True):
    """System event on line.holds (subject = the user): a person's Ed25519 public key and
    role. `statement`: the admin's signed approval (absent only for the first admin)."""

    user: UserId
    role: Role
    public_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{43}=\Z")]
    keyid: KeyId
    statement: SignedStatement | None = None


class UserRoleChanged(Body, kw_only=True):
    """System event on line.holds: a user's role changed, signed by an admin."""

    user: UserId
    role: Role
    statement: SignedStatement


class UserKeyRevoked(Body, kw_only=True):
    """System event on line.holds: a user's key revoked (statements it signs from now on are
    refused), signed by an admin."""

    user: UserId
    keyid: KeyId
    statement: SignedStatement


class UserRemoved(Body, kw_only=True):
    """System event on line.holds: a user removed (every key of theirs revoked), signed by an
    admin."""

    user: UserId
    statement: SignedStatement


class ConsoleEnrolled(Body, kw_only=True):
    """System event on line.holds (subject = the console's name): the web console's Ed25519
    public key, enrolled by the plant. A statement signed by this key is the console's
    *attestation* that the user it names, signed in to the console, took the action: accepted
    for hold and alert actions of that user (enrolled, active, a role that allows it), never
    for user administration. Weaker than the person's own key (docs/security.md)."""

    name: StationId
    public_key: Annotated[str, Meta(pattern=r"^[A-Za-z0-9+/]{43}=\Z")]
    keyid: KeyId


class ConsoleRevoked(Body, kw_only=True):
    """System event on line.holds (subject = the console's name): a console key revoked by
    the plant; statements it signs from this point of the log on are refused."""

    name: StationId
    keyid: KeyId
    reason: Text | None = None


#: Event type -> body model. The single registry used by decoding, schemas and docs.
BODY_OF_TYPE: dict[str, type[Body]] = {
    "unit.arrived": UnitArrived,
    "unit.departed": UnitDeparted,
    "work.started": WorkStarted,
    "work.completed": WorkCompleted,
    "unit.inspected": UnitInspected,
    "unit.tested": UnitTested,
    "materials.installed": MaterialsInstalled,
    "materials.uninstalled": MaterialsUninstalled,
    "unit.repaired": UnitRepaired,
    "unit.scrapped": UnitScrapped,
    "firmware.flashed": FirmwareFlashed,
    "unit.packed": UnitPacked,
    "unit.shipped": UnitShipped,
    "material.received": MaterialReceived,
    "burnin.telemetry": BurninTelemetry,
    "burnin.xid": BurninXid,
    "burnin.run": BurninRun,
    "station.state": StationState,
    "fault.occurred": FaultOccurred,
    "fault.cleared": FaultCleared,
    "station.enrolled": StationEnrolled,
    "station.revoked": StationRevoked,
    "material.checked": MaterialChecked,
    "unit.sealed": UnitSealed,
    "burnin.verdict": BurninVerdict,
    "command.hold": CommandHold,
    "command.release": CommandRelease,
    "command.route": CommandRoute,
    "command.lock": CommandLock,
    "hold.placed": HoldPlaced,
    "hold.approved": HoldApproved,
    "hold.released": HoldReleased,
    "hold.disposition": HoldDisposition,
    "user.enrolled": UserEnrolled,
    "user.changed": UserRoleChanged,
    "user.revoked": UserKeyRevoked,
    "user.removed": UserRemoved,
    "console.enrolled": ConsoleEnrolled,
    "console.revoked": ConsoleRevoked,
}

#: Types only linetrace itself may author (source `linetrace`, no `stationseq`).
SYSTEM_TYPES = frozenset({"station.enrolled", "station.revoked", "material.checked", "unit.sealed",
                          "burnin.verdict",
                          "command.hold", "command.release", "command.route", "command.lock",
                          "hold.placed", "hold.approved", "hold.released", "hold.disposition",
                          "user.enrolled", "user.changed", "user.revoked",
                          "user.removed", "console.enrolled", "console.revoked",
                          "alert.acknowledged", "alert.shelved", "alert.unshelved",
                          "alert.commented", "alert.outofservice", "alert.inservice"})

# People's actions on alerts (alert.*): their bodies live in alert_events.py, which builds on
# Body and SignedStatement above and adds them to BODY_OF_TYPE when imported (here, last).
from . import alert_events as _alert_events  # noqa: E402,F401
