"""Routes as contracts: the model, its rules, the loader and the packaged product routes.

Read by the worker (which enforces them) and by stations (which follow them) alike, so they
live in `schemas`, which imports nothing else of linetrace. docs/routes.md describes the format.

- `model`: the msgspec models (`Route`, `Step`, ...), the canonical file text, the route
  hash (`Route.sha256`) and the published JSON Schema;
- `rules`: what a route must say beyond its schema; `json_positions`: FILE:LINE:COL;
- `loader`: checking files, errors by line; `book`: the routes in force (packaged plus a
  plant's `LINETRACE_ROUTES` folder);
- `products/`: the packaged route files (`A-PCBA.json`, `A.json`, `B.json`).
"""

from __future__ import annotations

from .book import (
    RouteBook, all_routes, load_route, load_route_book, packaged_routes, route_for_unit,
)
from .loader import (
    PRODUCTS_DIR, ROUTE_ERROR_CODES, FileCheck, RouteError, RouteProblem, check_route_bytes,
    check_route_files, load_route_file, route_files,
)
from .model import ExpectedPart, Rework, Route, Step, SubAssembly, decode_route, route_sha256
from .rules import Finding, validate_references, validate_route

__all__ = [
    "PRODUCTS_DIR", "ROUTE_ERROR_CODES", "ExpectedPart", "FileCheck", "Finding", "Rework",
    "Route", "RouteBook", "RouteError", "RouteProblem", "Step", "SubAssembly", "all_routes",
    "check_route_bytes", "check_route_files", "decode_route", "load_route", "load_route_book",
    "load_route_file", "packaged_routes", "route_files", "route_for_unit", "route_sha256",
    "validate_references", "validate_route",
]
