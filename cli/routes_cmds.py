"""`linetrace routes check [FILE...]` and `linetrace routes show PRODUCT`: routes as data.

Also `routes_in_force`, which the commands that start the line (`worker`, `up`, `simulate`)
call first: the packaged routes plus the plant's LINETRACE_ROUTES folder, checked by the same
rules as `routes check`, or a refusal (exit 2) that lists every problem as FILE:LINE:COL.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import msgspec

from linetrace.schemas.routes import (
    PRODUCTS_DIR, Route, RouteBook, RouteError, Step, check_route_files, load_route_book,
    load_route_file, route_files,
)
from linetrace.schemas.routes.loader import decodable_routes

from .output import print_json, print_table
from .settings import ConfigurationError, Settings


def routes_in_force(settings: Settings) -> RouteBook:
    """The checked routes in force. Otherwise nothing starts: exit 2 after printing every
    problem on its own line as FILE:LINE:COL (ConfigurationError for an unreadable folder)."""
    try:
        return load_route_book(settings.routes)
    except RouteError as e:
        if not e.problems:
            raise ConfigurationError(str(e)) from None  # the folder itself: exit 2
        where = (f"LINETRACE_ROUTES={settings.routes}" if settings.routes is not None
                 else "the packaged routes")
        print(f"linetrace: {where}: {len(e.problems)} problem(s) in the routes in force; "
              "nothing was started (`linetrace routes check` shows them too):", file=sys.stderr)
        for problem in e.problems:
            print(problem, file=sys.stderr)
        raise SystemExit(2) from None


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    routes = subparsers.add_parser("routes", help="check and show route files").add_subparsers(
        dest="routes_cmd", required=True)
    check = routes.add_parser(
        "check", parents=[common], help="validate route files; errors as FILE:LINE:COL",
        description="Validate route files against the route schema and its rules, including "
        "references to other routes (these files first, then the routes in force). Without "
        "FILE: every route in force (the packaged ones and those of LINETRACE_ROUTES), as "
        "`worker`, `up` and `simulate` check them when they start. Exit 0 all valid, 1 any "
        "error, 2 a file or the LINETRACE_ROUTES folder cannot be read.")
    check.add_argument("files", nargs="*", metavar="FILE")
    check.set_defaults(fn=cmd_routes_check)
    show = routes.add_parser("show", parents=[common], help="a product's route, step by step",
                             description="Show the route in force of PRODUCT (packaged, or "
                             "from LINETRACE_ROUTES) with its revision and sha256, or the route "
                             "of a file (a path ending in .json or containing /).")
    show.add_argument("product", metavar="PRODUCT")
    show.add_argument("--json", action="store_true", help="the route document (route v1 schema)")
    show.set_defaults(fn=cmd_routes_show)


def cmd_routes_check(args: argparse.Namespace, settings: Settings) -> int:
    plant = settings.routes
    if plant is not None and not plant.is_dir():
        print(f"linetrace: LINETRACE_ROUTES={plant} is not a folder", file=sys.stderr)
        return 2
    in_force = {p.stem: str(p) for p in route_files(PRODUCTS_DIR)}
    try:
        in_force.update({p.stem: str(p) for p in route_files(plant)} if plant else {})
    except OSError as e:
        print(f"linetrace: cannot read LINETRACE_ROUTES={plant}: {e.strerror or e}",
              file=sys.stderr)
        return 2
    # Given files resolve references against the routes in force; without files, the
    # routes in force are checked among themselves (as `load_route_book` does).
    names = args.files or list(in_force.values())
    known = decodable_routes(in_force.values()) if args.files else {}
    readable: list[str] = []
    unreadable = False
    for name in names:
        try:
            Path(name).read_bytes()
        except OSError as e:
            print(f"linetrace: cannot read {name}: {e.strerror or e}", file=sys.stderr)
            unreadable = True
        else:
            readable.append(name)
    try:
        checks = check_route_files(readable, known=known, named_in=[plant] if plant else [])
    except OSError as e:  # vanished between the two reads
        print(f"linetrace: cannot read {e.filename}: {e.strerror or e}", file=sys.stderr)
        return 2
    failed = False
    for check in checks:
        for problem in check.problems:
            print(problem)
        if check.ok and check.route is not None:
            n = len(check.route.steps) + len(check.route.repair_steps)
            print(f"{check.file}: ok ({n} steps)")
        failed = failed or not check.ok
    return 2 if unreadable else 1 if failed else 0


def cmd_routes_show(args: argparse.Namespace, settings: Settings) -> int:
    try:
        if args.product.endswith(".json") or "/" in args.product:
            route, origin = load_route_file(args.product), args.product
        else:
            book = load_route_book(settings.routes)
            route = book.route(args.product)
            where = "packaged" if book.origin(args.product) == "packaged" else "LINETRACE_ROUTES"
            origin = f"{book.files[args.product]} ({where})"
    except OSError as e:
        print(f"linetrace: cannot read {args.product}: {e.strerror or e}", file=sys.stderr)
        return 2
    except RouteError as e:
        for problem in e.problems:
            print(problem, file=sys.stderr)
        if not e.problems:
            print(f"linetrace: {e}", file=sys.stderr)
        return 1 if e.code == "route.invalid" else 2
    if args.json:
        print_json(msgspec.to_builtins(route))
        return 0
    _header(route, origin)
    rows = [_row(s) for s in (*route.steps, *route.repair_steps)]
    print_table(rows, ["STEP", "OPERATION", "STATION TYPE", "REQUIRES", "RESULTS", "GATE",
                       "MAX CYCLE", "ON FAILED", "INSTALLS"])
    return 0


def _header(route: Route, origin: str) -> None:
    print(f"{route.product}  {route.kind}  revision {route.revision}"
          + (f"  {route.description}" if route.description else ""))
    print(f"sha256 {route.sha256}  from {origin}")


def _row(s: Step) -> list[str]:
    rework = (f"repair {s.rework.repair_step} -> {s.rework.return_to} (max {s.rework.max_loops})"
              if s.rework else "")
    return [str(s.step), s.operation, s.station_type, ",".join(map(str, s.requires)) or "-",
            ",".join(s.results), "gate" if s.quality_gate else "", _duration(s.max_cycle_s),
            rework, _installs(s)]


def _installs(s: Step) -> str:
    items = [f"{a.category} x{a.count} ({a.route})" for a in s.consumes]
    for p in s.parts:
        slots = f" [{_ranges(p.slots)}]" if p.slots else ""
        on = f" on {p.parent}" if p.parent else ""
        items.append(f"{p.category} x{p.count}{slots}{on}")
    return ", ".join(items)


def _ranges(numbers: tuple[int, ...]) -> str:
    """(0, 1, 2, 3, 7) -> "0-3,7"."""
    out: list[str] = []
    for n in sorted(numbers):
        if out and out[-1].rsplit("-", 1)[-1] == str(n - 1):
            out[-1] = f"{out[-1].split('-')[0]}-{n}"
        else:
            out.append(str(n))
    return ",".join(out)


def _duration(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    return f"{seconds // 60} min" if seconds % 60 == 0 else f"{seconds} s"

