"""The routes in force: packaged routes plus a plant's LINETRACE_ROUTES folder, and the route
hash a unit records.

A file in the folder adds a product or replaces the packaged route of the same product; the
folder is checked as a whole by the rules of `linetrace routes check`, and one bad file refuses
the whole book with FILE:LINE:COL.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import msgspec
import pytest
import rfc8785

from linetrace.schemas.bodies import WorkStarted
from linetrace.schemas.routes import (
    PRODUCTS_DIR, RouteError, load_route_book, packaged_routes, route_sha256,
)
from linetrace.stations.simulator import LineConfig, generate_line, station_roster

A_TEXT = (PRODUCTS_DIR / "A.json").read_text(encoding="utf-8")
B_TEXT = (PRODUCTS_DIR / "B.json").read_text(encoding="utf-8")
PCBA_TEXT = (PRODUCTS_DIR / "A-PCBA.json").read_text(encoding="utf-8")


def position_of(text: str, needle: str) -> tuple[int, int]:
    at = text.index(needle)
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_without_a_folder_the_packaged_routes_are_in_force() -> None:
    book = load_route_book(None)
    assert book.products == ["A", "A-PCBA", "B"] and book.directory is None
    assert {p: book.origin(p) for p in book.products} == dict.fromkeys(book.products, "packaged")
    assert book.routes == packaged_routes().routes


def test_empty_folder_changes_nothing(tmp_path: Path) -> None:
    book = load_route_book(tmp_path)
    assert book.routes == packaged_routes().routes and book.directory == str(tmp_path.resolve())


def test_a_plant_file_replaces_the_packaged_route_of_its_product(tmp_path: Path) -> None:
    plant = tmp_path / "routes"
    write(plant, "A.json", A_TEXT.replace('"revision": "R1"', '"revision": "R2-plant"')
          .replace('"recipe": "HGX-B200-INSTALL"', '"recipe": "HGX-B200-INSTALL-V2"'))
    book = load_route_book(plant)
    a = book.route("A")
    assert a.revision == "R2-plant" and a.step(60).recipe == "HGX-B200-INSTALL-V2"
    assert book.origin("A") == str(plant.resolve()) and book.files["A"] == str(
        plant.resolve() / "A.json")
    assert a.sha256 != packaged_routes().route("A").sha256
    # the rest stays packaged; A's sub-assembly still resolves to the packaged A-PCBA
    assert book.origin("A-PCBA") == book.origin("B") == "packaged"
    assert book.route_for_unit("A", "assembly") is book.route("A-PCBA")
    assert book.route_for_unit("A", "server") is a


def test_a_plant_file_adds_a_product(tmp_path: Path) -> None:
    write(tmp_path, "C.json", B_TEXT.replace('"product": "B"', '"product": "C"', 1))
    book = load_route_book(tmp_path)
    assert book.products == ["A", "A-PCBA", "B", "C"]
    assert book.route("C").steps == book.route("B").steps and book.origin("C") != "packaged"
    assert packaged_routes().find_route_for_unit("C", "server") is None
    assert book.find_route_for_unit("C", "server") is book.route("C")


def test_a_bad_plant_file_refuses_the_book_at_file_line_col(tmp_path: Path) -> None:
    text = A_TEXT.replace('"station_type": "firmware"', '"station_type": "flasher"')
    bad = write(tmp_path, "A.json", text)
    write(tmp_path, "C.json", B_TEXT.replace('"product": "B"', '"product": "C"', 1))  # fine
    with pytest.raises(RouteError) as e:
        load_route_book(tmp_path)
    line, col = position_of(text, '"flasher"')
    assert e.value.code == "route.invalid"
    assert [(p.file, p.line, p.col) for p in e.value.problems] == [
        (str(bad.resolve()), line, col)]
    assert str(e.value.problems[0]).startswith(f"{bad.resolve()}:{line}:{col}: "
                                               "steps[3].station_type: Invalid enum value")


def test_a_plant_file_must_be_named_after_its_product(tmp_path: Path) -> None:
    bad = write(tmp_path, "A2.json", A_TEXT)  # would silently replace A if names did not count
    with pytest.raises(RouteError) as e:
        load_route_book(tmp_path)
    line, col = position_of(A_TEXT, '"A"')
    (problem,) = e.value.problems
    assert (problem.file, problem.line, problem.col) == (str(bad.resolve()), line, col)
    assert "is named after its product: `A` in A2.json" in problem.message


def test_references_are_resolved_among_the_routes_in_force(tmp_path: Path) -> None:
    """A plant A-PCBA that is no longer an assembly breaks the packaged A that consumes it:
    the problem is reported in the packaged file, and nothing is in force."""
    write(tmp_path, "A-PCBA.json", PCBA_TEXT.replace('"kind": "assembly"', '"kind": "server"'))
    with pytest.raises(RouteError) as e:
        load_route_book(tmp_path)
    (problem,) = e.value.problems
    line, col = position_of(A_TEXT, '"A-PCBA"')
    assert (problem.file, problem.line, problem.col) == (str(PRODUCTS_DIR / "A.json"), line, col)
    assert "which is a server, not an assembly" in problem.message


def test_a_folder_that_is_not_a_folder_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(RouteError) as e:
        load_route_book(tmp_path / "missing")
    assert e.value.code == "route.unreadable" and "is not a folder" in str(e.value)
    with pytest.raises(RouteError) as e:
        load_route_book(write(tmp_path, "A.json", A_TEXT))
    assert e.value.code == "route.unreadable"


# --- the route hash ------------------------------------------------------------------------


def test_route_hash_is_sha256_of_the_rfc8785_form_of_the_route_document() -> None:
    a = packaged_routes().route("A")
    document = json.loads(json.dumps(msgspec.to_builtins(a)))  # what `routes show --json` prints
    assert a.sha256 == route_sha256(a) == hashlib.sha256(rfc8785.dumps(document)).hexdigest()
    assert len({r.sha256 for r in packaged_routes().routes.values()}) == 3


def test_route_hash_ignores_layout_and_follows_content(tmp_path: Path) -> None:
    relaid = json.dumps(json.loads(A_TEXT), separators=(",", ":"), sort_keys=True)
    write(tmp_path, "A.json", relaid + "\r\n")
    assert load_route_book(tmp_path).route("A").sha256 == packaged_routes().route("A").sha256
    write(tmp_path, "A.json", A_TEXT.replace('"max_cycle_s": 1800', '"max_cycle_s": 1801', 1))
    assert load_route_book(tmp_path).route("A").sha256 != packaged_routes().route("A").sha256


# --- the simulator follows the routes in force ---------------------------------------------


def test_the_simulator_follows_a_plant_route_and_names_it(tmp_path: Path) -> None:
    write(tmp_path, "A.json", A_TEXT.replace('"revision": "R1"', '"revision": "R2-plant"')
          .replace('"recipe": "HGX-B200-INSTALL"', '"recipe": "HGX-B200-INSTALL-V2"'))
    book = load_route_book(tmp_path)
    plan = generate_line(LineConfig(units=2, seed=7, routes=book))
    started = [e.body for u in plan.servers for e in u.events if isinstance(e.body, WorkStarted)]
    assert {b.recipe for b in started if b.step == 60} == {"HGX-B200-INSTALL-V2"}
    followed = plan.summary().to_json()["routes"]
    assert followed == {"A": {"revision": "R2-plant", "sha256": book.route("A").sha256},
                        "A-PCBA": {"revision": "R3", "sha256": book.route("A-PCBA").sha256}}
    assert station_roster("A", book) == station_roster("A")
    default = generate_line(LineConfig(units=2, seed=7)).summary().to_json()["routes"]
    assert default["A"] == {"revision": "R1", "sha256": packaged_routes().route("A").sha256}
