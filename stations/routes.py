"""Load and check route files (`stations/routes/<product>.json`), explaining errors by line.

A route file passes four judges in order: UTF-8 and JSON syntax (the decoder's line/col),
duplicate keys, the msgspec model (`linetrace.schemas.route.Route`, which says the same as
the published JSON Schema), then the rules of `route_rules`. Every problem is reported as
`FILE:LINE:COL: message` at the offending key or value.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from linetrace.schemas.route import (
    ROUTE_SCHEMA_ID, ExpectedPart, Kind, Result, Rework, Route, StationType, Step, SubAssembly,
    decode_route,
)

from .errors import StationError
from .json_positions import Positions, format_path, locate, parse_msgspec_path
from .route_rules import Finding, validate_references, validate_route

__all__ = [
    "ROUTES_DIR", "FileCheck", "Finding", "Route", "RouteError", "RouteProblem", "Step",
    "all_routes", "check_route_bytes", "check_route_files", "load_route", "load_route_file",
    "route_files", "route_for_unit", "validate_references", "validate_route",
]

#: The shipped route files (package data of `linetrace.stations`).
ROUTES_DIR = Path(__file__).resolve().parent / "routes"
_PRODUCT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class RouteProblem:
    """One error in a route file, at a 1-based line and column."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class RouteError(StationError):
    """A route file is invalid (`problems` says where), or a product has no route."""

    code = "route.invalid"

    def __init__(self, message: str, *, problems: Sequence[RouteProblem] = (),
                 code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.problems = list(problems)


@dataclass
class FileCheck:
    """The verdict on one route file: its route when it decoded, and every problem."""

    file: str
    route: Route | None = None
    problems: list[RouteProblem] = field(default_factory=list)
    positions: Positions | None = None

    @property
    def ok(self) -> bool:
        return self.route is not None and not self.problems

    def add(self, finding: Finding) -> None:
        assert self.positions is not None
        line, col = self.positions.position(finding.path, finding.at)
        message = f"{format_path(finding.path)}: {finding.message}"
        if finding.see is not None:
            message += f" (see line {self.positions.position(finding.see)[0]})"
        self.problems.append(RouteProblem(self.file, line, col, message))


def check_route_bytes(data: bytes, file: str) -> FileCheck:
    """Every problem of one route document; `route` is set when it decoded (even with rule
    violations), so references across files can still be checked."""
    check = FileCheck(file)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        col = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        check.problems.append(RouteProblem(file, line, col, f"not UTF-8 text: {e.reason}"))
        return check
    try:
        check.positions = positions = locate(text)
    except json.JSONDecodeError as e:
        check.problems.append(RouteProblem(file, e.lineno, e.colno, f"invalid JSON: {e.msg}"))
        return check
    except RecursionError:
        check.problems.append(RouteProblem(file, 1, 1, "invalid JSON: nested too deeply"))
        return check
    for dup in positions.duplicates:
        first_line, first_col = positions.line_col(dup.first)
        line, col = positions.line_col(dup.offset)
        check.problems.append(RouteProblem(
            file, line, col, f"{format_path(dup.path)}: duplicate key `{dup.path[-1]}` (first "
            f"at line {first_line}, column {first_col})"))
    for path, offset in positions.non_json:
        line, col = positions.line_col(offset)
        check.problems.append(RouteProblem(file, line, col, f"{format_path(path)}: NaN and "
                                           "Infinity are not JSON numbers"))
    if check.problems:
        return check
    try:
        check.route = decode_route(data)
    except msgspec.ValidationError as e:
        check.add(_schema_finding(str(e)))
        return check
    except msgspec.DecodeError as e:  # json.loads accepted it; msgspec should too
        check.problems.append(RouteProblem(file, 1, 1, f"invalid JSON: {e}"))
        return check
    for finding in validate_route(check.route):
        check.add(finding)
    check.problems.sort(key=lambda p: (p.line, p.col))
    return check


#: The model behind each object in a route document, by the key that holds it.
_MODELS: dict[str | None, type[msgspec.Struct]] = {
    None: Route, "steps": Step, "repair_steps": Step, "rework": Rework,
    "consumes": SubAssembly, "parts": ExpectedPart,
}
#: The allowed values of each closed field, by its key.
_CHOICES: dict[str, tuple[str, ...]] = {
    "station_type": typing.get_args(StationType), "kind": typing.get_args(Kind),
    "results": typing.get_args(Result), "$schema": (ROUTE_SCHEMA_ID,),
}


def _schema_finding(error: str) -> Finding:
    """msgspec's `Expected ... - at `$.steps[3].step`` as a finding at that path."""
    message, _, where = error.partition(" - at `")
    path = parse_msgspec_path(where.rstrip("`") or "$")
    names = [p for p in path if isinstance(p, str)]
    if unknown := re.match(r"Object contains unknown field `(.*)`$", message):
        model = _MODELS.get(names[-1] if names else None, Route)
        known = ", ".join(f.encode_name for f in msgspec.structs.fields(model))
        return Finding((*path, unknown.group(1)), f"unknown field `{unknown.group(1)}` "
                       f"(fields: {known})", at="key")
    if missing := re.match(r"Object missing required field `(.*)`$", message):
        return Finding(path, f"missing required field `{missing.group(1)}`")
    if message.startswith("Invalid enum value") and names and names[-1] in _CHOICES:
        message += "; expected one of: " + ", ".join(_CHOICES[names[-1]])
    return Finding(path, message)


# --- the shipped routes ------------------------------------------------------------------


def route_files() -> list[Path]:
    return sorted(ROUTES_DIR.glob("*.json"))


def load_route_file(path: str | Path) -> Route:
    """The route in `path`; RouteError listing every problem if it is invalid (references to
    other routes are not checked here: see `all_routes` and `check_route_files`)."""
    check = check_route_bytes(Path(path).read_bytes(), str(path))
    if check.route is None or check.problems:
        raise RouteError(_summary(check), problems=check.problems)
    return check.route


def load_route(product: str) -> Route:
    """The shipped route of `product` (e.g. "A", "A-PCBA", "B"), references checked."""
    path = ROUTES_DIR / f"{product}.json"
    if not _PRODUCT.fullmatch(product) or not path.is_file():
        known = ", ".join(p.stem for p in route_files())
        raise RouteError(f"no route for product {product!r}; known: {known}",
                         code="route.unknown_product")
    (check,) = check_route_files([path])
    if check.route is None or check.problems:
        raise RouteError(_summary(check), problems=check.problems)
    return check.route


def all_routes() -> dict[str, Route]:
    """Every shipped route by product, with references between them checked."""
    checks = check_route_files(route_files())
    problems = [p for c in checks for p in c.problems]
    if problems:
        raise RouteError(f"{len(problems)} problem(s) in the shipped routes, first: "
                         f"{problems[0]}", problems=problems)
    return {c.route.product: c.route for c in checks if c.route is not None}


def route_for_unit(product: str, kind: Kind) -> Route:
    """The route a unit follows, given what `work.started` says (`product`, `kind`).

    An assembly may name its own route (`A-PCBA`) or the product it is built for (`A`):
    then it follows the sub-assembly route that the product's route consumes.
    """
    route = load_route(product)
    if route.kind == kind:
        return route
    consumed = {a.route for s in route.steps for a in s.consumes}
    if kind == "assembly" and len(consumed) == 1:
        return load_route(consumed.pop())
    raise RouteError(f"route {product!r} is a {route.kind} route and names no single "
                     f"{kind} route", code="route.unknown_product")


def check_route_files(paths: Iterable[str | Path]) -> list[FileCheck]:
    """Check files together: each on its own, then references between them, resolved
    against these files first and the shipped routes second. A file in `ROUTES_DIR` must be
    named after its product. OSError if a file can't be read."""
    checks = []
    for p in map(Path, paths):
        check = check_route_bytes(p.read_bytes(), str(p))
        if check.route is not None and p.resolve().parent == ROUTES_DIR and (
                check.route.product != p.stem):
            check.add(Finding(("product",), f"a shipped route file is named after its product: "
                              f"`{check.route.product}` in {p.name}"))
        checks.append(check)
    known: dict[str, Route] = {}
    for path in route_files():
        try:
            shipped = load_route_file(path)
        except (OSError, RouteError):
            continue  # a broken shipped route is reported when it is checked itself
        known[shipped.product] = shipped
    for check in checks:
        if check.route is not None:
            known[check.route.product] = check.route
    for check in checks:  # each against the others, itself included even if it shares a name
        if check.route is not None:
            product = check.route.product
            for finding in validate_references({**known, product: check.route}).get(product, []):
                check.add(finding)
            check.problems.sort(key=lambda p: (p.line, p.col))
    return checks


def _summary(check: FileCheck) -> str:
    count = len(check.problems)
    first = check.problems[0] if check.problems else f"{check.file}: invalid route"
    return f"{first}" + (f" (and {count - 1} more)" if count > 1 else "")
