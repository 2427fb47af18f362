"""The supply-chain stage on a real ledger (SQLite and PostgreSQL), through the worker's batch
processor and tick: a lot never received is alerted only once its unit's partition clock passed
the grace and clears when the receipt comes late; a cloned serial is found whichever install
comes first, a part refitted after its removal is not; firmware off the golden baseline."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import select

from linetrace.ledger.alerts.conditions import alert_id
from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.db import Ledger
from linetrace.ledger.plant_data import golden_firmware
from linetrace.schemas import bodies as b

from .route_line import RECEIVING, Batches, serial_on

GPU_MPN = "699-21010-0210-000"
SUPPLIERS = {GPU_MPN: "SUP-NVIDIA", "CBL-KIT-HGX-A": "SUP-CABLECO"}  # as the AVL approves


def receive(batches: Batches, lot: str, mpn: str, serials: list[str] | None = None) -> None:
    batches._emit(RECEIVING, "material.received", lot, b.MaterialReceived(
        lot=lot, mpn=mpn, supplier=SUPPLIERS[mpn], date_code="2608", qty=len(serials or [1]),
        serials=serials or []), batches.flow.tick())


def alerts(ledger: Ledger) -> dict[tuple[str, str], str]:
    with ledger.reader() as s:
        return {(a.condition, a.subject): a.state for a in s.scalars(
            select(Alert).where(Alert.condition.like("supply.%")))}


def scan(batches: Batches, minutes: int) -> None:
    """The worker's tick, `minutes` of wall time from now (the stage scans every 5 s; the line
    speed is 0 here: partition clocks are event time alone)."""
    batches.tick(datetime.now(UTC) + timedelta(minutes=minutes))


def gpu(serial: str, slot: int, lot: str = "LOT-GPU-1") -> b.InstalledItem:
    return b.InstalledItem(lot=lot, mpn=GPU_MPN, category="gpu", serial=serial, slot=slot)


def test_unknown_lot_waits_for_the_grace_on_the_line_clock_and_clears_on_a_late_receipt(
        ledger: Ledger, tmp_path: Path) -> None:
    batches = Batches(ledger, tmp_path / "keys")
    f = batches.flow
    receive(batches, "LOT-GPU-1", GPU_MPN, ["G-1"])
    server = serial_on("SRV-U")
    f.visit(server, 50, test=None)
    f.visit(server, 60, test=None, installs=[
        gpu("G-1", 0), b.InstalledItem(lot="LOT-CBL-NEVER", mpn="CBL-KIT-HGX-A",
                                       category="cable-kit", qty=1)])
    batches.write()
    scan(batches, 1)
    assert alerts(ledger) == {}  # within the grace: its receipt may still be on its way
    f.tick(11 * 60)
    f.visit(server, 70, test=None)  # the unit's partition clock moves past install + 10 min
    batches.write()
    scan(batches, 2)
    subject = ("supply.unknown_lot", "LOT-CBL-NEVER")
    assert alerts(ledger) == {subject: "unacknowledged"}
    with ledger.reader() as s:
        a = s.get(Alert, alert_id(*subject))
        assert a is not None and a.details["units"] == [server]
    scan(batches, 3)  # found again by the next scan: nothing new
    receive(batches, "LOT-CBL-NEVER", "CBL-KIT-HGX-A")
    batches.write()
    assert alerts(ledger) == {subject: "rtn_unacknowledged"}
    with ledger.reader() as s:
        a = s.get(Alert, alert_id(*subject))
        assert a is not None and a.occurrences == 1


def test_cloned_serial_and_what_is_no_clone(ledger: Ledger, tmp_path: Path) -> None:
    batches = Batches(ledger, tmp_path / "keys")
    f = batches.flow
    receive(batches, "LOT-GPU-1", GPU_MPN, ["G-1", "G-2", "G-3"])
    one, two, three = serial_on("SRV-A"), serial_on("SRV-B"), serial_on("SRV-C")
    for unit in (one, two, three):
        f.visit(unit, 50, test=None)
    f.visit(one, 60, test=None, installs=[gpu("G-1", 0), gpu("G-2", 1)])
    batches.write()
    # a repair: G-2 out of `one` and back in (same unit); G-3 into `three`, out, then into `two`
    f.at(60, "materials.uninstalled", one, b.MaterialsUninstalled(
        items=[b.RemovedItem(serial="G-2", slot=1)], reason="DefectiveInstallation"))
    f.at(60, "materials.installed", one, b.MaterialsInstalled(items=[gpu("G-2", 1)]))
    f.visit(three, 60, test=None, installs=[gpu("G-3", 0)])
    f.at(60, "materials.uninstalled", three, b.MaterialsUninstalled(
        items=[b.RemovedItem(serial="G-3", slot=0)], reason="IncorrectMaterial"))
    f.visit(two, 60, test=None, installs=[gpu("G-3", 0)])
    batches.write()
    assert alerts(ledger) == {}
    f.at(60, "materials.installed", two, b.MaterialsInstalled(items=[gpu("G-1", 1)]))
    batches.write()
    assert alerts(ledger) == {("supply.cloned_serial", "G-1"): "unacknowledged"}
    with ledger.reader() as s:
        a = s.get(Alert, alert_id("supply.cloned_serial", "G-1"))
        assert a is not None and a.details["units"] == sorted([one, two])
        assert a.priority == "high" and a.latched


def test_firmware_off_the_golden_baseline(ledger: Ledger, tmp_path: Path) -> None:
    batches = Batches(ledger, tmp_path / "keys")
    f = batches.flow
    server = serial_on("SRV-F")
    f.visit(server, 50, test=None)
    (image, version), sha = sorted(golden_firmware().golden.items())[0]
    for target, digest in (("PCBA-1", sha), ("PCBA-2", "f" * 64)):
        f.at(80, "firmware.flashed", server, b.FirmwareFlashed(
            component="BMC", image=image, version=version, sha256=digest, target=target))
    batches.write()
    assert alerts(ledger) == {("supply.firmware_mismatch", f"{server}/BMC/PCBA-2"):
                              "unacknowledged"}
