"""Per-SKU figures of the GPUs we burn in (DOMAIN.md §4).

Power limits, GFLOPS and memory-bandwidth floors are DCGM `diag-skus.yaml` defaults as quoted in
DOMAIN.md §4. Temperature thresholds, clocks, NVLink link counts and board part numbers are our
own estimates (typical `nvidia-smi -q` values for the part, or illustrative): a real run reads
them from NVML and reports what the GPU says, so the estimates only drive the simulated baseboard
and the labels of its results.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StationError


@dataclass(frozen=True)
class SkuSpec:
    name: str  # an `Id`: used as `burnin.run` sku
    power_w: float  # enforced power limit (DCGM)
    gflops_floor: float  # DCGM diag target (DOMAIN.md §4)
    mem_bw_floor_mbs: float
    slowdown_c: float  # (estimate) HW slowdown threshold
    shutdown_c: float  # (estimate)
    max_operating_c: float  # (estimate) max operating temperature
    sm_clock_max_mhz: float  # (estimate) boost clock under load
    sm_clock_idle_mhz: float  # (estimate)
    mem_clock_mhz: float  # (estimate)
    pcie_gen: int = 5
    pcie_width: int = 16
    nvlink_links: int | None = 18  # None: no NVLink (PCIe card)
    board_pn: str | None = None  # (illustrative)


SKUS: dict[str, SkuSpec] = {
    s.name: s
    for s in (
        SkuSpec("H100-SXM", power_w=700, gflops_floor=29_250, mem_bw_floor_mbs=1_905_000,
                slowdown_c=89, shutdown_c=92, max_operating_c=87, sm_clock_max_mhz=1980,
                sm_clock_idle_mhz=345, mem_clock_mhz=2619, board_pn="692-2G520-0200-000"),
        SkuSpec("B200", power_w=1000, gflops_floor=36_949, mem_bw_floor_mbs=4_072_500,
                slowdown_c=90, shutdown_c=95, max_operating_c=87, sm_clock_max_mhz=1965,
                sm_clock_idle_mhz=420, mem_clock_mhz=3996, board_pn="699-21010-0210-000"),
        SkuSpec("B300", power_w=1099, gflops_floor=36_825, mem_bw_floor_mbs=4_623_360,
                slowdown_c=90, shutdown_c=95, max_operating_c=87, sm_clock_max_mhz=2032,
                sm_clock_idle_mhz=420, mem_clock_mhz=3996, board_pn="699-21010-0230-000"),
        SkuSpec("RTX-PRO-6000-BSE", power_w=600, gflops_floor=54_543,
                mem_bw_floor_mbs=1_110_000, slowdown_c=94, shutdown_c=98, max_operating_c=90,
                sm_clock_max_mhz=2617, sm_clock_idle_mhz=180, mem_clock_mhz=14001,
                nvlink_links=None, board_pn="900-2G153-0000-000"),
    )
}

DEFAULT_SKU = "B200"  # the GPU of product A in the line simulator


def sku_named(name: str) -> SkuSpec:
    try:
        return SKUS[name]
    except KeyError:
        raise StationError(f"unknown GPU SKU {name!r}; known: {', '.join(SKUS)}",
                           code="burnin.unknown_sku") from None


def sku_of_device_name(name: str) -> str | None:
    """Our SKU name for an NVML device name (`NVIDIA H100 80GB HBM3` -> `H100-SXM`), if known."""
    n = name.upper()
    if "RTX PRO 6000" in n:
        return "RTX-PRO-6000-BSE" if "SERVER" in n else None
    if "H100" in n and ("SXM" in n or "HBM3" in n) and "PCIE" not in n and "NVL" not in n:
        return "H100-SXM"
    for sku in ("B300", "B200"):
        if sku in n:
            return sku
    return None
