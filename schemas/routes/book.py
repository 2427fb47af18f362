"""The routes in force: the packaged ones, plus a plant's own folder (`LINETRACE_ROUTES`).

A plant adds a product or changes one without touching the package: it puts route files in a
folder, one per product, each named after its product (`A.json` holds product `A`). A file
there adds a product, or replaces the packaged route of the same product as a whole; the
packaged routes of other products stay in force. The routes in force are checked together, by
the rules of `linetrace routes check`, references resolved among themselves (a plant `A-PCBA`
is the one the packaged `A` consumes), and refused as a whole if any file has a problem: the
worker, `up` and the simulator do not start on half a route book.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .loader import PRODUCTS_DIR, RouteError, check_route_files, route_files
from .model import Route


@dataclass(frozen=True)
class RouteBook:
    """Product -> route in force, the file each came from, and the plant folder (if any)."""

    routes: Mapping[str, Route]
    files: Mapping[str, str]
    directory: str | None = None

    def __contains__(self, product: object) -> bool:
        return product in self.routes

    @property
    def products(self) -> list[str]:
        return sorted(self.routes)

    def route(self, product: str) -> Route:
        """The route of `product`; RouteError `route.unknown_product` if none is in force."""
        route = self.routes.get(product)
        if route is None:
            where = "packaged" + (f" or in {self.directory}" if self.directory else "")
            raise RouteError(f"no route for product {product!r} ({where}); known: "
                             f"{', '.join(self.products) or 'none'}",
                             code="route.unknown_product")
        return route

    def route_for_unit(self, product: str, kind: str) -> Route:
        """The route a unit follows, given what its `work.started` says (`product`, `kind`).

        An assembly may name its own route (`A-PCBA`) or the product it is built for (`A`):
        then it follows the sub-assembly route that the product's route consumes.
        """
        route = self.route(product)
        if route.kind == kind:
            return route
        consumed = {a.route for s in route.steps for a in s.consumes}
        if kind == "assembly" and len(consumed) == 1:
            return self.route(consumed.pop())
        raise RouteError(f"route {product!r} is a {route.kind} route and names no single "
                         f"{kind} route", code="route.unknown_product")

    def find_route_for_unit(self, product: str, kind: str) -> Route | None:
        """`route_for_unit`, or None where no route is in force for the unit."""
        if product not in self.routes:  # the common miss, without building an error
            return None
        try:
            return self.route_for_unit(product, kind)
        except RouteError:
            return None

    def origin(self, product: str) -> str:
        """Where the route of `product` comes from: `packaged`, or the plant folder."""
        file = Path(self.files[product])
        if self.directory is not None and file.parent == Path(self.directory):
            return self.directory
        return "packaged"


def load_route_book(directory: str | Path | None = None) -> RouteBook:
    """The packaged routes, with the route files of `directory` added or replacing packaged
    routes of the same product (module docstring).

    RouteError lists every problem as FILE:LINE:COL (`route.invalid`), or says the folder or a
    file cannot be read (`route.unreadable`).
    """
    files = {p.stem: p for p in route_files(PRODUCTS_DIR)}
    folder: Path | None = None
    if directory is not None:
        folder = Path(directory).expanduser().resolve()
        if not folder.is_dir():
            raise RouteError(f"LINETRACE_ROUTES={directory} is not a folder; give a folder of "
                             "route files (<product>.json), or unset it to use the packaged "
                             "routes", code="route.unreadable")
        try:
            files.update({p.stem: p for p in route_files(folder)})
        except OSError as e:
            raise RouteError(f"cannot read LINETRACE_ROUTES={directory}: {e.strerror or e}",
                             code="route.unreadable") from None
    try:
        checks = check_route_files(files.values(), known={},
                                   named_in=[folder] if folder else [])
    except OSError as e:
        raise RouteError(f"cannot read route file {e.filename}: {e.strerror or e}",
                         code="route.unreadable") from None
    problems = [p for c in checks for p in c.problems]
    if problems:
        raise RouteError(f"{len(problems)} problem(s) in the routes in force, first: "
                         f"{problems[0]}", problems=problems)
    routes = {c.route.product: c.route for c in checks if c.route is not None}
    return RouteBook(routes=routes, files={c.route.product: c.file for c in checks
                                           if c.route is not None},
                     directory=str(folder) if folder else None)


@lru_cache(maxsize=1)
def packaged_routes() -> RouteBook:
    """The packaged routes alone (the default when no LINETRACE_ROUTES is set), read once."""
    return load_route_book(None)


def load_route(product: str) -> Route:
    """The packaged route of `product` (e.g. "A", "A-PCBA", "B"), references checked."""
    return packaged_routes().route(product)


def all_routes() -> dict[str, Route]:
    """Every packaged route by product, with references between them checked."""
    return dict(packaged_routes().routes)


def route_for_unit(product: str, kind: str) -> Route:
    """The packaged route a unit follows (`RouteBook.route_for_unit`)."""
    return packaged_routes().route_for_unit(product, kind)
