"""Load and check route files (`<product>.json`), explaining errors by line.

A route file passes four judges in order: UTF-8 and JSON syntax (the decoder's line/col),
duplicate keys, the msgspec model (`model.Route`, which says the same as the published JSON
Schema), then the rules of `rules.py`. Every problem is reported as `FILE:LINE:COL: message`
at the offending key or value. Which routes are in force (packaged, plus a plant's
`LINETRACE_ROUTES` folder) is `book.py`'s business.
"""

from __future__ import annotations

import json
import re
import typing
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

from ..errors import SchemaError
from .json_positions import Positions, format_path, locate, parse_msgspec_path
from .model import (
    ROUTE_SCHEMA_ID, ExpectedPart, Kind, Result, Rework, Route, StationType, Step, SubAssembly,
    decode_route,
)
from .rules import Finding, validate_references, validate_route

#: The packaged route files (package data `linetrace.schemas.routes.products`).
PRODUCTS_DIR = Path(__file__).resolve().parent / "products"
PRODUCT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

#: Every code a RouteError carries, with what it means. Codes are stable; new ones are added.
ROUTE_ERROR_CODES: dict[str, str] = {
    "route.invalid": "a route file breaks the route schema or its rules; `problems` lists "
                     "FILE:LINE:COL",
    "route.unknown_product": "no route in force (packaged or in LINETRACE_ROUTES) for this product",
    "route.unreadable": "the LINETRACE_ROUTES folder or a route file in it cannot be read",
}


@dataclass(frozen=True)
class RouteProblem:
    """One error in a route file, at a 1-based line and column."""

    file: str
    line: int
    col: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}: {self.message}"


class RouteError(SchemaError):
    """A route file is invalid (`problems` says where), or a product has no route."""

    code = "route.invalid"

    def __init__(self, message: str, *, problems: Sequence[RouteProblem] = (),
                 code: str | None = None) -> None:
        super().__init__(message)
        if code is not None:
            self.code = code
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


# --- files ------------------------------------------------------------------------------


def route_files(directory: str | Path = PRODUCTS_DIR) -> list[Path]:
    """The route files of a folder (`*.json`, not recursive), by name."""
    return sorted(p for p in Path(directory).glob("*.json") if p.is_file())


def load_route_file(path: str | Path) -> Route:
    """The route in `path`; RouteError listing every problem if it is invalid (references to
    other routes are not checked here: see `check_route_files` and `book.load_route_book`)."""
    check = check_route_bytes(Path(path).read_bytes(), str(path))
    if check.route is None or check.problems:
        raise RouteError(summary(check), problems=check.problems)
    return check.route


def decodable_routes(paths: Iterable[str | Path]) -> dict[str, Route]:
    """Product -> route of every file that reads and passes on its own (others are skipped:
    they are reported when they are checked themselves)."""
    out: dict[str, Route] = {}
    for path in paths:
        try:
            route = load_route_file(path)
        except (OSError, RouteError):
            continue
        out[route.product] = route
    return out


def check_route_files(paths: Iterable[str | Path], *, known: Mapping[str, Route] | None = None,
                      named_in: Collection[str | Path] = ()) -> list[FileCheck]:
    """Check files together: each on its own, then references between them, resolved
    against these files first and `known` second (default: the packaged routes). A file in
    the packaged folder or in a folder of `named_in` (a plant's LINETRACE_ROUTES) must be
    named after its product. OSError if a file can't be read."""
    folders = {PRODUCTS_DIR, *(Path(d).resolve() for d in named_in)}
    checks = []
    for p in map(Path, paths):
        check = check_route_bytes(p.read_bytes(), str(p))
        if check.route is not None and p.resolve().parent in folders and (
                check.route.product != p.stem):
            check.add(Finding(("product",), f"a route file in {p.parent} is named after its "
                              f"product: `{check.route.product}` in {p.name}"))
        checks.append(check)
    resolved = dict(decodable_routes(route_files()) if known is None else known)
    for check in checks:
        if check.route is not None:
            resolved[check.route.product] = check.route
    for check in checks:  # each against the others, itself included even if it shares a name
        if check.route is not None:
            product = check.route.product
            for finding in validate_references({**resolved, product: check.route}).get(product, []):
                check.add(finding)
            check.problems.sort(key=lambda p: (p.line, p.col))
    return checks


def summary(check: FileCheck) -> str:
    """The first problem of a file, and how many more there are."""
    count = len(check.problems)
    first = check.problems[0] if check.problems else f"{check.file}: invalid route"
    return f"{first}" + (f" (and {count - 1} more)" if count > 1 else "")
