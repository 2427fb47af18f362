"""Issue 4 acceptance through the worker and the CLI: every unit-scoped event type shows up in
`trace`, receipts in `lots show`, station states and faults in `stations show`, and a GPU
replaced in repair is traced and recalled as removed."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.schemas.examples import example_body
from linetrace.schemas.topics import TOPIC_OF_TYPE

from ..conftest import run_cli, wait_for
from .test_ingest import produce

pytestmark = pytest.mark.integration

SERVER = "SRV-E2E-000001"
LOT = "LOT-E2E-GPU-01"
UNIT_TYPES = ["unit.arrived", "work.started", "materials.installed", "unit.inspected",
              "unit.tested", "firmware.flashed", "materials.uninstalled", "unit.repaired",
              "work.completed", "unit.departed", "unit.packed", "unit.shipped", "unit.scrapped"]


#: Station (id, type) sending each event type that an integration cell may not send
#: (schemas/README.md, "Who may send what"); cell-01 sends the rest.
ROLES = {"material.received": ("recv-01", "receiving"), "unit.inspected": ("qa-01", "final-qa"),
         "unit.tested": ("qa-01", "final-qa"), "firmware.flashed": ("fw-01", "firmware"),
         "materials.uninstalled": ("repair-01", "repair"), "unit.repaired": ("repair-01", "repair"),
         "unit.scrapped": ("repair-01", "repair"), "unit.packed": ("pack-01", "pack"),
         "unit.shipped": ("ship-01", "shipping")}


class Sender:
    """One clock for the whole line; each event sent by a station whose type may send it."""

    def __init__(self, station: str, keys: dict[str, signing.Ed25519PrivateKey]) -> None:  # type: ignore[name-defined]
        self.station, self.keys = station, keys
        self.seqs: dict[str, int] = {}
        self.records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]] = []
        self.minute = 0

    def emit(self, etype: str, subject: str, body: b.Body) -> bytes:
        station = ROLES.get(etype, (self.station, ""))[0]
        self.seqs[station] = self.seqs.get(station, 0) + 1
        self.minute += 1
        v = encode_event(event_type=etype, source=station, subject=subject, body=body,
                         time=f"2026-02-01T08:{self.minute:02d}:00Z", stationseq=self.seqs[station],
                         event_id=str(uuid.uuid4()))
        self.records.append((TOPIC_OF_TYPE[etype], subject.encode(), v,
                             signing.sign_value(v, self.keys[station])))
        return v


def gpu(slot: int, serial: str) -> b.InstalledItem:
    return b.InstalledItem(lot=LOT, mpn="699-2G520-0200-000", category="gpu", serial=serial,
                           slot=slot, parent="BB-E2E-1")


def test_every_event_type_reaches_trace_lots_and_stations(broker: str, worker, line_dir: Path,
                                                          tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    keyfile = tmp_path / "k"
    assert run_cli("stations", "keygen", "--out", str(keyfile), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", "cell-01", "--type", "integration", "--public-key",
                f"{keyfile}.pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    keys = {"cell-01": signing.load_private_key_pem(keyfile.read_bytes())}
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(line_dir / "keys")
    for station, stype in sorted(set(ROLES.values())):
        keys[station] = signing.generate_key()
        enroll_station(ledger, plant, station, stype, keys[station].public_key())
    ledger.close()
    s = Sender("cell-01", keys)
    txn = str(uuid.uuid4())
    s.emit("material.received", LOT, b.MaterialReceived(
        lot=LOT, mpn="699-2G520-0200-000", supplier="NVIDIA", date_code="2551", qty=9,
        serials=[f"GPU-E2E-{i}" for i in range(9)],
        documents=[b.Document(kind="CoC", sha256="ab" * 32)]))
    s.emit("unit.arrived", SERVER, b.UnitArrived(step=60))
    s.emit("work.started", SERVER, b.WorkStarted(transaction_id=txn, step=60, operation="GPU install",
                                                 work_order="WO-E2E", product="HGX-B300",
                                                 operator="op-7"))
    s.emit("materials.installed", SERVER, b.MaterialsInstalled(items=[
        b.InstalledItem(lot="LOT-E2E-BB", mpn="935-24287-0001-000", category="baseboard",
                        serial="BB-E2E-1")] + [gpu(i, f"GPU-E2E-{i}") for i in range(8)]))
    s.emit("unit.inspected", SERVER, example_body("unit.inspected"))
    s.emit("unit.tested", SERVER, example_body("unit.tested"))
    s.emit("firmware.flashed", SERVER, example_body("firmware.flashed"))
    s.emit("materials.uninstalled", SERVER, b.MaterialsUninstalled(
        items=[b.RemovedItem(serial="GPU-E2E-3")], reason="DefectiveMaterial", defect="D-1"))
    s.emit("materials.installed", SERVER, b.MaterialsInstalled(items=[gpu(3, "GPU-E2E-8")]))
    s.emit("unit.repaired", SERVER, b.UnitRepaired(result="RepairSuccessful", repairs=["D-1"],
                                                   return_step=90))
    s.emit("work.completed", SERVER, b.WorkCompleted(transaction_id=txn, step=60,
                                                     result="Completed"))
    s.emit("unit.departed", SERVER, b.UnitDeparted(step=60))
    s.emit("unit.packed", SERVER, b.UnitPacked(tamper_seal="TS-1", carton="CT-1", order="SO-1"))
    s.emit("unit.shipped", SERVER, b.UnitShipped(order="SO-1", carton="CT-1", shipment="SH-1",
                                                 destination="Ministry of Finance, Berlin"))
    s.emit("unit.scrapped", "SRV-E2E-000002", b.UnitScrapped(reason="chassis damaged"))
    s.emit("station.state", "cell-01", b.StationState(state=4000, reason="PDU trip"))
    s.emit("fault.occurred", "cell-01", b.FaultOccurred(fault_id="F-9", cause="PDU trip",
                                                         severity="Alarm", code="PDU-OC"))
    s.emit("fault.occurred", "cell-01", b.FaultOccurred(fault_id="F-10", cause="door open",
                                                         severity="Warning", code="DOOR"))
    s.emit("fault.cleared", "cell-01", b.FaultCleared(fault_id="F-10"))
    asyncio.run(produce(broker, s.records))

    def shipped() -> bool:
        r = run_cli("units", "--json", data_dir=line_dir)
        return r.returncode == 0 and any(u["state"] == "shipped" for u in json.loads(r.stdout))

    wait_for(shipped, timeout=90, what="the server to be shipped in the ledger")
    t = json.loads(run_cli("trace", SERVER, "--json", data_dir=line_dir).stdout)
    seen = {h["type"] for h in t["history"]}
    assert set(UNIT_TYPES) - {"unit.scrapped"} <= seen, set(UNIT_TYPES) - seen
    gpus = {p["slot"]: p["serial"] for p in t["parts"] if p["category"] == "gpu"}
    assert gpus == {i: f"GPU-E2E-{8 if i == 3 else i}" for i in range(8)}
    [old] = t["removed"]
    assert old["serial"] == "GPU-E2E-3" and old["reason"] == "DefectiveMaterial"
    assert old["removed"] == "2026-02-01T08:08:00.000Z" and old["slot"] == 3
    assert t["state"] == "shipped" and t["order"] == "SO-1" and t["carton"] == "CT-1"
    tested = [x for x in t["tests"] if x["kind"] == "test"]
    assert tested and tested[0]["measurements"] and tested[0]["measurements"][0]["unit"]
    assert [x["method"] for x in t["tests"] if x["kind"] == "inspection"] == ["AOI"]
    assert t["firmware"][0]["sha256"] == example_body("firmware.flashed").sha256  # type: ignore[attr-defined]
    assert t["operations"][0]["operator"] == "op-7" and t["operations"][0]["result"] == "Completed"
    scrapped = json.loads(run_cli("trace", "SRV-E2E-000002", "--json", data_dir=line_dir).stdout)
    assert scrapped["state"] == "scrapped"

    recall = json.loads(run_cli("recall", "--part", "GPU-E2E-3", "--json", data_dir=line_dir).stdout)
    assert [(r["serial"], r["status"], r["order"], r["carton"]) for r in recall] == [
        (SERVER, "removed", "SO-1", "CT-1")]
    by_lot = json.loads(run_cli("recall", "--lot", LOT, "--json", data_dir=line_dir).stdout)
    assert sorted((r["part"], r["status"]) for r in by_lot) == sorted(
        [(f"GPU-E2E-{i}", "installed") for i in (0, 1, 2, 4, 5, 6, 7, 8)] + [("GPU-E2E-3", "removed")])

    lot = json.loads(run_cli("lots", "show", LOT, "--json", data_dir=line_dir).stdout)
    assert lot["supplier"] == "NVIDIA" and len(lot["serials"]) == 9 and lot["units"] == 1
    assert lot["documents"] == [{"kind": "CoC", "sha256": "ab" * 32, "name": None}]

    st = json.loads(run_cli("stations", "show", "cell-01", "--json", data_dir=line_dir).stdout)
    assert st["state"] == 4000
    assert [f["data"]["fault_id"] for f in st["open_faults"]] == ["F-9"]
    assert st["events_by_type"]["fault.occurred"] == 2
