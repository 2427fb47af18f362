"""The faults the simulator injects (`--faults SPEC`, DOMAIN.md §9) and whom each strikes.

SPEC is `none` or comma-separated names, each optionally `name:N`. N is 1-based and means, per
fault, the server (in start order), the lot or the mainboard PCBA it strikes (`TARGETS`).
A fault may carry parameters after `@` (`hot-gpu:2@gpu=5@onset=120@delta=9.5`, `PARAMS`), and
`@vary` draws every parameter not given from the run's seed, within ranges that keep the
fault's evidence (`VARY`); `LineConfig.fault_variation` varies every fault of the run. Near
misses (`NEAR_MISSES`: a warm GPU, an ICT wobble, ...) are given the same way; they leave
something that looks like a fault but stays inside what a detector must accept. Without
N a fault takes its default target; the defaults spread the faults over servers 1-4 so that
one small run can show many of them side by side (a default beyond the run's servers wraps
around). Each fault leaves only the evidence DOMAIN.md §9 lists; what follows from it is the
line's normal reaction (a failed burn-in goes to repair like any other failure).
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field

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
#: Near misses: like a fault, but inside what the line accepts; no detector may flag them.
#: Name -> (what `:N` names, default N).
NEAR_TARGETS: dict[str, tuple[str, int]] = {
    "warm-gpu": ("server (one GPU runs 5-7 C above its siblings, steady)", 1),
    "telemetry-hiccup": ("server (2-3 burn-in samples missing: a gap under 5 s)", 1),
    "ict-wobble": ("mainboard PCBA a tiny trend starts at (inside natural variation)", 1),
    "lot-one-failure": ("GPU lot (exactly one of its GPUs fails burn-in)", 1),
    "golden-reflash": ("server repair (the N-th re-flashes the golden BMC image)", 1),
    "slow-unit": ("server (a visit at step 60 lasts 50-85 % of its max cycle)", 3),
    "station-standby": ("server (final QA reports standby, SBY, for a while)", 1),
}
NEAR_MISSES: tuple[str, ...] = tuple(NEAR_TARGETS)
_ALL_TARGETS = {**TARGETS, **NEAR_TARGETS}

#: Parameters a fault or near miss takes (`@name=value`): name -> (meaning, default, vary
#: range low, high). Default None: the fault's historic behaviour (e.g. a GPU drawn from the
#: seed). `@vary` draws each parameter not given uniformly from its range (integers for
#: `gpu`, `check`, `slot`, `count`, `xid`, `component`, `which`, `supplier`; `xid` and the
#: indexes pick from a list).
PARAMS: dict[str, dict[str, tuple[str, float | None, float, float]]] = {
    "hot-gpu": {"gpu": ("GPU slot", None, 0, 7),
                "onset": ("s of load before it degrades", 60.0, 20, 120),
                "delta": ("C above its siblings' median at steady load", None, 9.0, 14.0)},
    "ecc-dbe": {"gpu": ("GPU slot", None, 0, 7),
                "onset": ("fraction of the run", None, 0.15, 0.85),
                "count": ("double-bit errors", 1, 1, 3)},
    "fatal-xid": {"gpu": ("GPU slot", None, 0, 7),
                  "onset": ("fraction of the run", None, 0.15, 0.85),
                  "xid": ("index into FATAL_CHOICES", 0, 0, 9)},
    "gpu-off-bus": {"gpu": ("GPU slot", None, 0, 7),
                    "onset": ("fraction of the run", None, 0.15, 0.85)},
    "bad-lot": {"p": ("chance each GPU of the lot fails a burn-in", None, 0.3, 0.6)},
    "ict-drift": {"slope": ("tolerance fractions per test (sign: direction)", 0.08, 0.03, 0.07),
                  "noise": ("tolerance fractions", 0.005, 0.002, 0.008),
                  "check": ("index into ICT_CHECKS", 0, 0, 2),
                  "length": ("tests that drift, then the fixture is fixed (default: all)",
                             None, 8, 12)},
    "cloned-serial": {"slot": ("GPU slot whose serial is cloned", 0, 0, 7)},
    "avl-violation": {"supplier": ("index into UNAPPROVED_SUPPLIERS", 0, 0, 3)},
    "firmware-mismatch": {"component": ("index into FIRMWARE_COMPONENTS", 0, 0, 3)},
    "stuck-unit": {"stall": ("silence, in max cycle times (+ 600 s)", 2.0, 1.2, 3.0)},
    "station-down": {"duration": ("s down", float(7200), 1800, 10800)},
    "warm-gpu": {"gpu": ("GPU slot", None, 0, 7),
                 "delta": ("C above its siblings' median at steady load", 6.0, 5.0, 7.0)},
    "telemetry-hiccup": {"missing": ("consecutive samples missing", 3, 2, 3),
                         "onset": ("fraction of the run", 0.5, 0.2, 0.8)},
    "ict-wobble": {"slope": ("tolerance fractions per test", 0.002, 0.001, 0.003),
                   "check": ("index into ICT_CHECKS", 0, 0, 2)},
    "lot-one-failure": {},
    "golden-reflash": {},
    "slow-unit": {"stall": ("the visit's silence, in max cycle times", 0.7, 0.5, 0.85)},
    "station-standby": {"duration": ("s in standby", float(1200), 600, 2400)},
}
#: The XIDs `fatal-xid@xid=K` reports (all in the fatal set of DOMAIN.md §4).
FATAL_CHOICES = (79, 48, 62, 64, 74, 95, 119, 120, 46, 109)
FIRMWARE_COMPONENTS = ("BMC", "BIOS", "VBIOS", "NIC")
UNAPPROVED_SUPPLIERS = ("SUP-GREYMARKET-BROKER", "SUP-SURPLUS-TRADER", "SUP-UNKNOWN-ASIA",
                        "SUP-EXCESS-STOCK")
_INTEGER = {"gpu", "count", "xid", "check", "slot", "supplier", "component", "missing",
            "length"}

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
    params: tuple[tuple[str, float], ...] = ()  # as given (`@name=value`)
    vary: bool = False  # `@vary`: parameters not given are drawn from the seed


@dataclass(frozen=True)
class Strike:
    """The truth about one fault (or near miss) of a run: whom it struck, with what.

    Benches score detectors against these (`LinePlan.truth`); nothing is sent for them."""

    fault: str
    unit: str | None = None  # serial of the unit struck
    gpu: int | None = None  # GPU slot
    gpu_serial: str | None = None
    lot: str | None = None
    station: str | None = None
    near_miss: bool = False
    details: Mapping[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class FaultPlan:
    """The faults of one run, each with its resolved 1-based target and parameters."""

    targets: dict[str, int]
    #: fault -> parameter -> value, resolved (given, drawn, or default when not None).
    params: dict[str, dict[str, float]] = field(default_factory=dict)

    def param(self, name: str, key: str, default: float | None = None) -> float | None:
        """The parameter's value for this run, or `default` (the historic behaviour)."""
        return self.params.get(name, {}).get(key, default)

    def has(self, name: str) -> bool:
        return name in self.targets

    def strikes(self, name: str, n: int) -> bool:
        """Does fault `name` strike number `n` (1-based server, lot or PCBA)?"""
        return self.targets.get(name) == n

    def servers_struck(self, n: int) -> list[str]:
        return [f for f, t in self.targets.items() if t == n and f in SERVER_FAULTS]

    @property
    def near_misses(self) -> list[str]:
        return [f for f in self.targets if f in NEAR_TARGETS]

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
        item, *extras = item.split("@")
        name, sep, n = item.partition(":")
        name = name.strip()
        if name not in _ALL_TARGETS:
            raise StationError(f"unknown fault {name!r}; known: {', '.join(FAULTS)} (or none); "
                               f"near misses: {', '.join(NEAR_MISSES)}",
                               code="simulator.unknown_fault")
        params, vary = _params(name, extras)
        target: int | None = None
        if sep:
            try:
                target = int(n)
            except ValueError:
                target = 0
            if target < 1:
                raise StationError(f"fault {item!r}: after `:` give a number >= 1 (the "
                                   f"{_ALL_TARGETS[name][0]} it strikes)",
                                   code="simulator.invalid_fault")
        if any(s.name == name for s in specs):
            raise StationError(f"fault {name!r} is given twice", code="simulator.invalid_fault")
        specs.append(FaultSpec(name, target, params, vary))
    if "none" in {x.strip() for x in (text or "").split(",")} and specs:
        raise StationError("`none` cannot be combined with other faults",
                           code="simulator.invalid_fault")
    return tuple(specs)


def _params(name: str, extras: list[str]) -> tuple[tuple[tuple[str, float], ...], bool]:
    """`@k=v` and `@vary` after a fault's name; StationError naming what is accepted."""
    known = PARAMS.get(name, {})
    out: dict[str, float] = {}
    vary = False
    for raw in extras:
        text = raw.strip()
        if text == "vary":
            vary = True
            continue
        key, sep, value = text.partition("=")
        key = key.strip()
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or key not in known or number != number:
            accepted = ", ".join(f"{k} ({m})" for k, (m, *_) in known.items()) or "none"
            raise StationError(f"fault {name}: bad parameter {text!r}; give @NAME=NUMBER or "
                               f"@vary; its parameters: {accepted}",
                               code="simulator.invalid_fault")
        out[key] = number
    return tuple(sorted(out.items())), vary


def _resolve(spec: FaultSpec, seed: int, vary: bool) -> dict[str, float]:
    """The parameters given, drawn (`@vary` or `vary`: from the seed and the fault's name,
    so one fault's draws never move another's), or their non-None defaults."""
    given = dict(spec.params)
    rng = random.Random(f"linetrace-sim:{seed}:vary:{spec.name}")
    out: dict[str, float] = {}
    for key, (_, default, lo, hi) in PARAMS.get(spec.name, {}).items():
        drawn = rng.randint(int(lo), int(hi)) if key in _INTEGER else rng.uniform(lo, hi)
        if key == "slope" and spec.name == "ict-drift":
            drawn *= rng.choice((-1, 1))
        if key in given:
            out[key] = given[key]
        elif vary or spec.vary:
            out[key] = float(drawn)
        elif default is not None:
            out[key] = float(default)
    return out


def plan_faults(specs: tuple[FaultSpec, ...], servers: int, period: int = 1, *,
                seed: int = 0, vary: bool = False) -> FaultPlan:
    """Resolve the targets for a run of `servers` servers (defaults wrap around) and each
    fault's parameters (`vary`: every fault varied, as `@vary` does for one).

    `period`: how many products alternate (2 for mix); a cloned serial comes from the last
    earlier server of the same product, so its target must be beyond the first period.
    """
    targets: dict[str, int] = {}
    params: dict[str, dict[str, float]] = {}
    for s in specs:
        if s.params or s.vary or vary:
            params[s.name] = _resolve(s, seed, vary)
        if s.name in SERVER_FAULTS or (s.name in NEAR_TARGETS
                                       and NEAR_TARGETS[s.name][0].startswith("server")):
            if servers < 1:
                raise StationError(f"fault {s.name} needs at least one server (--units)",
                                   code="simulator.invalid_fault")
            if s.target is not None and s.target > servers:
                raise StationError(f"fault {s.name}:{s.target}: the run has only {servers} "
                                   "server(s)", code="simulator.invalid_fault")
            n = s.target if s.target is not None else (_ALL_TARGETS[s.name][1] - 1) % servers + 1
            if s.name == "cloned-serial" and n <= period:
                if s.target is not None or servers <= period:
                    raise StationError(
                        "cloned-serial copies a GPU serial of an earlier server of the same "
                        f"product: it needs a target >= {period + 1} and at least {period + 1} "
                        "servers", code="simulator.invalid_fault")
                n = period + 1
            targets[s.name] = n
        else:
            targets[s.name] = s.target if s.target is not None else _ALL_TARGETS[s.name][1]
    return FaultPlan(targets, params)


def describe() -> str:
    """One line per fault for `--help`: name, what `:N` names and its default."""
    return "; ".join(f"{n}[:N] N={what.split(' (')[0]} (default {d})"
                     for n, (what, d) in TARGETS.items())
