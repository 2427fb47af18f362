"""The line simulator: a seeded, reproducible AI-server line that emits signed station events.

`generate_line(config)` is the pure part (no broker): every event of a run, per unit, in order,
following the route files of products A (with its A-PCBA), B or a mix, with natural yields,
burn-in on the simulated baseboard and the faults of DOMAIN.md §9 (`--faults`).
`run_line(config, keys, bootstrap, state_dir)` sends them through one StationClient per station
and, given the plant key, obeys `line.commands` (holds; conducted, also linetrace's routes,
dispositions, locks and interlock). Same seed and faults, same events: serials, lots,
results, ids and event times (conducted, a unit that waited for linetrace or a person goes
on at the line clock, and a disposition's continuation is planned when it comes).
docs/simulator.md is the reference.
"""

from __future__ import annotations

import secrets

from .faults import FAULTS, TARGETS, FaultPlan, FaultSpec, parse_faults, plan_faults
from .line import DEFAULT_BURNIN_SECONDS, DEFAULT_START, LineConfig, LinePlan, generate_line
from .products import PRODUCTS, REPAIR_STEP, Product, golden_firmware, station_roster
from .sending import Interlock, LineStatus
from .summary import LineSummary
from .runner import dependencies, run_line
from .units import SimEvent, Unit


def draw_seed() -> int:
    """A fresh seed for a run without `--seed` (print it so the run can be repeated)."""
    return secrets.randbelow(1_000_000) + 1


__all__ = [
    "DEFAULT_BURNIN_SECONDS", "DEFAULT_START", "FAULTS", "PRODUCTS", "REPAIR_STEP", "TARGETS",
    "FaultPlan", "FaultSpec", "Interlock", "LineConfig", "LinePlan", "LineStatus", "LineSummary",
    "Product", "SimEvent",
    "Unit", "dependencies", "draw_seed", "generate_line", "golden_firmware", "parse_faults",
    "plan_faults", "run_line", "station_roster",
]
