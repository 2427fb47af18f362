"""A small, fixed ledger written by the real batch writer, for the query commands' tests.

One server (SRV-T-000001) goes through the route's steps to `unit.shipped` at step 120, with
its PCBA (an assembly with its own route) installed in it, eight GPUs, a GPU replaced in
repair, a failed functional test, an inspection with a defect, firmware and two received lots
(one approved by the AVL, one not). A station reports a state and faults. A rejected record
sits in `rejected`. Every id and time is fixed, so two builds read the same.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.records import Candidate, Rejection, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import TOPIC_OF_TYPE

SERVER = "SRV-T-000001"
PCBA = "PCBA-T-000001"
GPU_LOT = "LOT-T-GPU-01"
BAD_LOT = "LOT-T-NIC-01"
GPU_MPN = "699-2G520-0200-000"
REMOVED_GPU = "GPU-T-3"
REPLACEMENT_GPU = "GPU-T-8"
UNUSED_PART = "NIC-T-1"  # received in BAD_LOT, never installed
STATION = "cell-01"
_NS = uuid.UUID("6c696e65-7472-6163-6500-000000000001")


@dataclass
class Station:
    sid: str
    key: Ed25519PrivateKey
    seq: int = 0

    def cand(self, etype: str, subject: str, body: b.Body, t: str, topic: str,
             partition: int = 0) -> Candidate:
        self.seq += 1
        eid = str(uuid.uuid5(_NS, f"{self.sid}:{self.seq}"))
        v = encode_event(event_type=etype, source=self.sid, subject=subject, body=body, time=t,
                         stationseq=self.seq, event_id=eid)
        kid, sig = signing.read_signature(signing.sign_value(v, self.key))
        return Candidate(SourceRecord(topic, partition, self.seq, subject.encode(), v),
                         decode_event(v), kid, sig)


def _t(minute: int) -> str:
    return f"2026-03-02T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"


def gpu(slot: int, serial: str) -> b.InstalledItem:
    return b.InstalledItem(lot=GPU_LOT, mpn=GPU_MPN, category="gpu", serial=serial, slot=slot,
                           parent="BB-T-1")


def build_ledger(data_dir: Path) -> Ledger:
    """Write the fixed line history into `<data_dir>/ledger.db` (the CLI's default ledger)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    ledger = Ledger(f"sqlite:///{data_dir / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data_dir / "keys")
    ctx = SystemContext(plant)
    key = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
    enroll_station(ledger, plant, STATION, "integration", key.public_key())
    st = Station(STATION, key)
    m = iter(range(1, 600))

    def ev(etype: str, subject: str, body: b.Body) -> Candidate:
        return st.cand(etype, subject, body, _t(next(m)), TOPIC_OF_TYPE[etype])

    def tx(n: int) -> str:
        return str(uuid.uuid5(_NS, f"tx:{n}"))

    batch = [
        ev("material.received", GPU_LOT, b.MaterialReceived(
            lot=GPU_LOT, mpn=GPU_MPN, supplier="NVIDIA", date_code="2551", qty=9,
            serials=[f"GPU-T-{i}" for i in range(9)],
            documents=[b.Document(kind="CoC", sha256="ab" * 32, name="coc.pdf")])),
        ev("material.received", BAD_LOT, b.MaterialReceived(
            lot=BAD_LOT, mpn="MCX-UNLISTED", supplier="SUP-GREY", date_code="2550", qty=2,
            serials=[UNUSED_PART])),
        # The PCBA: its own route, then installed in the server.
        ev("work.started", PCBA, b.WorkStarted(transaction_id=tx(1), step=10, operation="smt",
                                               work_order="WO-T-P", product="HGX-B300-PCBA",
                                               kind="assembly", operator="op-1")),
        ev("materials.installed", PCBA, b.MaterialsInstalled(items=[b.InstalledItem(
            lot="LOT-T-CAP", mpn="CAP-100N", category="capacitor", qty=480, ref="C1-C480")])),
        ev("work.completed", PCBA, b.WorkCompleted(transaction_id=tx(1), step=10,
                                                   result="Completed")),
        ev("work.started", SERVER, b.WorkStarted(transaction_id=tx(2), step=60,
                                                 operation="GPU install", work_order="WO-T",
                                                 product="HGX-B300", operator="op-7")),
        ev("materials.installed", SERVER, b.MaterialsInstalled(items=[
            b.InstalledItem(lot="LOT-T-BB", mpn="935-24287-0001-000", category="baseboard",
                            serial="BB-T-1"),
            b.InstalledItem(lot="LOT-T-PCBA", mpn="HGX-B300-PCBA", category="mainboard",
                            serial=PCBA)] + [gpu(i, f"GPU-T-{i}") for i in range(8)])),
        ev("work.completed", SERVER, b.WorkCompleted(transaction_id=tx(2), step=60,
                                                     result="Completed")),
        ev("work.started", SERVER, b.WorkStarted(transaction_id=tx(3), step=90, operation="fct",
                                                 work_order="WO-T", product="HGX-B300")),
        ev("unit.inspected", SERVER, b.UnitInspected(method="AOI", result="Failed", defects=[
            b.Defect(code="SCRATCH", category="cosmetic", ref="lid", confidence=87)])),
        ev("unit.tested", SERVER, b.UnitTested(method="FCT", result="Failed", fixture="FCT-02",
                                               tests=[
            b.TestResult(name="gpu_count", result="Passed", measurements=[
                b.Measurement(name="gpu_detected", value=8, unit="count", expected=8, min=8,
                              max=8)]),
            b.TestResult(name="nic_link", result="Failed", measurements=[
                b.Measurement(name="link_speed", value=100.0, unit="Gb/s", expected=400.0,
                              min=400.0, max=400.0)])])),
        ev("work.completed", SERVER, b.WorkCompleted(transaction_id=tx(3), step=90,
                                                     result="Failed")),
        ev("work.started", SERVER, b.WorkStarted(transaction_id=tx(4), step=900,
                                                 operation="repair", work_order="WO-T",
                                                 product="HGX-B300")),
        ev("materials.uninstalled", SERVER, b.MaterialsUninstalled(
            items=[b.RemovedItem(serial=REMOVED_GPU)], reason="DefectiveMaterial", defect="D-1",
            note="no PCIe link")),
        ev("materials.installed", SERVER, b.MaterialsInstalled(items=[gpu(3, REPLACEMENT_GPU)])),
        ev("unit.repaired", SERVER, b.UnitRepaired(result="RepairSuccessful", repairs=["D-1"],
                                                   return_step=90, note="GPU replaced")),
        ev("work.completed", SERVER, b.WorkCompleted(transaction_id=tx(4), step=900,
                                                     result="Completed")),
        ev("firmware.flashed", SERVER, b.FirmwareFlashed(component="BMC", image="bmc-2.1.bin",
                                                         version="2.1", sha256="cd" * 32)),
        ev("work.started", SERVER, b.WorkStarted(transaction_id=tx(5), step=110,
                                                 operation="pack-and-seal", work_order="WO-T",
                                                 product="HGX-B300")),
        ev("unit.packed", SERVER, b.UnitPacked(tamper_seal="TS-T-1", carton="CTN-T-1",
                                               order="SO-T-1")),
        ev("work.completed", SERVER, b.WorkCompleted(transaction_id=tx(5), step=110,
                                                     result="Completed")),
        ev("work.started", SERVER, b.WorkStarted(transaction_id=tx(6), step=120, operation="ship",
                                                 work_order="WO-T", product="HGX-B300")),
        ev("unit.shipped", SERVER, b.UnitShipped(order="SO-T-1", carton="CTN-T-1",
                                                 shipment="SHP-T-1", destination="Berlin")),
        ev("work.completed", SERVER, b.WorkCompleted(transaction_id=tx(6), step=120,
                                                     result="Completed")),
        ev("station.state", STATION, b.StationState(state=4000, reason="PDU trip")),
        ev("fault.occurred", STATION, b.FaultOccurred(fault_id="F-9", cause="PDU trip",
                                                      severity="Alarm", code="PDU-OC",
                                                      description="x" * 150)),
        ev("fault.occurred", STATION, b.FaultOccurred(fault_id="F-10", cause="door open",
                                                      severity="Warning", code="DOOR")),
        ev("fault.cleared", STATION, b.FaultCleared(fault_id="F-10")),
    ]
    bad = SourceRecord("line.events", 1, 77, b"SRV-T-000009", b"{not json", [])
    rejected = [Rejection(record=bad, destination="line.events.dlq", code="event.malformed",
                          message="not a JSON object", stage="decode")]
    out = write_batch(ledger, batch, rejected, ctx=ctx)
    assert len(out.stored) == len(batch), [r.message for r in out.rejections]
    return ledger
