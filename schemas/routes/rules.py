"""What a route must say beyond its JSON Schema: plain checks over a decoded `Route`.

Each finding names the path of the offending key or value (`steps[3].requires[0]`), so the
loader (`loader.py`) can turn it into FILE:LINE:COL. Nothing here reads files.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from .json_positions import JsonPath
from .model import Route, Step


@dataclass(frozen=True)
class Finding:
    """One thing wrong with a route, at `path`; `see` points at a related place."""

    path: JsonPath
    message: str
    at: Literal["key", "value"] = "value"
    see: JsonPath | None = None


def validate_route(route: Route) -> list[Finding]:
    """Every rule of a single route: numbers, order, references within the route, parts."""
    out: list[Finding] = []
    flow = {s.step for s in route.steps}
    repairs = {s.step for s in route.repair_steps}
    defined: dict[int, JsonPath] = {}
    installed: set[str] = set()  # part categories installed so far along the flow
    for group, steps in (("steps", route.steps), ("repair_steps", route.repair_steps)):
        previous: int | None = None
        for i, s in enumerate(steps):
            here: JsonPath = (group, i)
            if s.step in defined:  # its references are ambiguous: judge only the first
                out.append(Finding((*here, "step"), f"step {s.step} is defined twice",
                                   see=defined[s.step]))
                continue
            defined[s.step] = (*here, "step")
            if previous is not None and s.step < previous:
                out.append(Finding((*here, "step"), f"step {s.step} comes after step "
                                   f"{previous}: step numbers must increase"))
            previous = s.step
            if group == "steps" and s.is_repair:
                out.append(Finding((*here, "station_type"), f"step {s.step} has station type "
                                   "`repair`: repair steps go under `repair_steps` and are "
                                   "reached through a step's `rework`"))
            if group == "repair_steps" and not s.is_repair:
                out.append(Finding((*here, "station_type"), f"repair step {s.step} must have "
                                   f"station type `repair`, not `{s.station_type}`"))
            out += _results(s, here)
            out += _requires(s, here, flow, repairs, group == "repair_steps")
            out += _rework(route, s, here, flow, repairs)
            installed |= {p.category for p in s.parts} | {a.category for a in s.consumes}
            out += _parts(route, s, here, installed)
    return out


def _results(s: Step, here: JsonPath) -> list[Finding]:
    out = []
    for j, result in enumerate(s.results):
        if result in s.results[:j]:
            out.append(Finding((*here, "results", j), f"result `{result}` is listed twice"))
    if "Completed" not in s.results:
        out.append(Finding((*here, "results"), f"step {s.step} must allow the result `Completed`"))
    if s.quality_gate and "Failed" not in s.results:
        out.append(Finding((*here, "quality_gate"), f"step {s.step} is a quality gate, so it "
                           "must allow the result `Failed`"))
    if s.quality_gate and s.is_repair:
        out.append(Finding((*here, "quality_gate"), "a repair step cannot be a quality gate"))
    return out


def _requires(s: Step, here: JsonPath, flow: set[int], repairs: set[int],
              is_repair: bool) -> list[Finding]:
    out = []
    if is_repair and s.requires:
        return [Finding((*here, "requires"), f"repair step {s.step} cannot require steps: a unit "
                        "reaches it through a rework, from whichever step failed")]
    for j, n in enumerate(s.requires):
        path: JsonPath = (*here, "requires", j)
        if n in s.requires[:j]:
            out.append(Finding(path, f"step {n} is listed twice"))
        elif n == s.step:
            out.append(Finding(path, f"step {s.step} requires itself"))
        elif n in repairs:
            out.append(Finding(path, f"step {s.step} requires repair step {n}: only steps under "
                               "`steps` can be required"))
        elif n not in flow:
            out.append(Finding(path, f"step {s.step} requires step {n}, which is not in this route"))
        elif n > s.step:
            out.append(Finding(path, f"step {s.step} requires step {n}, which comes later"))
    return out


def _rework(route: Route, s: Step, here: JsonPath, flow: set[int],
            repairs: set[int]) -> list[Finding]:
    rework = s.rework
    if rework is None:
        return []
    path: JsonPath = (*here, "rework")
    if s.is_repair:
        return [Finding(path, f"repair step {s.step} cannot have a rework: a failed repair ends "
                        "in scrap or a hold", at="key")]
    out = []
    if "Failed" not in s.results:
        out.append(Finding(path, f"step {s.step} has a rework but does not allow the result "
                           "`Failed`", at="key"))
    target = rework.repair_step
    if target in flow:
        out.append(Finding((*path, "repair_step"), f"rework goes to step {target}, which is not "
                           f"a repair step (station type `{route.step(target).station_type}`); "
                           "list repair steps under `repair_steps`"))
    elif target not in repairs:
        out.append(Finding((*path, "repair_step"), f"rework goes to repair step {target}, which "
                           "is not in this route"))
    back = rework.return_to
    if back in repairs:
        out.append(Finding((*path, "return_to"), f"rework returns to repair step {back}; it must "
                           "return to a step under `steps`"))
    elif back not in flow:
        out.append(Finding((*path, "return_to"), f"rework returns to step {back}, which is not in "
                           "this route"))
    elif back > s.step:
        out.append(Finding((*path, "return_to"), f"rework returns to step {back}, which comes "
                           f"after step {s.step}: a unit returns to this step or an earlier one"))
    return out


def _parts(route: Route, s: Step, here: JsonPath, installed: set[str]) -> list[Finding]:
    out = []
    seen: dict[tuple[str, str | None], JsonPath] = {}
    for j, a in enumerate(s.consumes):
        path: JsonPath = (*here, "consumes", j)
        if a.route == route.product:
            out.append(Finding((*path, "route"), f"step {s.step} consumes its own route"))
        if (a.category, None) in seen:
            out.append(Finding((*path, "category"), f"category `{a.category}` is listed twice "
                               f"at step {s.step}", see=seen[a.category, None]))
        seen[a.category, None] = (*path, "category")
    for j, p in enumerate(s.parts):
        path = (*here, "parts", j)
        if (p.category, p.parent) in seen:
            out.append(Finding((*path, "category"), f"category `{p.category}` is listed twice "
                               f"at step {s.step}", see=seen[p.category, p.parent]))
        seen[p.category, p.parent] = (*path, "category")
        if p.slots and len(p.slots) != p.count:
            out.append(Finding((*path, "slots"), f"{len(p.slots)} slots for {p.count} "
                               f"`{p.category}` parts: give one slot per part"))
        for k, slot in enumerate(p.slots):
            if slot in p.slots[:k]:
                out.append(Finding((*path, "slots", k), f"slot {slot} is listed twice"))
        if p.parent == p.category:
            out.append(Finding((*path, "parent"), f"`{p.category}` cannot be mounted on itself"))
        elif p.parent is not None and p.parent not in installed:
            out.append(Finding((*path, "parent"), f"parent `{p.parent}` is not installed at "
                               f"step {s.step} or before"))
    return out


def validate_references(routes: Mapping[str, Route]) -> dict[str, list[Finding]]:
    """Rules across routes: each consumed sub-assembly route exists and is an assembly.

    Returns product -> findings (only products with findings).
    """
    out: dict[str, list[Finding]] = {}
    for product, route in routes.items():
        for i, s in enumerate(route.steps):
            for j, a in enumerate(s.consumes):
                path: JsonPath = ("steps", i, "consumes", j, "route")
                other = routes.get(a.route)
                if a.route == product:
                    continue  # reported by validate_route
                if other is None:
                    known = ", ".join(sorted(routes)) or "none"
                    out.setdefault(product, []).append(Finding(
                        path, f"step {s.step} consumes route `{a.route}`, which does not exist "
                        f"(known: {known})"))
                elif other.kind != "assembly":
                    out.setdefault(product, []).append(Finding(
                        path, f"step {s.step} consumes route `{a.route}`, which is a "
                        f"{other.kind}, not an assembly"))
    return out
