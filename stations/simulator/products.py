"""What the simulated line builds: routes, stations, cycle times, yields, golden firmware.

Plain data (DOMAIN.md §1). Cycle times and yields are our estimates, chosen so a ten-unit run
shows some rework and rarely a scrap; burn-in is a compressed simulation profile, not the
24-72 h of real practice.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Literal

from ..errors import StationError

Kind = Literal["server", "assembly"]

RECEIVING_STATION = ("receiving-01", "receiving")
REPAIR_STEP = 900


@dataclass(frozen=True)
class Step:
    """One operation of a route, done at one station."""

    step: int
    operation: str
    station_type: str
    station_id: str
    cycle_s: float  # mean cycle time; the simulator varies it by +-15 %
    capacity: int = 1  # units the station works on at once (burn-in racks)
    recipe: str | None = None
    recipe_revision: str | None = None


@dataclass(frozen=True)
class Yields:
    """Natural yield losses of a clean run (DOMAIN.md §9: no fault signatures)."""

    aoi_fail: float = 0.05
    ict_fail: float = 0.07
    burnin_fail: float = 0.10
    final_qa_fail: float = 0.03
    repair_scrap: float = 0.04  # a repair ends in scrap
    max_repairs_per_step: int = 2  # the next failure at that step scraps the unit


@dataclass(frozen=True)
class GpuSku:
    """Burn-in acceptance figures of the GPU (DOMAIN.md §4, DCGM diag-skus.yaml)."""

    name: str
    power_w: float
    gflops_target: float
    mem_bw_floor_mbs: float
    nccl_busbw_gbs: float
    pcie_gen: int = 5
    pcie_width: int = 16


@dataclass(frozen=True)
class FirmwareImage:
    """A golden firmware image: what `firmware.flashed` must report for this product."""

    component: str  # BMC, BIOS, VBIOS, NIC
    image: str
    version: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(f"linetrace-golden:{self.image}:{self.version}".encode()).hexdigest()


@dataclass(frozen=True)
class Product:
    name: str
    description: str
    assembly_route: tuple[Step, ...]  # the mainboard PCBA, a unit of its own
    server_route: tuple[Step, ...]
    repair: Step
    gpu: GpuSku
    firmware: tuple[FirmwareImage, ...]
    yields: Yields = field(default_factory=Yields)
    receiving_window_s: int = 3600  # all lots are received before production starts
    pcba_takt_s: int = 600
    server_takt_s: int = 900
    server_lead_s: int = 2400  # first server starts kitting this long after the first PCBA
    units_per_work_order: int = 5
    destinations: tuple[str, ...] = (
        "Ministry of Finance data centre, Bonn",
        "Central bank compute hall, Frankfurt",
        "National research cloud, Jülich",
    )

    def route(self, kind: Kind) -> tuple[Step, ...]:
        return self.server_route if kind == "server" else self.assembly_route

    def step(self, number: int) -> Step:
        for s in (*self.assembly_route, *self.server_route, self.repair):
            if s.step == number:
                return s
        raise KeyError(number)


PRODUCT_A = Product(
    name="A",
    description="8-GPU HGX B200 server (baseboard with 8 SXM GPUs, 2 CPUs, BMC, NICs, PSUs)",
    assembly_route=(
        Step(20, "smt-placement", "smt", "smt-01", 480, recipe="MB-A-TOP-BOT", recipe_revision="7"),
        Step(30, "aoi-inspection", "aoi", "aoi-01", 150, recipe="MB-A-AOI", recipe_revision="4"),
        Step(40, "in-circuit-test", "ict", "ict-01", 300, recipe="MB-A-ICT", recipe_revision="3"),
    ),
    server_route=(
        Step(50, "kitting", "kitting", "kitting-01", 600),
        Step(60, "baseboard-gpu-install", "gpu-install", "gpu-install-01", 1200,
             recipe="HGX-B200-INSTALL", recipe_revision="2"),
        Step(70, "system-integration", "integration", "integration-01", 2400, capacity=2),
        Step(80, "firmware-flash", "firmware", "firmware-01", 900,
             recipe="FW-BASELINE-A", recipe_revision="12"),
        Step(90, "burn-in", "burnin", "burnin-01", 5400, capacity=8,
             recipe="BURNIN-B200-SIM", recipe_revision="1"),
        Step(100, "final-qa", "final-qa", "final-qa-01", 900),
        Step(110, "pack-and-seal", "pack", "pack-01", 600),
        Step(120, "ship", "shipping", "shipping-01", 300),
    ),
    repair=Step(REPAIR_STEP, "repair", "repair", "repair-01", 1800, capacity=2),
    gpu=GpuSku("B200", power_w=1000, gflops_target=36949, mem_bw_floor_mbs=4_072_500,
               nccl_busbw_gbs=475),
    firmware=(
        FirmwareImage("BMC", "ast2600-bmc-a", "1.12.3"),
        FirmwareImage("BIOS", "bios-a-sr", "2.4.1"),
        FirmwareImage("VBIOS", "b200-sxm-vbios", "97.00.a5.00.1"),
        FirmwareImage("NIC", "cx7-fw", "28.43.1014"),
    ),
)

PRODUCTS: dict[str, Product] = {PRODUCT_A.name: PRODUCT_A}


def product(name: str) -> Product:
    try:
        return PRODUCTS[name]
    except KeyError:
        raise StationError(
            f"the line simulator has no route for product {name!r}; known: {', '.join(PRODUCTS)}",
            code="simulator.unknown_product",
        ) from None


def station_roster(product_name: str = "A") -> list[tuple[str, str]]:
    """Every station of the line, as (station id, station type), receiving first."""
    p = product(product_name)
    steps = (*p.assembly_route, *p.server_route, p.repair)
    return [RECEIVING_STATION, *((s.station_id, s.station_type) for s in steps)]
