"""The line simulator: a seeded, reproducible AI-server line that emits signed station events.

`generate_line(config)` is the pure part (no broker): every event of a run, per unit, in order.
`run_line(config, keys, bootstrap, state_dir)` sends them through one StationClient per station.
Same seed, same events: serials, lots, results, ids and event times.
"""

from __future__ import annotations

import secrets

from .line import DEFAULT_START, LineConfig, LinePlan, LineSummary, generate_line
from .products import PRODUCTS, REPAIR_STEP, Product, station_roster
from .runner import dependencies, run_line
from .units import SimEvent, Unit


def draw_seed() -> int:
    """A fresh seed for a run without `--seed` (print it so the run can be repeated)."""
    return secrets.randbelow(1_000_000) + 1


__all__ = [
    "DEFAULT_START", "LineConfig", "LinePlan", "LineSummary", "PRODUCTS", "Product", "REPAIR_STEP",
    "SimEvent", "Unit", "dependencies", "draw_seed", "generate_line", "run_line", "station_roster",
]
