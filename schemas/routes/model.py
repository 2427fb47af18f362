"""Routes as data: the steps a product's units go through, one JSON file per product.

A route is what the line follows and what the orchestrator enforces: which station type does
each step, which earlier steps must be done first (skip-step detection), which results a step
may report, where a failed unit is repaired and which step it returns to, how long a unit may
stay at a step (longer = stuck), which steps are quality gates, and which parts and
sub-assemblies each step installs. The packaged files live in `schemas/routes/products/` (a
plant adds or replaces routes with a `LINETRACE_ROUTES` directory, see `book.py`); their JSON
Schema (`json/route.v1.schema.json`) is generated from these models with the event schemas
(`python -m linetrace.schemas.jsonschema --write`). Rules a JSON Schema cannot say (numbers
increase, references resolve) are checked by `rules.py`, files by `loader.py`.

A route's identity is its `sha256`: SHA-256 of the RFC 8785 (JCS) form of the route document as
the model reads it (defaults omitted; what `linetrace routes show PRODUCT --json` prints), so
whitespace, key order and line endings do not change it and any change of content does.
`revision` is the plant's name for it. A unit keeps the route it started with (the ledger
records product, revision and hash on the unit); every decision made from a route names it.

Results (the `work.completed` result at a step):
- `Completed`: the unit moves on to the next step (at a quality gate only with passing
  evidence, see `Step.quality_gate`);
- `Failed`: the unit follows the step's `rework` loop; without one it is held for disposition;
- `Aborted`: the operation was interrupted; the unit may start the same step again;
- `Skipped`: the step counts as done without work (only where a route lists it).
"""

from __future__ import annotations

import hashlib
import inspect
import json
from collections.abc import Collection
from functools import cached_property
from importlib import resources
from typing import Annotated, Any, Literal

import msgspec
import rfc8785
from msgspec import Meta

from ..bodies import Id, Text

ROUTE_SCHEMA_ID = "urn:linetrace:schema:route:v1"
ROUTE_SCHEMA_FILE = "route.v1.schema.json"

Kind = Literal["server", "assembly"]
#: Station types of DOMAIN.md §1.
StationType = Literal[
    "receiving", "smt", "aoi", "ict", "kitting", "gpu-install", "integration", "firmware",
    "burnin", "final-qa", "pack", "shipping", "repair",
]
#: The results of `work.completed` (`bodies.WorkCompleted.result`).
Result = Literal["Completed", "Failed", "Aborted", "Skipped"]

ProductId = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z",
                                description="Product id; also the route file's name.")]
StepNo = Annotated[int, Meta(ge=1, le=100000, description="A step number of this route.")]
Operation = Annotated[str, Meta(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9-]*\Z",
                                description="Operation name, kebab-case (`work.started.operation`).")]
Slot = Annotated[int, Meta(ge=0, le=1023)]


class _Part(msgspec.Struct, kw_only=True, frozen=True, forbid_unknown_fields=True,
            omit_defaults=True):
    """Base of the route structs: closed objects (a typo is an error, not ignored)."""


class ExpectedPart(_Part, kw_only=True, frozen=True):
    """Parts of one category that a step installs (`materials.installed` items).

    `count` is the number of serialized parts, or the quantity of non-serialized ones. `slots`,
    when given, are the exact slots they fill (one each); `parent` is the category of the part
    they are mounted on (GPUs on the baseboard), absent when mounted in the unit itself.
    """

    category: Id
    count: Annotated[int, Meta(ge=1, le=1_000_000)]
    serialized: bool = True
    slots: tuple[Slot, ...] = ()
    parent: Id | None = None


class SubAssembly(_Part, kw_only=True, frozen=True):
    """Units of another route installed at this step (the mainboard PCBA of route `A-PCBA`).

    Each must have completed its own route; its genealogy becomes part of this unit's.
    """

    route: ProductId
    category: Id
    count: Annotated[int, Meta(ge=1, le=64)] = 1


class Rework(_Part, kw_only=True, frozen=True):
    """What happens to a unit that fails the step: repair, then back to a named step.

    `return_to` is this step or an earlier one; after `max_loops` repairs for this step, the
    next failure ends in scrap (or a hold for a person to decide).
    """

    repair_step: StepNo
    return_to: StepNo
    max_loops: Annotated[int, Meta(ge=1, le=100)]


class Step(_Part, kw_only=True, frozen=True):
    """One operation of the route, done at a station of `station_type`.

    `requires`: steps a unit must have completed before it may start this one (transitively,
    see `Route.required_before`). `max_cycle_s`: the longest a unit may stay at this step, from
    `unit.arrived` to `unit.departed`, without being reported stuck. `quality_gate`: the unit
    passes only with `work.completed` Completed and a passing `unit.inspected` or `unit.tested`
    recorded at this step.
    """

    step: StepNo
    operation: Operation
    station_type: StationType
    description: Text | None = None
    requires: tuple[StepNo, ...]
    results: Annotated[tuple[Result, ...], Meta(min_length=1)]
    quality_gate: bool
    max_cycle_s: Annotated[int, Meta(ge=1, le=31_536_000)]
    rework: Rework | None = None
    recipe: Text | None = None
    recipe_revision: Text | None = None
    consumes: tuple[SubAssembly, ...] = ()
    parts: tuple[ExpectedPart, ...] = ()

    @property
    def is_repair(self) -> bool:
        return self.station_type == "repair"

    def allows(self, result: str) -> bool:
        return result in self.results


class Route(_Part, kw_only=True, frozen=True, dict=True):
    """The route of one product (a server) or sub-assembly (an assembly with its own serial).

    `steps` are followed in order; `repair_steps` are entered only through a step's `rework`.
    """

    schema: Literal["urn:linetrace:schema:route:v1"] | None = msgspec.field(
        default=None, name="$schema")
    product: ProductId
    kind: Kind
    revision: Annotated[str, Meta(min_length=1, max_length=32)]
    description: Text | None = None
    steps: Annotated[tuple[Step, ...], Meta(min_length=1)]
    repair_steps: tuple[Step, ...] = ()

    # --- identity ----------------------------------------------------------------------

    @cached_property
    def sha256(self) -> str:
        """The route's content hash (module docstring): what units and decisions record."""
        return route_sha256(self)

    # --- lookups for the simulator and the orchestrator -----------------------------------

    def step(self, number: int) -> Step:
        """The step (flow or repair) with this number; KeyError if the route has none."""
        for s in (*self.steps, *self.repair_steps):
            if s.step == number:
                return s
        raise KeyError(f"route {self.product} has no step {number}")

    def has_step(self, number: int) -> bool:
        return any(s.step == number for s in (*self.steps, *self.repair_steps))

    @property
    def first_step(self) -> Step:
        return self.steps[0]

    @property
    def last_step(self) -> Step:
        return self.steps[-1]

    def next_step(self, number: int) -> Step | None:
        """The flow step after `number`, None after the last. A repair step has no next step:
        the unit goes back to the `return_to` of the rework that sent it there."""
        for i, s in enumerate(self.steps):
            if s.step == number:
                return self.steps[i + 1] if i + 1 < len(self.steps) else None
        if self.has_step(number):
            raise ValueError(f"step {number} of route {self.product} is a repair step: "
                             "the unit returns to the step its rework names")
        raise KeyError(f"route {self.product} has no step {number}")

    def required_before(self, number: int) -> frozenset[int]:
        """Every step that must be completed before `number` may start (transitive)."""
        seen: set[int] = set()
        todo = list(self.step(number).requires)
        while todo:
            n = todo.pop()
            if n not in seen and self.has_step(n):
                seen.add(n)
                todo.extend(self.step(n).requires)
        return frozenset(seen)

    def missing_before(self, number: int, completed: Collection[int]) -> list[int]:
        """Required steps not in `completed`: non-empty means the unit skipped a step."""
        return sorted(self.required_before(number) - set(completed))

    def rework_of(self, number: int) -> Rework | None:
        return self.step(number).rework

    def repair_for(self, number: int) -> Step | None:
        """The repair step a unit that failed `number` goes to."""
        rework = self.step(number).rework
        return None if rework is None else self.step(rework.repair_step)

    def rework_target(self, number: int) -> Step | None:
        """The step a unit that failed `number` returns to after repair."""
        rework = self.step(number).rework
        return None if rework is None else self.step(rework.return_to)

    @property
    def quality_gates(self) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.quality_gate)

    def parts_expected(self, number: int) -> tuple[ExpectedPart, ...]:
        return self.step(number).parts

    def sub_assemblies(self, number: int) -> tuple[SubAssembly, ...]:
        return self.step(number).consumes

    def expected_inventory(self) -> dict[str, int]:
        """Category -> count of everything the route installs (inventory match at final QA,
        GPU count at burn-in)."""
        counts: dict[str, int] = {}
        for s in self.steps:
            for p in s.parts:
                counts[p.category] = counts.get(p.category, 0) + p.count
            for a in s.consumes:
                counts[a.category] = counts.get(a.category, 0) + a.count
        return counts


# --- the file format ---------------------------------------------------------------------

#: Nesting depth up to which containers always get one line per member (the document, the
#: `steps` arrays, each step); deeper ones stay on one line when they fit in `WIDTH` columns.
#: Arrays of numbers or strings (`requires`, `results`, `slots`) are always on one line.
EXPANDED_DEPTH = 3
WIDTH = 100


def _render(value: Any, indent: int, depth: int) -> str:
    flat = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    if not isinstance(value, (dict, list, tuple)) or not value:
        return flat
    if isinstance(value, (list, tuple)) and not any(isinstance(v, (dict, list, tuple)) for v in value):
        return flat
    if depth >= EXPANDED_DEPTH and indent + len(flat) <= WIDTH:
        return flat
    pad, inner = " " * indent, " " * (indent + 2)
    if isinstance(value, (list, tuple)):
        items = [inner + _render(v, indent + 2, depth + 1) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + pad + "]"
    members = [f"{inner}{json.dumps(k, ensure_ascii=False)}: {_render(v, indent + 2, depth + 1)}"
               for k, v in value.items()]
    return "{\n" + ",\n".join(members) + "\n" + pad + "}"


def render_route(route: Route) -> str:
    """The canonical text of a route file (field order of the models, defaults omitted)."""
    return _render(msgspec.to_builtins(route), 0, 0) + "\n"


def route_sha256(route: Route) -> str:
    """SHA-256 (hex) of the RFC 8785 form of the route document, defaults omitted."""
    return hashlib.sha256(rfc8785.dumps(msgspec.to_builtins(route))).hexdigest()


def decode_route(data: bytes | str) -> Route:
    """Decode and type-check a route document; `msgspec.ValidationError` names the path."""
    return msgspec.json.decode(data, type=Route)


# --- the published JSON Schema -----------------------------------------------------------


def build_route_schema() -> dict[str, Any]:
    """The JSON Schema (draft 2020-12) of route files, from the models above."""
    from ..jsonschema import DRAFT, _walk  # the event schemas' generator: one post-processing

    (_,), components = msgspec.json.schema_components([Route], ref_template="#/$defs/{name}")
    root = components.pop("Route")
    root.pop("title", None)
    schema = {
        "$schema": DRAFT,
        "$id": ROUTE_SCHEMA_ID,
        "title": "route v1",
        "description": " ".join(root.pop("description").split())
        + " Checked beyond this schema by `linetrace routes check FILE`.",
        **_walk(root),
        "$defs": {name: _walk(_clean(components[name])) for name in sorted(components)},
    }
    result: dict[str, Any] = json.loads(json.dumps(schema))  # tuple defaults -> JSON arrays
    return result


def _clean(definition: dict[str, Any]) -> dict[str, Any]:
    """msgspec copies docstrings verbatim; publish them without the source indentation."""
    if "description" in definition:
        definition["description"] = inspect.cleandoc(definition["description"])
    return definition


def schema_files() -> dict[str, str]:
    """File name -> text of the route schema, for `jsonschema.build_all`."""
    from ..jsonschema import render

    return {ROUTE_SCHEMA_FILE: render(build_route_schema())}


def load_route_schema() -> dict[str, Any]:
    """The published route schema, read from the installed package data."""
    text = resources.files("linetrace.schemas").joinpath("json", ROUTE_SCHEMA_FILE).read_text(
        encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema
