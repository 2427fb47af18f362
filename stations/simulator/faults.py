"""The faults the simulator injects (`--faults SPEC`, DOMAIN.md §9) and whom each strikes.

SPEC is `none` or comma-separated names, each optionally `name:N`. N is 1-based and means, per
fault, the server (in start order), the lot or the mainboard PCBA it strikes (`TARGETS`). Without
N a fault takes its default target; the defaults spread the faults over servers 1-4 so that
one small run can show many of them side by side (a default beyond the run's servers wraps
around). Each fault leaves only the evidence DOMAIN.md §9 lists; what follows from it is the
line's normal reaction (a failed burn-in goes to repair like any other failure).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import StationError

#: Fault name -> (what `:N` names, default N).
TARGETS: dict[str, tuple[str, int]] = {
    "hot-gpu": ("server", 1),
    "ecc-dbe": ("server", 2),
    "fatal-xid": ("server", 3),
    "gpu-off-bus": ("server", 4),
    "bad-lot": ("GPU lot", 1),
    "ict-drift": ("mainboard PCBA the drift starts at", 1),
    "skip-step": ("server (it skips the firmware flash, step 80)", 2),
    "unknown-lot": ("server (its cable kit's lot)", 3),
    "cloned-serial": ("server (it gets a GPU serial of an earlier server)", 2),
    "avl-violation": ("PSU lot", 1),
    "firmware-mismatch": ("server (its BMC image)", 1),
    "stuck-unit": ("server (it stalls at step 60)", 3),
    "station-down": ("server (final QA goes down as the next unit arrives after it started)", 1),
}
FAULTS: tuple[str, ...] = tuple(TARGETS)
#: Faults of the burn-in rack, realised by `linetrace.stations.burnin.SimulatedBaseboard`.
BURNIN_FAULTS = ("hot-gpu", "ecc-dbe", "fatal-xid", "gpu-off-bus")
#: Faults whose N counts servers (the others count lots or PCBAs).
SERVER_FAULTS = frozenset(n for n, (what, _) in TARGETS.items() if what.startswith("server"))

SKIPPED_STEP = 80  # skip-step: the firmware flash
STUCK_STEP = 60  # stuck-unit: baseboard / card install
STATION_DOWN_TYPE = "final-qa"
STATION_DOWN_S = 7200  # how long the station is down (SDT), then back to PRD
DRIFT_CHECK = 0  # ict-drift: ICT_CHECKS[0], the 12 V rail


@dataclass(frozen=True)
class FaultSpec:
    name: str
    target: int | None = None  # as given; None = default


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one run, each with its resolved 1-based target."""

    targets: dict[str, int]

    def has(self, name: str) -> bool:
        return name in self.targets

    def strikes(self, name: str, n: int) -> bool:
        """Does fault `name` strike number `n` (1-based server, lot or PCBA)?"""
        return self.targets.get(name) == n

    def servers_struck(self, n: int) -> list[str]:
        return [f for f, t in self.targets.items() if t == n and f in SERVER_FAULTS]

    @property
    def names(self) -> list[str]:
        return list(self.targets)


NO_FAULTS = FaultPlan({})


def parse_faults(text: str | None) -> tuple[FaultSpec, ...]:
    """`hot-gpu,skip-step:2` -> specs; `none` or empty -> none. StationError on a bad spec."""
    specs: list[FaultSpec] = []
    for raw in (text or "").split(","):
        item = raw.strip()
        if not item or item == "none":
            continue
        name, sep, n = item.partition(":")
        name = name.strip()
        if name not in TARGETS:
            raise StationError(f"unknown fault {name!r}; known: {', '.join(FAULTS)} (or none)",
                               code="simulator.unknown_fault")
        target: int | None = None
        if sep:
            try:
                target = int(n)
            except ValueError:
                target = 0
            if target < 1:
                raise StationError(f"fault {item!r}: after `:` give a number >= 1 (the "
                                   f"{TARGETS[name][0]} it strikes)", code="simulator.invalid_fault")
        if any(s.name == name for s in specs):
            raise StationError(f"fault {name!r} is given twice", code="simulator.invalid_fault")
        specs.append(FaultSpec(name, target))
    if "none" in {x.strip() for x in (text or "").split(",")} and specs:
        raise StationError("`none` cannot be combined with other faults",
                           code="simulator.invalid_fault")
    return tuple(specs)


def plan_faults(specs: tuple[FaultSpec, ...], servers: int, period: int = 1) -> FaultPlan:
    """Resolve the targets for a run of `servers` servers (defaults wrap around).

    `period`: how many products alternate (2 for mix); a cloned serial comes from the last
    earlier server of the same product, so its target must be beyond the first period.
    """
    targets: dict[str, int] = {}
    for s in specs:
        if s.name in SERVER_FAULTS:
            if servers < 1:
                raise StationError(f"fault {s.name} needs at least one server (--units)",
                                   code="simulator.invalid_fault")
            if s.target is not None and s.target > servers:
                raise StationError(f"fault {s.name}:{s.target}: the run has only {servers} "
                                   "server(s)", code="simulator.invalid_fault")
            n = s.target if s.target is not None else (TARGETS[s.name][1] - 1) % servers + 1
            if s.name == "cloned-serial" and n <= period:
                if s.target is not None or servers <= period:
                    raise StationError(
                        "cloned-serial copies a GPU serial of an earlier server of the same "
                        f"product: it needs a target >= {period + 1} and at least {period + 1} "
                        "servers", code="simulator.invalid_fault")
                n = period + 1
            targets[s.name] = n
        else:
            targets[s.name] = s.target if s.target is not None else TARGETS[s.name][1]
    return FaultPlan(targets)


def describe() -> str:
    """One line per fault for `--help`: name, what `:N` names and its default."""
    return "; ".join(f"{n}[:N] N={what.split(' (')[0]} (default {d})"
                     for n, (what, d) in TARGETS.items())
