"""A synthetic plant at scale: the bill of materials and build plan of one HGX server.

Shared by the seeder (fast tuples straight into the genealogy tables) and the writer bench
(real, signed events through `write_batch`), so both describe the same servers: a mainboard
PCBA sub-assembly with qty-based reels, then a server with the PCBA, an 8-GPU baseboard,
CPUs, DIMMs, NICs, a DPU, PSUs, SSDs and a TPM (58 serialized parts + fasteners).

Parts are consumed from lots in build order, so a GPU lot spans `gpu_lot_units` consecutive
servers (~800 at 100,000 servers with the defaults), as trays are used on a real line.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

from linetrace.schemas import bodies as b

T0_US = 1_735_689_600_000_000  # 2025-01-01T00:00:00Z in microseconds
DAY_US = 86_400_000_000
PRODUCTS = ("HGX-B300-8GPU", "HGX-B200-8GPU", "HGX-H200-8GPU")


@dataclass(frozen=True)
class PartSpec:
    """One line of the server BOM: `count` parts per server, `per_lot` parts per lot."""

    category: str
    mpn: str
    pn: str
    count: int
    on: str  # what it is mounted on: "server", "mainboard" or "baseboard"
    per_lot: int
    ref: str  # slot -> ref designator, via str.format(slot=...)
    step: int
    supplier: str
    qty: int | None = None  # qty-based (not serialized) when set


@dataclass(frozen=True)
class ReelSpec:
    """One qty-based SMT reel of the PCBA: `per_board` parts placed from a `reel_qty` reel."""

    mpn: str
    ref: str
    per_board: int
    reel_qty: int


def server_bom(gpu_lot_units: int) -> tuple[PartSpec, ...]:
    return (
        PartSpec("pcba", "MB-X14-HGX-REVB", "X14DBG-AP", 1, "server", 500, "MB", 20, "plant"),
        PartSpec("cpu", "PK8071305120500", "XEON-6979P", 2, "mainboard", 1000, "CPU{slot}", 30,
                 "Intel"),
        PartSpec("dimm", "M321R8GA0PB2-CCP", "DDR5-64G-6400", 32, "mainboard", 4000,
                 "DIMM{slot:02d}", 30, "Samsung"),
        PartSpec("tpm", "AOM-TPM-9672V-S", "TPM2.0", 1, "mainboard", 5000, "JTPM1", 30,
                 "Supermicro"),
        PartSpec("baseboard", "935-24287-0001-000", "HGX-B300-BB", 1, "server", 200, "HGX", 40,
                 "NVIDIA"),
        PartSpec("gpu", "699-2G520-0200-000", "B300-SXM6-288GB", 8, "baseboard",
                 8 * gpu_lot_units, "GPU{slot}", 40, "NVIDIA"),
        PartSpec("fastener", "M3X6-T10-NI", "M3X6", 1, "server", 300, "BB-MOUNT", 40, "Wurth",
                 qty=32),
        PartSpec("nic", "900-9X7AH-0078-DTZ", "CX7-400G", 4, "server", 500, "PCIE{slot}", 50,
                 "NVIDIA"),
        PartSpec("dpu", "900-9D3B6-00CV-AA0", "BF3-B3240", 1, "server", 500, "PCIE8", 50,
                 "NVIDIA"),
        PartSpec("psu", "PWS-3K05G-2R", "PSU-3000W", 4, "server", 800, "PSU{slot}", 50,
                 "Supermicro"),
        PartSpec("ssd", "MZQL27T6HBLA-00A07", "PM9A3-7.68T", 4, "server", 1000, "NVME{slot}", 50,
                 "Samsung"),
    )


PCBA_REELS: tuple[ReelSpec, ...] = (
    ReelSpec("AST2600A3-GP", "U12", 1, 500),
    ReelSpec("MP2891GQKT", "U40-U63", 24, 2500),
    ReelSpec("GRM155R61A105KE15", "C1-C1800", 1800, 10000),
    ReelSpec("GRM033R61A104KE15", "C2001-C4400", 2400, 15000),
    ReelSpec("RC0201FR-0710KL", "R1-R1600", 1600, 10000),
    ReelSpec("XAL7070-102MEC", "L1-L48", 48, 1000),
    ReelSpec("PT5161LRS", "U80-U87", 8, 1000),
    ReelSpec("9ZML1253EKILF", "U90-U93", 4, 2000),
    ReelSpec("LCMXO3D-9400HC", "U95", 1, 500),
    ReelSpec("10164227-1001A1RLF", "J1-J12", 12, 1200),
)

#: (step, operation, station) of the server route and of the PCBA route.
SERVER_ROUTE = (
    (10, "chassis prep", "chassis-01"), (20, "mainboard install", "integration-01"),
    (30, "CPU + DIMM + TPM install", "integration-02"), (40, "baseboard + GPU install",
                                                        "gpu-install-01"),
    (50, "NIC, DPU, PSU, SSD install", "integration-03"), (60, "firmware", "firmware-01"),
    (70, "functional test", "fct-01"), (80, "GPU burn-in", "burnin-01"),
    (90, "final inspection", "inspect-01"), (100, "pack", "pack-01"),
)
PCBA_ROUTE = ((10, "SMT top + bottom", "smt-01"), (15, "AOI", "aoi-01"), (20, "ICT", "ict-01"),
              (25, "CPLD + BMC program", "firmware-02"))
STATION_TYPES = {s: s.rsplit("-", 1)[0] for _, _, s in SERVER_ROUTE + PCBA_ROUTE}
STATION_TYPES["repair-01"] = "repair"


def server_serial(i: int) -> str:
    return f"SRV-{i:07d}"


def pcba_serial(i: int) -> str:
    return f"MB-{i:07d}"


def part_serial(spec: PartSpec, i: int, slot: int) -> str:
    """Serial of the slot-th part of this kind in server i (pcba: the PCBA unit's serial)."""
    if spec.category == "pcba":
        return pcba_serial(i)
    return f"{spec.category.upper()}-{i * spec.count + slot:09d}"


def lot_of(spec: PartSpec, i: int, slot: int) -> str:
    n = i * spec.count + slot if spec.qty is None else i
    return f"LOT-{spec.category.upper()}-{n // spec.per_lot:05d}"


def reel_lot(reel: ReelSpec, i: int) -> str:
    return f"REEL-{reel.mpn}-{i // max(1, reel.reel_qty // reel.per_board):06d}"


def gpu_lot(i: int, gpu_lot_units: int) -> str:
    """The lot of GPU slot 0 of server i (every slot in the same lot but at lot boundaries)."""
    return lot_of(server_bom(gpu_lot_units)[5], i, 0)


def server_start_us(i: int, servers: int) -> int:
    """Servers start evenly over a year; each PCBA is built the day before its server."""
    return T0_US + i * (365 * DAY_US // max(servers, 1))


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def installed_items(spec: PartSpec, i: int) -> list[b.InstalledItem]:
    if spec.qty is not None:
        return [b.InstalledItem(lot=lot_of(spec, i, 0), mpn=spec.mpn, category=spec.category,
                                pn=spec.pn, qty=spec.qty, ref=spec.ref)]
    parent = {"server": None, "mainboard": pcba_serial(i),
              "baseboard": f"BASEBOARD-{i:09d}"}[spec.on]
    return [b.InstalledItem(lot=lot_of(spec, i, s), mpn=spec.mpn, category=spec.category,
                            pn=spec.pn, serial=part_serial(spec, i, s),
                            slot=s if spec.count > 1 else None,
                            ref=spec.ref.format(slot=s), parent=parent)
            for s in range(spec.count)]


def measurements(kind: str) -> list[b.Measurement]:
    if kind == "ICT":
        return [b.Measurement(name=n, value=v * 1.004, unit="V", expected=v, min=v * 0.95,
                              max=v * 1.05)
                for n, v in (("P12V", 12.0), ("P5V", 5.0), ("P3V3", 3.3), ("P1V8", 1.8),
                             ("P1V0", 1.0), ("P0V8", 0.8))]
    if kind == "FCT":
        return [b.Measurement(name=n, value=v, unit=u, min=lo, max=hi)
                for n, v, u, lo, hi in (("fan_rpm", 9800.0, "rpm", 8000.0, 12000.0),
                                        ("inlet_c", 24.5, "C", 15.0, 35.0),
                                        ("pcie_lanes", 16.0, "lanes", 16.0, 16.0),
                                        ("dimm_gb", 2048.0, "GB", 2048.0, 2048.0))]
    return [b.Measurement(name=f"gpu{g}_max_temp", value=71.0 + g % 3, unit="C", max=85.0)
            for g in range(8)]


def tested(method: str, result: str = "Passed") -> b.UnitTested:
    return b.UnitTested(method=method, result=result, fixture=f"FX-{method}-0007",  # type: ignore[arg-type]
                        tests=[b.TestResult(name=f"{method} suite", result="Passed",
                                            measurements=measurements(method))])


@dataclass(frozen=True)
class Planned:
    """One event of a server's build: who sends it, about which unit, when, with what body."""

    type: str
    source: str
    subject: str
    t_us: int
    body: Any
    step: int
    repair: bool = False


def repaired(i: int) -> bool:
    """One server in 50 has a GPU replaced after burn-in."""
    return i % 50 == 7


def replacement_gpu(i: int, gpu_lot_units: int) -> b.InstalledItem:
    """The GPU fitted in repair: a fresh serial from a later lot."""
    return b.InstalledItem(lot=gpu_lot(i + gpu_lot_units, gpu_lot_units),
                           mpn=server_bom(gpu_lot_units)[5].mpn, category="gpu",
                           pn=server_bom(gpu_lot_units)[5].pn, serial=f"GPU-R{i:08d}", slot=3,
                           ref="GPU3", parent=f"BASEBOARD-{i:09d}")


def build_plan(i: int, servers: int, gpu_lot_units: int, work_order: str) -> list[Planned]:
    """Every event of server i and its PCBA in time order (45 events, 48 with a GPU repair)."""
    srv, mb = server_serial(i), pcba_serial(i)
    product = PRODUCTS[i % len(PRODUCTS)]
    t = server_start_us(i, servers) - DAY_US
    out: list[Planned] = []
    bom = server_bom(gpu_lot_units)

    def step(unit: str, kind: str, n: int, op: str, station: str,
             middle: list[tuple[str, Any]]) -> None:
        nonlocal t
        txn = _uuid(f"{unit}/{n}")
        out.append(Planned("work.started", station, unit, t, b.WorkStarted(
            transaction_id=txn, step=n, operation=op, work_order=work_order, product=product,
            kind=kind, operator=f"op-{1000 + (i + n) % 97}"), n))  # type: ignore[arg-type]
        for k, (etype, body) in enumerate(middle):
            out.append(Planned(etype, station, unit, t + (k + 1) * 60_000_000, body, n))
        t += (len(middle) + 2) * 60_000_000
        out.append(Planned("work.completed", station, unit, t, b.WorkCompleted(
            transaction_id=txn, step=n, result="Completed"), n))
        t += 20 * 60_000_000
        if unit == srv and n == 80 and repaired(i):
            for etype, body in (
                    ("materials.uninstalled", b.MaterialsUninstalled(
                        items=[b.RemovedItem(serial=part_serial(bom[5], i, 3), slot=3)],
                        reason="DefectiveMaterial", defect=f"DEF-{i:07d}",
                        note="XID 79 during burn-in, GPU fell off the bus")),
                    ("materials.installed", b.MaterialsInstalled(
                        items=[replacement_gpu(i, gpu_lot_units)])),
                    ("unit.repaired", b.UnitRepaired(result="RepairSuccessful", return_step=80,
                                                     repairs=[f"DEF-{i:07d}"]))):
                out.append(Planned(etype, "repair-01", srv, t, body, n, repair=True))
                t += 10 * 60_000_000

    for n, op, station in PCBA_ROUTE:
        middle: list[tuple[str, Any]] = {  # type: ignore[assignment]
            10: [("materials.installed", b.MaterialsInstalled(items=[
                b.InstalledItem(lot=reel_lot(r, i), mpn=r.mpn, category="reel", qty=r.per_board,
                                ref=r.ref) for r in PCBA_REELS]))],
            15: [("unit.inspected", b.UnitInspected(method="AOI", result="Passed"))],
            20: [("unit.tested", tested("ICT"))],
            25: [("firmware.flashed", b.FirmwareFlashed(
                component="CPLD", image="x14-cpld", version="1.4.2", sha256=sha("cpld 1.4.2"),
                target="U95"))],
        }[n]
        step(mb, "assembly", n, op, station, middle)
    t = server_start_us(i, servers)
    for n, op, station in SERVER_ROUTE:
        middle = [("materials.installed", b.MaterialsInstalled(
            items=[it for spec in bom if spec.step == n for it in installed_items(spec, i)]))
                  ] if n in (20, 30, 40, 50) else []
        if n == 60:
            middle = [("firmware.flashed", b.FirmwareFlashed(
                component=c, image=f"hgx-{c.lower()}", version=v, sha256=sha(c + v),
                target=tg)) for c, v, tg in (("BMC", "24.09-1", "bmc0"),
                                             ("BIOS", "2.6a", "spi0"),
                                             ("VBIOS", "97.00.89.00.01", "gpu0-7"))]
        elif n == 70:
            middle = [("unit.tested", tested("FCT"))]
        elif n == 80:
            middle = [("unit.tested", tested("Burnin"))]
        elif n == 90:
            middle = [("unit.inspected", b.UnitInspected(method="Human", result="Passed"))]
        elif n == 100:
            middle = [("unit.packed", b.UnitPacked(tamper_seal=f"TS-{i:08d}",
                                                   carton=f"CTN-{i:08d}",
                                                   order=f"SO-{i // 40:06d}"))]
        step(srv, "server", n, op, station, middle)
    out.append(Planned("unit.shipped", "pack-01", srv, t, b.UnitShipped(
        order=f"SO-{i // 40:06d}", carton=f"CTN-{i:08d}", shipment=f"SHP-{i // 40:06d}",
        destination="customer data centre"), 110))
    return out


def _uuid(text: str) -> str:
    h = hashlib.md5(text.encode()).hexdigest()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-8{h[17:20]}-{h[20:32]}"
