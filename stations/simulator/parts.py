"""Purchased parts, their lots, and the stock the simulated line draws from.

Serialized parts (GPUs, CPUs, DIMMs, ...) are received in lots listing their serials; board
components (capacitors on reels, ICs in trays) are received by quantity. Every identifier
embeds the seed (`GPU-S7-000001`, `LOT-S7-GPU-0001`), so two seeds never collide. A part's
`category` is the route's (`schemas/routes/products/*.json` `parts[].category`).
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field

from linetrace.schemas.bodies import Document, MaterialReceived


@dataclass(frozen=True)
class PartSpec:
    """One purchased part number. `serial_prefix` set means serialized."""

    code: str  # short name used in lot ids: GPU, DIMM, CAP
    category: str
    mpn: str
    pn: str  # our internal part number
    supplier: str
    lot_size: int
    serial_prefix: str | None = None

    @property
    def serialized(self) -> bool:
        return self.serial_prefix is not None


@dataclass(frozen=True)
class BoardComponent:
    """A component placed at SMT: reference designator(s) and quantity per board."""

    part: PartSpec
    ref: str
    qty: int


# --- product A: server parts (about 64 serialized parts per server) -----------------------

BASEBOARD = PartSpec("BB", "baseboard", "935-24287-0000-000", "A-BB-100", "SUP-NVIDIA", 10, "BB")
GPU = PartSpec("GPU", "gpu", "699-21010-0210-000", "A-GPU-B200", "SUP-NVIDIA", 16, "GPU")
CHASSIS = PartSpec("CHS", "chassis", "CSE-HGX10U-B200", "A-CHS-010", "SUP-CHASSISWORKS", 10, "CHS")
CPU = PartSpec("CPU", "cpu", "PK8071305120500", "A-CPU-6960P", "SUP-INTEL", 20, "CPU")
DIMM = PartSpec("DIMM", "dimm", "M321R8GA0PB2-CCP", "A-DIMM-64G", "SUP-SAMSUNG", 64, "DIMM")
NIC = PartSpec("NIC", "nic", "MCX75310AAS-NEAT", "A-NIC-CX7", "SUP-NVIDIA-NET", 40, "NIC")
DPU = PartSpec("DPU", "dpu", "900-9D3B6-00CV-AA0", "A-DPU-BF3", "SUP-NVIDIA-NET", 10, "DPU")
PSU = PartSpec("PSU", "psu", "PWS-3K27G-2R", "A-PSU-3200", "SUP-POWERONE", 30, "PSU")
SSD = PartSpec("SSD", "ssd", "MZWLO3T8HCLS-00A07", "A-SSD-3T8", "SUP-SAMSUNG", 40, "SSD")
CABLES = PartSpec("CBL", "cable-kit", "CBL-KIT-HGX-A", "A-CBL-KIT", "SUP-CABLECO", 50)

# --- product B: 8-card PCIe server (no baseboard; the mainboard is bought) ---------------

PCIE_GPU = PartSpec("PCIEGPU", "gpu", "900-2G153-0000-000", "B-GPU-RTXPRO6000", "SUP-NVIDIA", 16,
                    "GPU")
CHASSIS_B = PartSpec("CHSB", "chassis", "CSE-GPU4U-PCIE8", "B-CHS-020", "SUP-CHASSISWORKS", 10,
                     "CHS")
MAINBOARD_B = PartSpec("MBB", "mainboard", "MBD-X14DBG-B", "B-MB-X14", "SUP-SUPERMICRO", 10, "MB")
CABLES_B = PartSpec("CBLB", "cable-kit", "CBL-KIT-PCIE-B", "B-CBL-KIT", "SUP-CABLECO", 50)

#: The mainboard PCBA is built on the line (steps 20-40), not bought: it is installed with its
#: unit serial, and its `lot` is its work order (there is no supplier receipt for it).
MAINBOARD_CATEGORY = "mainboard"
MAINBOARD_MPN = "MB-A-PCBA-R3"
MAINBOARD_PN = "A-MB-PCBA"

#: A supplier on no approved vendor list (fault `avl-violation`).
UNAPPROVED_SUPPLIER = "SUP-GREYMARKET-BROKER"

# --- product A: mainboard PCBA components ------------------------------------------------

PCB = PartSpec("PCB", "bare-board", "PCB-MB-A-R3", "A-PCB-MB", "SUP-PCBFAB", 200)
BMC_IC = PartSpec("BMC", "ic", "AST2600A3-GP", "A-IC-BMC", "SUP-ASPEED", 500)
VRM = PartSpec("VRM", "ic", "MP2891GQKT", "A-IC-VRM", "SUP-MPS", 2000)
CAP = PartSpec("CAP", "capacitor", "GRM188R71C104KA01D", "A-C-100N", "SUP-MURATA", 20000)
RES = PartSpec("RES", "resistor", "RC0402FR-0710KL", "A-R-10K", "SUP-YAGEO", 20000)
CONN = PartSpec("CON", "connector", "DIMM-DDR5-288P", "A-CON-DIMM", "SUP-AMPHENOL", 2000)

BOARD_COMPONENTS: tuple[BoardComponent, ...] = (
    BoardComponent(PCB, "PCB1", 1),
    BoardComponent(BMC_IC, "U12", 1),
    BoardComponent(VRM, "U40-U55", 16),
    BoardComponent(CAP, "C1-C480", 480),
    BoardComponent(RES, "R1-R320", 320),
    BoardComponent(CONN, "J1-J32", 32),
)


@dataclass(frozen=True)
class IctCheck:
    """One in-circuit measurement, and the placed part a repair replaces when it fails."""

    name: str
    ref: str
    nominal: float
    unit: str
    tolerance: float  # +- fraction of nominal
    suspect: BoardComponent
    suspect_ref: str


ICT_CHECKS: tuple[IctCheck, ...] = (
    IctCheck("rail_p12v", "TP1", 12.0, "V", 0.05, BOARD_COMPONENTS[2], "U40"),
    IctCheck("rail_p3v3", "TP2", 3.3, "V", 0.05, BOARD_COMPONENTS[2], "U47"),
    IctCheck("rail_p1v8", "TP3", 1.8, "V", 0.05, BOARD_COMPONENTS[2], "U52"),
    IctCheck("r_pullup_bmc", "R17", 10_000.0, "Ohm", 0.01, BOARD_COMPONENTS[4], "R17"),
    IctCheck("c_decoupling_cpu0", "C212", 100e-9, "F", 0.10, BOARD_COMPONENTS[3], "C212"),
    IctCheck("vrm_phase_resistance", "U41", 0.00045, "Ohm", 0.08, BOARD_COMPONENTS[2], "U41"),
)


@dataclass
class Lot:
    """A received lot: its receipt and how much of it the line has used.

    `supplier` is the part's unless a fault says otherwise; `bad` marks the lot of fault
    `bad-lot` (its GPUs fail burn-in far above the natural rate).
    """

    lot_id: str
    part: PartSpec
    date_code: str
    serials: list[str] = field(default_factory=list)
    used: int = 0
    supplier: str = ""
    bad: bool = False
    one_failure: bool = False  # near miss `lot-one-failure`: exactly one GPU fails burn-in

    def __post_init__(self) -> None:
        self.supplier = self.supplier or self.part.supplier

    @property
    def qty(self) -> int:
        return len(self.serials) if self.part.serialized else self.part.lot_size

    def receipt(self) -> MaterialReceived:
        coc = hashlib.sha256(
            f"CoC|{self.lot_id}|{self.part.mpn}|{self.supplier}|{self.date_code}".encode()
        ).hexdigest()
        return MaterialReceived(
            lot=self.lot_id, mpn=self.part.mpn, supplier=self.supplier,
            date_code=self.date_code, qty=self.qty, serials=list(self.serials),
            documents=[Document(kind="coc", sha256=coc, name=f"CoC-{self.lot_id}.pdf")],
        )


class Stock:
    """Hands out serials and quantities lot by lot, opening a new lot when one runs out.

    `marks` names lots by (category, n): the n-th lot opened for that part category gets the
    `supplier` (fault `avl-violation`), is `bad` (fault `bad-lot`) or has `one_failure` (near
    miss `lot-one-failure`).
    """

    def __init__(self, seed: int, rng: random.Random, *,
                 unapproved: tuple[str, int] | None = None, bad: tuple[str, int] | None = None,
                 one_failure: tuple[str, int] | None = None,
                 unapproved_supplier: str = UNAPPROVED_SUPPLIER) -> None:
        self._seed = seed
        self._rng = rng
        self._unapproved = unapproved
        self._unapproved_supplier = unapproved_supplier
        self._bad = bad
        self._one_failure = one_failure
        self._current: dict[str, Lot] = {}
        self._lot_count: dict[str, int] = {}
        self._category_count: dict[str, int] = {}
        self._serial_count: dict[str, int] = {}
        self.lots: list[Lot] = []  # in the order they were opened

    def _open(self, part: PartSpec) -> Lot:
        n = self._lot_count.get(part.code, 0) + 1
        self._lot_count[part.code] = n
        nth = self._category_count[part.category] = self._category_count.get(part.category, 0) + 1
        year, week = self._rng.choice((25, 26)), self._rng.randint(1, 52)
        lot = Lot(f"LOT-S{self._seed}-{part.code}-{n:04d}", part, f"{year:02d}{week:02d}",
                  supplier=self._unapproved_supplier if self._unapproved == (part.category, nth)
                  else "", bad=self._bad == (part.category, nth),
                  one_failure=self._one_failure == (part.category, nth))
        if part.serial_prefix is not None:
            first = self._serial_count.get(part.serial_prefix, 0)
            lot.serials = [
                f"{part.serial_prefix}-S{self._seed}-{first + i:06d}"
                for i in range(1, part.lot_size + 1)
            ]
            self._serial_count[part.serial_prefix] = first + part.lot_size
        self._current[part.code] = lot
        self.lots.append(lot)
        return lot

    def take_serial(self, part: PartSpec) -> tuple[str, Lot]:
        if not part.serialized:
            raise ValueError(f"{part.mpn} is not serialized")
        lot = self._current.get(part.code)
        if lot is None or lot.used >= len(lot.serials):
            lot = self._open(part)
        lot.used += 1
        return lot.serials[lot.used - 1], lot

    def take_qty(self, part: PartSpec, qty: int) -> Lot:
        """Quantity from one lot (the rest of a nearly empty reel is set aside)."""
        lot = self._current.get(part.code)
        if lot is None or lot.used + qty > lot.qty:
            lot = self._open(part)
        lot.used += qty
        return lot

    def current_lot(self, part: PartSpec) -> Lot:
        return self._current.get(part.code) or self._open(part)
