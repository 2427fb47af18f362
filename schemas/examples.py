"""One realistic, valid example of every event type, from an 8-GPU HGX server line.

The published JSON Schemas embed these (`examples`), the docs quote them, and tests in every
room build on them. Everything is fixed (ids, times, `stationseq`, keys), so `example_event`
returns the same bytes on every run and every machine.
"""

from __future__ import annotations

import hashlib

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .bodies import (
    BODY_OF_TYPE,
    SYSTEM_TYPES,
    Body,
    BurninRun,
    BurninVerdict,
    GpuFigures,
    VerdictReason,
    BurninTelemetry,
    BurninXid,
    CommandHold,
    CommandLock,
    CommandRelease,
    CommandRoute,
    ConsoleEnrolled,
    ConsoleRevoked,
    Defect,
    Document,
    FaultCleared,
    FaultOccurred,
    FirmwareFlashed,
    HoldApproved,
    HoldDisposition,
    HoldPlaced,
    HoldReleased,
    GpuInventory,
    GpuSample,
    InstalledItem,
    MaterialChecked,
    MaterialReceived,
    MaterialsInstalled,
    MaterialsUninstalled,
    Measurement,
    RemovedItem,
    SealedAssembly,
    StationEnrolled,
    StationRevoked,
    TopicSeq,
    StationState,
    TestResult,
    Thresholds,
    UnitArrived,
    UnitDeparted,
    UnitInspected,
    UnitPacked,
    UnitRepaired,
    UnitScrapped,
    UnitSealed,
    UnitShipped,
    UnitTested,
    UserEnrolled,
    UserKeyRevoked,
    UserRemoved,
    UserRoleChanged,
    WorkCompleted,
    WorkStarted,
)
from .alert_events import (
    AlertAcknowledged,
    AlertCommented,
    AlertOutOfService,
    AlertReturnedToService,
    AlertShelved,
    AlertUnshelved,
)
from .envelope import SYSTEM_SOURCE, deterministic_id, encode_event
from .signing import keyid_of, public_key_b64
from .statements import new_statement, sign_statement

SERVER = "SRV-S7-000001"
MAINBOARD = "MB-S7-000001"
BASEBOARD = "1660823000017"
GPU_SERIALS = [f"16549230001{i:02d}" for i in range(8)]
GPU_UUIDS = [f"GPU-5f2d7c1a-8e3b-4c9d-a1f0-7b6e2d9c30{i:02d}" for i in range(8)]
GPU_LOT = "LOT-H100-2514-0042"
GPU_MPN = "699-2G520-0200-000"  # NVIDIA H100 SXM5 80GB module board part number
BASEBOARD_LOT = "LOT-HGX-2512-0007"
BASEBOARD_MPN = "935-24287-0001-000"  # NVIDIA HGX H100 8-GPU baseboard
WORK_ORDER = "WO-2025-000417"
PRODUCT = "HGX-H100-8GPU"
TRANSACTION = "3b8e6f0a-9d41-4c2b-8f7e-1a2b3c4d5e6f"
RUN_ID = "c0ffee00-1234-4abc-9def-0123456789ab"

#: Event time and `stationseq` of every example (microseconds since the epoch: a simple,
#: restart-proof way for a station to keep its sequence increasing, see schemas/README.md).
EXAMPLE_TIME = "2025-04-03T08:15:30.250Z"
EXAMPLE_STATIONSEQ = 1743668130250000

#: The station key of the `station.enrolled` example; derived, so never a real secret.
EXAMPLE_STATION_KEY = Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"linetrace example station burnin-03").digest()
)

#: Example people (keys derived, so never real secrets): two quality engineers and an admin.
EXAMPLE_USER_KEYS = {
    name: Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"linetrace example user {name}".encode()).digest())
    for name in ("q.meyer", "q.okafor", "admin.lee")
}
#: The web console's key of the `console.enrolled` example (derived: never a real secret).
EXAMPLE_CONSOLE_KEY = Ed25519PrivateKey.from_private_bytes(
    hashlib.sha256(b"linetrace example console").digest())
HOLD_ID = "HOLD-000042"
ALERT_ID = "AL-3f9a1c2b7d04"
EXAMPLE_REQUEST = "7c9e6679-7425-40de-944b-e07fc1f90ae7"


def _signed(user: str, action: str, target: str, details: dict[str, str]) -> object:
    from datetime import datetime

    st = new_statement(action, target, details, user=user, request=EXAMPLE_REQUEST,
                       time=datetime.fromisoformat(EXAMPLE_TIME.replace("Z", "+00:00")))
    return sign_statement(st, EXAMPLE_USER_KEYS[user])


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _gpu_item(slot: int) -> InstalledItem:
    return InstalledItem(
        lot=GPU_LOT, mpn=GPU_MPN, category="gpu", pn="H100-SXM5-80GB",
        serial=GPU_SERIALS[slot], slot=slot, parent=BASEBOARD,
    )


def _sample(i: int) -> GpuSample:
    return GpuSample(
        gpu_index=i, gpu_serial=GPU_SERIALS[i], gpu_uuid=GPU_UUIDS[i],
        temp_c=71.0 + i % 3, mem_temp_c=78.0 + i % 2, temp_margin_c=14.0 - i % 3,
        power_w=688.5 + i, sm_clock_mhz=1980.0, mem_clock_mhz=2619.0, util_pct=100.0,
        clocks_event_reasons=0x1 if i == 7 else 0, ecc_sbe_vol=1 if i == 2 else 0,
        pcie_replay=0, pcie_gen=5, pcie_width=16, nvlink_crc=0, nvlink_links_up=18,
    )


#: Event type -> (source station, subject, body).
_EXAMPLES: dict[str, tuple[str, str, Body]] = {
    "unit.arrived": ("gpu-install-01", SERVER, UnitArrived(step=60, lane=1)),
    "unit.departed": ("gpu-install-01", SERVER, UnitDeparted(step=60, lane=1)),
    "work.started": ("gpu-install-01", SERVER, WorkStarted(
        transaction_id=TRANSACTION, step=60, operation="baseboard + GPU install",
        work_order=WORK_ORDER, product=PRODUCT, kind="server", recipe="hgx-h100-gpu-install",
        recipe_revision="C", operator="op-1042",
    )),
    "work.completed": ("gpu-install-01", SERVER, WorkCompleted(
        transaction_id=TRANSACTION, step=60, result="Completed",
    )),
    "unit.inspected": ("aoi-01", MAINBOARD, UnitInspected(
        transaction_id="8d1f4a2e-6b3c-4e5f-9a7b-0c1d2e3f4a5b", method="AOI", result="Failed",
        defects=[Defect(
            code="TOMBSTONE", category="Solder", ref="C1042", confidence=87,
            image_ref="aoi-01/2025-04-03/MB-S7-000001/C1042.png",
        )],
    )),
    "unit.tested": ("ict-02", MAINBOARD, UnitTested(
        transaction_id="1e2d3c4b-5a69-4788-97a6-b5c4d3e2f100", method="ICT", result="Passed",
        fixture="FX-ICT-0007",
        tests=[TestResult(name="P12V_MAIN rail", result="Passed", measurements=[
            Measurement(name="P12V_MAIN", value=12.04, unit="V", expected=12.0, min=11.4, max=12.6),
        ])],
    )),
    "materials.installed": ("gpu-install-01", SERVER, MaterialsInstalled(
        transaction_id=TRANSACTION,
        items=[
            InstalledItem(lot=BASEBOARD_LOT, mpn=BASEBOARD_MPN, category="baseboard",
                          pn="HGX-H100-BB", serial=BASEBOARD),
            *(_gpu_item(slot) for slot in range(8)),
            InstalledItem(lot="LOT-SCR-2509-0311", mpn="M3X6-T10-NI", category="fastener",
                          qty=32, ref="BB-MOUNT"),
        ],
    )),
    "materials.uninstalled": ("repair-01", SERVER, MaterialsUninstalled(
        transaction_id="77a1b2c3-d4e5-4f60-8172-93a4b5c6d7e8",
        items=[RemovedItem(serial=GPU_SERIALS[3], lot=GPU_LOT, mpn=GPU_MPN, slot=3, ref="GPU3")],
        reason="DefectiveMaterial", defect="DEF-000231",
        note="XID 79 during burn-in, GPU fell off the bus",
    )),
    "unit.repaired": ("repair-01", SERVER, UnitRepaired(
        result="RepairSuccessful", repairs=["DEF-000231"], return_step=90,
        note="GPU in slot 3 replaced; unit returns to burn-in",
    )),
    "unit.scrapped": ("repair-01", SERVER, UnitScrapped(
        reason="HGX baseboard NVLink switch failure, not repairable on site",
    )),
    "firmware.flashed": ("firmware-01", SERVER, FirmwareFlashed(
        component="BMC", image="hgx-h100-bmc", version="24.09-1",
        sha256=_sha("hgx-h100-bmc 24.09-1"), target="bmc0",
    )),
    "unit.packed": ("pack-01", SERVER, UnitPacked(
        tamper_seal="TS-00093121", carton="CTN-2025-004211", order="SO-88120",
    )),
    "unit.shipped": ("shipping-01", SERVER, UnitShipped(
        order="SO-88120", carton="CTN-2025-004211", shipment="SHP-2025-0312",
        destination="Equinix SV5, 255 Caspian Dr, Sunnyvale CA, US",
    )),
    "material.received": ("receiving-01", GPU_LOT, MaterialReceived(
        lot=GPU_LOT, mpn=GPU_MPN, supplier="NVIDIA", date_code="2514", qty=8,
        serials=list(GPU_SERIALS),
        documents=[Document(kind="coc", sha256=_sha("CoC LOT-H100-2514-0042"),
                            name="CoC-LOT-H100-2514-0042.pdf")],
    )),
    "burnin.telemetry": ("burnin-03", SERVER, BurninTelemetry(
        run_id=RUN_ID, samples=[_sample(i) for i in range(8)],
    )),
    "burnin.xid": ("burnin-03", SERVER, BurninXid(
        run_id=RUN_ID, gpu_index=3, xid=79, gpu_serial=GPU_SERIALS[3],
        recovery_action="GPU_RESET_REQUIRED",
        raw="NVRM: Xid (PCI:0000:9d:00): 79, pid=48213, name=dcgmproftester12, "
            "GPU has fallen off the bus.",
    )),
    "burnin.run": ("burnin-03", SERVER, BurninRun(
        run_id=RUN_ID, phase="start", sku="H100-SXM5-80GB",
        inventory=[GpuInventory(gpu_index=i, serial=GPU_SERIALS[i], uuid=GPU_UUIDS[i],
                                board_pn=GPU_MPN) for i in range(8)],
        driver="550.90.07", vbios="96.00.89.00.01",
        thresholds=Thresholds(slowdown_c=87.0, shutdown_c=92.0, max_operating_c=85.0),
        power_limit_w=700.0,
    )),
    "station.state": ("burnin-03", "burnin-03", StationState(state=1000, reason="burn-in running")),
    "fault.occurred": ("burnin-03", "burnin-03", FaultOccurred(
        fault_id="F-burnin-03-0007", cause="rack PDU B over current", severity="Warning",
        code="PDU-OC", description="PDU B draw 31.8 A, limit 30 A",
    )),
    "fault.cleared": ("burnin-03", "burnin-03", FaultCleared(fault_id="F-burnin-03-0007")),
    "station.enrolled": (SYSTEM_SOURCE, "burnin-03", StationEnrolled(
        station_id="burnin-03", station_type="burnin",
        public_key=public_key_b64(EXAMPLE_STATION_KEY.public_key()),
        keyid=keyid_of(EXAMPLE_STATION_KEY.public_key()),
    )),
    "station.revoked": (SYSTEM_SOURCE, "burnin-03", StationRevoked(
        station_id="burnin-03", keyid=keyid_of(EXAMPLE_STATION_KEY.public_key()),
        last_valid=[TopicSeq(topic="line.events", stationseq="0000000000184452"),
                    TopicSeq(topic="line.telemetry", stationseq="0000000000184467")],
        reason="station PC replaced; key retired",
    )),
    "material.checked": (SYSTEM_SOURCE, GPU_LOT, MaterialChecked(
        lot=GPU_LOT, mpn=GPU_MPN, supplier="NVIDIA",
        receipt=deterministic_id("material.received", GPU_LOT, "example"), result="Passed",
        avl_sha256=_sha("approved vendor list rev 12"),
    )),
    "unit.sealed": (SYSTEM_SOURCE, SERVER, UnitSealed(
        hbom_sha256=_sha("HBOM of SRV-S7-000001"), chain_head=_sha("leaf before the seal"),
        packed=deterministic_id("unit.packed", SERVER, "example"), tamper_seal="TS-00093121",
        assemblies=[SealedAssembly(serial=MAINBOARD, chain_head=_sha("last leaf of the PCBA"))],
    )),
    "burnin.verdict": (SYSTEM_SOURCE, SERVER, BurninVerdict(
        run_id="0d7f6a52-1c4b-4f0e-9a3d-5b2e8c1f7a90", station="burnin-03", sku="H100-SXM",
        result="Failed", reasons=[VerdictReason(
            code="ecc.dbe", message="GPU 3 (1654922000413): 2 new double-bit ECC errors",
            gpu_index=3, gpu_serial="1654922000413")],
        gpus=[GpuFigures(gpu_index=3, gpu_serial="1654922000413", result="Failed",
                         samples=600, temp_max_c=71.5, temp_mean_c=68.2, margin_min_c=15.5,
                         power_mean_w=655.1, sm_clock_mean_mhz=1980.0, ecc_dbe_new=2,
                         pcie_gen_min=5, pcie_width_min=16)],
        started="2025-04-03T09:00:00.000Z", ended="2025-04-03T09:10:00.000Z",
        run_end=deterministic_id("burnin.run", SERVER, "example"),
        telemetry_sha256=_sha("telemetry of the run"), telemetry_events=600,
        limits_sha256=_sha("burn-in limits v1"), limits_version="1",
    )),
    "command.hold": (SYSTEM_SOURCE, "burnin-03", CommandHold(
        unit=SERVER, reason="GPU lot LOT-H100-2514-0042 under investigation (lot alert)",
        hold_id="HOLD-000042",
    )),
    "command.release": (SYSTEM_SOURCE, "burnin-03", CommandRelease(
        unit=SERVER, reason="lot LOT-H100-2514-0042 cleared by quality", hold_id="HOLD-000042",
    )),
    "command.route": (SYSTEM_SOURCE, "burnin-03", CommandRoute(
        unit=SERVER, step=900, station_type="repair", decision="rework",
        reason="step 90 burn-in Failed (GPU slot 3 ECC double-bit errors): repair, then return "
        "to step 80",
    )),
    "command.lock": (SYSTEM_SOURCE, "burnin-03", CommandLock(
        station="burnin-03", locked=True, reason="rack thermocouple out of calibration",
        hold_id="HOLD-000043",
    )),
    "hold.placed": (SYSTEM_SOURCE, HOLD_ID, HoldPlaced(
        hold_id=HOLD_ID, scope="lot", target=GPU_LOT, reason="GPU lot under investigation: "
        "three ECC failures in burn-in this week", category="quality", code="hold.manual",
        placed_by="q.meyer", units=[SERVER], statement=_signed(  # type: ignore[arg-type]
            "q.meyer", "hold.place", GPU_LOT, {"scope": "lot", "reason": "GPU lot under "
                                               "investigation: three ECC failures in burn-in "
                                               "this week"}),
    )),
    "hold.approved": (SYSTEM_SOURCE, HOLD_ID, HoldApproved(
        hold_id=HOLD_ID, reason="supplier 8D report accepted", statement=_signed(  # type: ignore[arg-type]
            "q.meyer", "hold.release", HOLD_ID, {"reason": "supplier 8D report accepted"}),
    )),
    "hold.released": (SYSTEM_SOURCE, HOLD_ID, HoldReleased(
        hold_id=HOLD_ID, reason="supplier 8D report accepted", released_by=["q.meyer", "q.okafor"],
        statements=[_signed(u, "hold.release", HOLD_ID,  # type: ignore[misc]
                            {"reason": "supplier 8D report accepted"})
                    for u in ("q.meyer", "q.okafor")],
    )),
    "hold.disposition": (SYSTEM_SOURCE, "HOLD-000044", HoldDisposition(
        hold_id="HOLD-000044", unit=SERVER, decision="scrap", reason="third burn-in failure "
        "after two GPU replacements", decided_by="q.okafor", statement=_signed(  # type: ignore[arg-type]
            "q.okafor", "hold.disposition", SERVER, {
                "decision": "scrap", "hold_id": "HOLD-000044",
                "reason": "third burn-in failure after two GPU replacements"}),
    )),
    "user.enrolled": (SYSTEM_SOURCE, "q.okafor", UserEnrolled(
        user="q.okafor", role="quality",
        public_key=public_key_b64(EXAMPLE_USER_KEYS["q.okafor"].public_key()),
        keyid=keyid_of(EXAMPLE_USER_KEYS["q.okafor"].public_key()), statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "user.add", "q.okafor", {
                "role": "quality",
                "public_key": public_key_b64(EXAMPLE_USER_KEYS["q.okafor"].public_key())}),
    )),
    "user.changed": (SYSTEM_SOURCE, "q.okafor", UserRoleChanged(
        user="q.okafor", role="supervisor", statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "user.role", "q.okafor", {"role": "supervisor"}),
    )),
    "user.revoked": (SYSTEM_SOURCE, "q.okafor", UserKeyRevoked(
        user="q.okafor", keyid=keyid_of(EXAMPLE_USER_KEYS["q.okafor"].public_key()),
        statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "user.revoke", "q.okafor",
            {"keyid": keyid_of(EXAMPLE_USER_KEYS["q.okafor"].public_key())}),
    )),
    "user.removed": (SYSTEM_SOURCE, "q.okafor", UserRemoved(
        user="q.okafor", statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "user.remove", "q.okafor", {}),
    )),
    "console.enrolled": (SYSTEM_SOURCE, "console", ConsoleEnrolled(
        name="console", public_key=public_key_b64(EXAMPLE_CONSOLE_KEY.public_key()),
        keyid=keyid_of(EXAMPLE_CONSOLE_KEY.public_key()),
    )),
    "console.revoked": (SYSTEM_SOURCE, "console", ConsoleRevoked(
        name="console", keyid=keyid_of(EXAMPLE_CONSOLE_KEY.public_key()),
        reason="console server replaced",
    )),
    "alert.acknowledged": (SYSTEM_SOURCE, ALERT_ID, AlertAcknowledged(
        alert_id=ALERT_ID, user="q.meyer", comment="GPU 5 fan checked, watching it",
        statement=_signed(  # type: ignore[arg-type]
            "q.meyer", "alert.acknowledge", ALERT_ID,
            {"comment": "GPU 5 fan checked, watching it"}),
    )),
    "alert.shelved": (SYSTEM_SOURCE, ALERT_ID, AlertShelved(
        alert_id=ALERT_ID, user="q.meyer", until="2025-04-03T10:15:30.250Z",
        reason="chamber 3 door open for maintenance", statement=_signed(  # type: ignore[arg-type]
            "q.meyer", "alert.shelve", ALERT_ID,
            {"until": "2025-04-03T10:15:30.250Z",
             "reason": "chamber 3 door open for maintenance"}),
    )),
    "alert.unshelved": (SYSTEM_SOURCE, ALERT_ID, AlertUnshelved(
        alert_id=ALERT_ID, user="q.meyer", statement=_signed(  # type: ignore[arg-type]
            "q.meyer", "alert.unshelve", ALERT_ID, {}),
    )),
    "alert.commented": (SYSTEM_SOURCE, ALERT_ID, AlertCommented(
        alert_id=ALERT_ID, user="q.okafor", comment="same GPU lot as last week's ECC failures",
        statement=_signed(  # type: ignore[arg-type]
            "q.okafor", "alert.comment", ALERT_ID,
            {"comment": "same GPU lot as last week's ECC failures"}),
    )),
    "alert.outofservice": (SYSTEM_SOURCE, ALERT_ID, AlertOutOfService(
        alert_id=ALERT_ID, user="admin.lee", reason="chamber 3 thermocouple replaced today",
        statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "alert.out_of_service", ALERT_ID,
            {"reason": "chamber 3 thermocouple replaced today"}),
    )),
    "alert.inservice": (SYSTEM_SOURCE, ALERT_ID, AlertReturnedToService(
        alert_id=ALERT_ID, user="admin.lee", statement=_signed(  # type: ignore[arg-type]
            "admin.lee", "alert.return_to_service", ALERT_ID, {}),
    )),
}


def example_types() -> list[str]:
    """Every event type that has an example (all of them; a test keeps it so)."""
    return list(_EXAMPLES)


def example_source(event_type: str) -> str:
    return _EXAMPLES[event_type][0]


def example_subject(event_type: str) -> str:
    return _EXAMPLES[event_type][1]


def example_body(event_type: str) -> Body:
    """A fresh copy of the example body (callers may change it freely)."""
    body = _EXAMPLES[event_type][2]
    return msgspec.json.decode(msgspec.json.encode(body), type=BODY_OF_TYPE[event_type])


def example_event(event_type: str) -> bytes:
    """The complete example event value, exactly as a station (or linetrace) would send it."""
    source, subject, body = _EXAMPLES[event_type]
    system = event_type in SYSTEM_TYPES
    return encode_event(
        event_type=event_type,
        source=source,
        subject=subject,
        body=body,
        time=EXAMPLE_TIME,
        event_id=deterministic_id(event_type, subject, "example"),
        stationseq=None if system else EXAMPLE_STATIONSEQ,
    )
