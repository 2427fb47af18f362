"""What the simulated line builds: products, their routes, stations, cycle times and yields.

The steps come from the routes in force (`linetrace.schemas.routes`: the packaged
`<product>.json` files, or a plant's LINETRACE_ROUTES folder given as `LineConfig.routes`; see
docs/routes.md): which station type does each step, which parts it installs, where a failed
unit is repaired and which step it returns to. This module adds what a route does not say and a simulation
needs: one station per station type (`<type>-01`), how long an operation takes, how many
units a station works on at once, natural yields, the golden firmware and the GPU SKU.
Cycle times and yields are our estimates, chosen so a ten-unit run shows some rework and
rarely a scrap; burn-in is a compressed profile (seconds of telemetry), not 24-72 h.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from functools import cache
from typing import Literal

from linetrace.schemas.routes import Route, RouteBook, Step, packaged_routes

from ..errors import StationError
from . import parts
from .parts import PartSpec

Kind = Literal["server", "assembly"]

RECEIVING_STATION = ("receiving-01", "receiving")
REPAIR_STEP = 900
#: `--product mix` alternates these, server 1 being the first.
MIX = ("A", "B")


@dataclass(frozen=True)
class StationSpec:
    """One simulated station: mean cycle time (varied +-15 %) and units worked on at once."""

    station_type: str
    cycle_s: float
    capacity: int = 1

    @property
    def station_id(self) -> str:
        return f"{self.station_type}-01"


#: Station type -> the station of the simulated line (our estimates). Burn-in's own cycle is
#: set-up + the telemetry seconds + tear-down (see `burnin_rack`).
STATIONS: dict[str, StationSpec] = {s.station_type: s for s in (
    StationSpec("smt", 480), StationSpec("aoi", 150), StationSpec("ict", 300),
    StationSpec("kitting", 600), StationSpec("gpu-install", 1200),
    StationSpec("integration", 2400, capacity=2), StationSpec("firmware", 900),
    StationSpec("burnin", 900, capacity=8), StationSpec("final-qa", 900),
    StationSpec("pack", 600), StationSpec("shipping", 300),
    StationSpec("repair", 1800, capacity=2),
)}


def station_of(step: Step) -> StationSpec:
    return STATIONS[step.station_type]


@dataclass(frozen=True)
class Yields:
    """Natural yield losses of a clean run (DOMAIN.md §9: no fault signatures)."""

    aoi_fail: float = 0.05
    ict_fail: float = 0.07
    burnin_fail: float = 0.10  # one GPU below its compute or memory-bandwidth floor
    final_qa_fail: float = 0.03
    repair_scrap: float = 0.04  # a repair ends in scrap
    bad_lot_gpu_fail: float = 0.5  # per GPU of a bad lot, per burn-in (fault `bad-lot`)


@dataclass(frozen=True)
class GpuPerf:
    """Burn-in performance floors of the GPU (DOMAIN.md §4, DCGM diag-skus.yaml)."""

    gflops_target: float
    mem_bw_floor_mbs: float
    nccl_busbw_gbs: float


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
    """A server product: its route, the sub-assembly route it consumes, parts and golden FW."""

    name: str
    catalog: dict[str, PartSpec]  # part category -> what is bought for it
    gpu_sku: str  # burn-in SKU (linetrace.stations.burnin.SKUS)
    perf: GpuPerf
    firmware: tuple[FirmwareImage, ...]
    fct_fixture: str
    yields: Yields = field(default_factory=Yields)
    units_per_work_order: int = 5
    #: The routes in force for this run (None: the packaged routes).
    routes: RouteBook | None = field(default=None, compare=False, repr=False)

    @property
    def route_book(self) -> RouteBook:
        return self.routes if self.routes is not None else packaged_routes()

    @property
    def route(self) -> Route:
        return self.route_book.route(self.name)

    @property
    def assembly_route(self) -> Route | None:
        """The route of the sub-assembly built on this line for it (A's mainboard PCBA)."""
        consumed = [a.route for s in self.route.steps for a in s.consumes]
        return self.route_book.route(consumed[0]) if consumed else None

    def route_of(self, kind: Kind) -> Route:
        if kind == "server":
            return self.route
        assembly = self.assembly_route
        if assembly is None:
            raise StationError(f"product {self.name} has no sub-assembly route",
                               code="simulator.unknown_product")
        return assembly

    def part(self, category: str) -> PartSpec:
        try:
            return self.catalog[category]
        except KeyError:
            raise StationError(f"product {self.name}: its route installs `{category}` but the "
                               "simulator buys no such part", code="simulator.route_mismatch") from None


PRODUCT_A = Product(
    name="A",
    catalog={p.category: p for p in (
        parts.BASEBOARD, parts.GPU, parts.CHASSIS, parts.CPU, parts.DIMM, parts.NIC, parts.DPU,
        parts.PSU, parts.SSD, parts.CABLES)},
    gpu_sku="B200",
    perf=GpuPerf(gflops_target=36_949, mem_bw_floor_mbs=4_072_500, nccl_busbw_gbs=475),
    firmware=(
        FirmwareImage("BMC", "ast2600-bmc-a", "1.12.3"),
        FirmwareImage("BIOS", "bios-a-sr", "2.4.1"),
        FirmwareImage("VBIOS", "b200-sxm-vbios", "97.00.a5.00.1"),
        FirmwareImage("NIC", "cx7-fw", "28.43.1014"),
    ),
    fct_fixture="FX-FCT-A-01",
)

PRODUCT_B = Product(
    name="B",
    catalog={p.category: p for p in (
        parts.PCIE_GPU, parts.CHASSIS_B, parts.MAINBOARD_B, parts.CPU, parts.DIMM, parts.NIC,
        parts.DPU, parts.PSU, parts.SSD, parts.CABLES_B)},
    gpu_sku="RTX-PRO-6000-BSE",
    perf=GpuPerf(gflops_target=54_543, mem_bw_floor_mbs=1_110_000, nccl_busbw_gbs=52),
    firmware=(
        FirmwareImage("BMC", "ast2600-bmc-b", "1.9.0"),
        FirmwareImage("BIOS", "bios-b-gnr", "1.3.2"),
        FirmwareImage("VBIOS", "rtx-pro-6000-bse-vbios", "98.02.2e.00.04"),
        FirmwareImage("NIC", "cx7-fw", "28.43.1014"),
    ),
    fct_fixture="FX-FCT-B-01",
)

PRODUCTS: dict[str, Product] = {p.name: p for p in (PRODUCT_A, PRODUCT_B)}


def product(name: str) -> Product:
    try:
        return PRODUCTS[name]
    except KeyError:
        raise StationError(
            f"the line simulator has no route for product {name!r}; known: "
            f"{', '.join(PRODUCTS)} or mix", code="simulator.unknown_product",
        ) from None


def products_of(choice: str, routes: RouteBook | None = None) -> tuple[Product, ...]:
    """`A`, `B` or `mix` (A and B alternating) as the products servers are built as,
    following `routes` (None: the packaged routes)."""
    chosen = tuple(product(n) for n in MIX) if choice == "mix" else (product(choice),)
    return chosen if routes is None else tuple(replace(p, routes=routes) for p in chosen)


@cache
def golden_firmware() -> dict[tuple[str, str], str]:
    """(image, version) -> SHA-256 of the golden image, for every product."""
    return {(f.image, f.version): f.sha256 for p in PRODUCTS.values() for f in p.firmware}


def station_roster(product_name: str = "A", routes: RouteBook | None = None
                   ) -> list[tuple[str, str]]:
    """Every station a run of `product_name` (A, B or mix) uses, as (id, type), receiving first."""
    types: dict[str, None] = {}
    for p in products_of(product_name, routes):
        followed = ([p.assembly_route] if p.assembly_route is not None else []) + [p.route]
        for r in followed:
            for s in (*r.steps, *r.repair_steps):
                types.setdefault(s.station_type)
    return [RECEIVING_STATION, *((STATIONS[t].station_id, t) for t in types)]
