"""Routes as data: the shipped route files, their schema, their rules, and errors by line.

Every shipped route is judged twice, by the published JSON Schema (any vendor's validator) and
by the msgspec model plus rules (what linetrace enforces). Broken copies must be reported at
the line and column of the offending key or value.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import typing
from collections.abc import Callable
from pathlib import Path

import msgspec
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from linetrace.cli import main as cli_main
from linetrace.cli import routes_cmds
from linetrace.cli.settings import load as load_settings
from linetrace.schemas import jsonschema as generator
from linetrace.schemas.bodies import WorkCompleted
from linetrace.schemas.routes import (
    ROUTE_ERROR_CODES, RouteError, all_routes, check_route_bytes, check_route_files, load_route,
    load_route_file, route_files, route_for_unit,
)
from linetrace.schemas.routes.model import (
    ROUTE_SCHEMA_FILE, Result, Route, build_route_schema, decode_route, load_route_schema,
    render_route,
)

ROOT = Path(__file__).resolve().parents[2]
ROUTES = ROOT / "schemas" / "routes" / "products"
SHIPPED = sorted(ROUTES.glob("*.json"))
VALIDATOR = Draft202012Validator(load_route_schema(), format_checker=FormatChecker())
A_TEXT = (ROUTES / "A.json").read_text(encoding="utf-8")


def position_of(text: str, needle: str, offset: int = 0, nth: int = 0) -> tuple[int, int]:
    """1-based line and column of the `nth` occurrence of `needle`, plus `offset` characters."""
    at = -1
    for _ in range(nth + 1):
        at = text.index(needle, at + 1)
    at += offset
    return text.count("\n", 0, at) + 1, at - (text.rfind("\n", 0, at) + 1) + 1


def problems_of(text: str) -> list[tuple[int, int, str]]:
    check = check_route_bytes(text.encode("utf-8"), "A.json")
    return [(p.line, p.col, p.message) for p in check.problems]


# --- the shipped routes ------------------------------------------------------------------


def test_the_shipped_routes_are_a_pcba_a_and_b() -> None:
    assert [p.name for p in SHIPPED] == ["A-PCBA.json", "A.json", "B.json"]
    assert route_files() == SHIPPED
    assert sorted(all_routes()) == ["A", "A-PCBA", "B"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_route_is_valid_against_the_json_schema(path: Path) -> None:
    errors = [e.message for e in VALIDATOR.iter_errors(json.loads(path.read_text("utf-8")))]
    assert errors == []


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_route_is_valid_against_the_model_and_rules(path: Path) -> None:
    (check,) = check_route_files([path])
    assert check.problems == [] and check.route is not None
    assert check.route.product == path.stem
    assert load_route_file(path) == load_route(path.stem) == check.route


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_route_file_is_in_canonical_format(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    assert render_route(decode_route(text)) == text


def test_route_schema_is_generated_from_the_model_and_published() -> None:
    Draft202012Validator.check_schema(load_route_schema())
    assert load_route_schema() == build_route_schema()
    assert ROUTE_SCHEMA_FILE in generator.build_all()
    assert generator.check() == []


def test_route_results_are_the_results_of_work_completed() -> None:
    assert typing.get_args(Result) == typing.get_args(
        typing.get_type_hints(WorkCompleted)["result"])


def test_routes_follow_domain_route_numbers_and_station_types() -> None:
    def shape(route: Route) -> list[tuple[int, str]]:
        return [(s.step, s.station_type) for s in route.steps]

    pcba, a, b = load_route("A-PCBA"), load_route("A"), load_route("B")
    assert (pcba.kind, a.kind, b.kind) == ("assembly", "server", "server")
    assert shape(pcba) == [(20, "smt"), (30, "aoi"), (40, "ict")]
    server = [(50, "kitting"), (60, "gpu-install"), (70, "integration"), (80, "firmware"),
              (90, "burnin"), (100, "final-qa"), (110, "pack"), (120, "shipping")]
    assert shape(a) == shape(b) == server
    for route in (pcba, a, b):
        assert [s.station_type for s in route.repair_steps] == ["repair"]
    # B installs PCIe cards instead of a baseboard with SXM GPUs, and buys its mainboard.
    assert a.step(60).operation == "baseboard-gpu-install"
    assert b.step(60).operation == "pcie-card-install"
    assert [p.category for p in b.parts_expected(60)] == ["gpu"]
    assert b.sub_assemblies(70) == () and "mainboard" in b.expected_inventory()


# --- the Route API the simulator and the orchestrator use -------------------------------


def test_route_api_steps_next_step_and_lookups() -> None:
    a = load_route("A")
    assert [s.step for s in a.steps] == [50, 60, 70, 80, 90, 100, 110, 120]
    assert a.first_step.step == 50 and a.last_step.step == 120
    assert a.next_step(50) is a.step(60)
    assert a.next_step(120) is None
    with pytest.raises(ValueError, match="repair step"):
        a.next_step(900)
    with pytest.raises(KeyError):
        a.step(55)
    assert a.step(900).is_repair and a.step(90).allows("Failed")


def test_gpu_install_expects_eight_gpus_in_slots_0_to_7_on_the_baseboard() -> None:
    (baseboard, gpus) = load_route("A").parts_expected(60)
    assert (baseboard.category, baseboard.count) == ("baseboard", 1)
    assert (gpus.category, gpus.count, gpus.slots, gpus.parent) == (
        "gpu", 8, tuple(range(8)), "baseboard")
    assert load_route("A").expected_inventory()["gpu"] == 8


def test_unit_that_skipped_firmware_flash_is_missing_step_80_at_burn_in() -> None:
    a = load_route("A")
    assert a.required_before(90) == {50, 60, 70, 80}
    assert a.missing_before(90, completed={50, 60, 70}) == [80]
    assert a.missing_before(90, completed={50, 60, 70, 80}) == []


def test_failed_burn_in_goes_to_repair_and_back_to_firmware_flash() -> None:
    a = load_route("A")
    repair, target = a.repair_for(90), a.rework_target(90)
    assert repair is not None and repair.station_type == "repair"
    assert target is not None and target.step == 80
    rework = a.rework_of(90)
    assert rework is not None and rework.max_loops >= 1
    assert a.rework_of(50) is None and a.rework_target(110) is None


def test_quality_gates_and_cycle_limits() -> None:
    assert [s.step for s in load_route("A-PCBA").quality_gates] == [30, 40]
    assert [s.step for s in load_route("A").quality_gates] == [90, 100]
    assert all(s.max_cycle_s > 0 for r in all_routes().values() for s in r.steps)


def test_system_integration_consumes_the_pcba_unit_of_route_a_pcba() -> None:
    (mainboard,) = load_route("A").sub_assemblies(70)
    assert (mainboard.route, mainboard.category, mainboard.count) == ("A-PCBA", "mainboard", 1)
    assert load_route(mainboard.route).kind == "assembly"
    assert route_for_unit("A", "assembly").product == "A-PCBA"
    assert route_for_unit("A", "server").product == "A"


@pytest.mark.parametrize("product", ["C", "../products/A", "", "A.json"])
def test_unknown_product_has_no_route(product: str) -> None:
    with pytest.raises(RouteError) as e:
        load_route(product)
    assert e.value.code == "route.unknown_product" and "known: A, A-PCBA, B" in str(e.value)


# --- broken copies are reported at the offending line -----------------------------------

Edit = Callable[[str], str]


def swap(old: str, new: str, count: int = 1) -> Edit:
    def edit(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, count)
    return edit


#: name -> (edit of A.json, (needle in the edited text, offset into it), message fragment)
BROKEN: dict[str, tuple[Edit, tuple[str, int], str]] = {
    "wrong type": (swap('"max_cycle_s": 7200', '"max_cycle_s": "7200"'), ('"7200"', 0),
                   "steps[2].max_cycle_s: Expected `int`, got `str`"),
    "float for an integer": (swap('"max_cycle_s": 7200', '"max_cycle_s": 7200.0'),
                             ("7200.0", 0), "Expected `int`, got `float`"),
    "unknown station type": (swap('"station_type": "firmware"', '"station_type": "flasher"'),
                             ('"flasher"', 0), "steps[3].station_type: Invalid enum value "
                             "'flasher'; expected one of: receiving, smt, aoi"),
    "unknown field": (swap('"quality_gate": true,', '"quality_gate": true, "gate": 1,'),
                      ('"gate"', 0), "steps[4].gate: unknown field `gate`"),
    "missing field": (swap('      "operation": "ship",\n', ""), ('{\n      "step": 120', 0),
                      "steps[7]: missing required field `operation`"),
    "required step that comes later": (swap('"requires": [60]', '"requires": [90]'),
                                       ('"requires": [90]', 13), "steps[2].requires[0]: step 70 "
                                       "requires step 90, which comes later"),
    "required step not in the route": (swap('"requires": [60]', '"requires": [65]'),
                                       ('"requires": [65]', 13), "requires step 65, which is "
                                       "not in this route"),
    "rework to a missing step": (swap('"return_to": 100', '"return_to": 105'), ("105", 0),
                                 "steps[5].rework.return_to: rework returns to step 105, "
                                 "which is not in this route"),
    "rework to a missing repair step": (swap('"repair_step": 900, "return_to": 70',
                                             '"repair_step": 950, "return_to": 70'), ("950", 0),
                                        "rework goes to repair step 950, which is not in"),
    "rework to a later step": (swap('"return_to": 80', '"return_to": 100'),
                               ('"return_to": 100', 13), "comes after step 80"),
    "repair step that is not a repair": (swap('"repair_step": 900, "return_to": 60',
                                              '"repair_step": 50, "return_to": 60'),
                                         ('"repair_step": 50', 15),
                                         "not a repair step (station type `kitting`)"),
    "duplicate step": (swap('"step": 110', '"step": 100'), ('"step": 100', 8), "is defined twice"),
    "step numbers out of order": (swap('"step": 110', '"step": 95'), ('"step": 95', 8),
                                  "steps[6].step: step 95 comes after step 100: step numbers "
                                  "must increase"),
    "quality gate that cannot fail": (swap('"results": ["Completed", "Failed", "Aborted"],\n'
                                           '      "quality_gate": true',
                                           '"results": ["Completed", "Aborted"],\n'
                                           '      "quality_gate": true'),
                                      ('"quality_gate": true', 16), "quality gate"),
    "repair step under steps": (swap('"station_type": "shipping"', '"station_type": "repair"'),
                                ('"repair"', 0), "repair steps go under `repair_steps`"),
    "duplicate key": (swap('"kind": "server",', '"kind": "server", "kind": "assembly",'),
                      ('"kind"', 0), "duplicate key `kind` (first at line 4, column 3)"),
    "NaN": (swap('"max_cycle_s": 1800', '"max_cycle_s": NaN'), ("NaN", 0), "not JSON numbers"),
    "slots that do not match the count": (swap('"slots": [0, 1]', '"slots": [0]'),
                                          ('"slots": [0]', 9), "1 slots for 2 `cpu` parts"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_broken_copy_is_reported_at_the_offending_line(name: str) -> None:
    edit, (needle, offset), fragment = BROKEN[name]
    text = edit(A_TEXT)
    nth = 1 if name in ("duplicate step", "duplicate key") else 0
    line, col = position_of(text, needle, offset, nth)
    found = problems_of(text)  # sorted by position; later ones may follow from the first
    assert found and found[0][:2] == (line, col), found
    assert fragment in found[0][2]
    if name not in CASCADING:
        assert len(found) == 1, found


#: Edits that also break what refers to the edited step (the old number is gone).
CASCADING = {"duplicate step", "step numbers out of order", "quality gate that cannot fail"}


def test_duplicate_step_names_where_it_was_first_defined() -> None:
    text = swap('"step": 110', '"step": 100')(A_TEXT)
    first = position_of(text, '"step": 100')[0]
    assert problems_of(text)[0][2] == f"steps[6].step: step 100 is defined twice (see line {first})"


def test_invalid_json_reports_the_decoders_line_and_column() -> None:
    text = swap('"kind": "server",', '"kind": "server"')(A_TEXT)
    with pytest.raises(json.JSONDecodeError) as e:
        json.loads(text)
    assert problems_of(text) == [(e.value.lineno, e.value.colno,
                                  "invalid JSON: Expecting ',' delimiter")]


def test_text_that_is_not_utf8_is_reported_at_the_bad_byte() -> None:
    data = A_TEXT.encode().replace(b"Kitting", b"K\xe9tting")
    (problem,) = check_route_bytes(data, "A.json").problems
    line, col = position_of(A_TEXT, "Kitting", 1)
    assert (problem.line, problem.col) == (line, col) and "not UTF-8" in problem.message


SCHEMA_LEVEL = ["wrong type", "unknown station type", "unknown field", "missing field"]
RULE_LEVEL = ["required step that comes later", "rework to a missing step", "duplicate step",
              "repair step that is not a repair", "quality gate that cannot fail"]


@pytest.mark.parametrize("name", SCHEMA_LEVEL)
def test_json_schema_rejects_what_the_model_rejects(name: str) -> None:
    doc = json.loads(BROKEN[name][0](A_TEXT))
    assert list(VALIDATOR.iter_errors(doc)), name
    with pytest.raises(msgspec.ValidationError):
        decode_route(json.dumps(doc))


@pytest.mark.parametrize("name", RULE_LEVEL)
def test_rules_beyond_the_json_schema(name: str) -> None:
    """What a JSON Schema cannot say: the schema accepts these, `routes check` does not."""
    doc = json.loads(BROKEN[name][0](A_TEXT))
    assert list(VALIDATOR.iter_errors(doc)) == []
    assert problems_of(json.dumps(doc, indent=2))


def test_consumed_route_must_exist_and_be_an_assembly(tmp_path: Path) -> None:
    unknown = tmp_path / "A-next.json"
    unknown.write_text(swap('"route": "A-PCBA"', '"route": "X-PCBA"')(A_TEXT))
    server = tmp_path / "A-server.json"
    server.write_text(swap('"route": "A-PCBA"', '"route": "B"')(A_TEXT))
    a, b = check_route_files([unknown, server])
    line, col = position_of(unknown.read_text(), '"X-PCBA"')
    assert [(p.line, p.col) for p in a.problems] == [(line, col)]
    assert "consumes route `X-PCBA`, which does not exist" in a.problems[0].message
    assert "which is a server, not an assembly" in b.problems[0].message
    # resolved among the files checked together before the shipped routes
    pcba = tmp_path / "X-PCBA.json"
    pcba.write_text((ROUTES / "A-PCBA.json").read_text().replace('"A-PCBA"', '"X-PCBA"'))
    assert [c.ok for c in check_route_files([unknown, pcba])] == [True, True]


def test_route_file_in_a_routes_folder_is_named_after_its_product(tmp_path: Path) -> None:
    (tmp_path / "A-PCBA.json").write_text((ROUTES / "A-PCBA.json").read_text())
    (tmp_path / "C.json").write_text(A_TEXT)
    (check,) = check_route_files([tmp_path / "C.json"], named_in=[tmp_path])
    assert [(p.line, p.message) for p in check.problems] == [
        (3, f"product: a route file in {tmp_path} is named after its product: `A` in C.json")]
    (elsewhere,) = check_route_files([tmp_path / "C.json"])  # a file being drafted: any name
    assert elsewhere.ok


# --- the CLI -----------------------------------------------------------------------------


def run_handler(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser()
    routes_cmds.register(parser.add_subparsers(dest="command"), argparse.ArgumentParser(
        add_help=False))
    args = parser.parse_args(list(argv))
    code = args.fn(args, load_settings(data_dir=None))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_routes_check_handler_exit_codes(tmp_path: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    files = [str(p) for p in SHIPPED]
    code, out, _ = run_handler(capsys, "routes", "check", *files)
    assert code == 0
    assert out.splitlines() == [f"{ROUTES / 'A-PCBA.json'}: ok (4 steps)",
                                f"{ROUTES / 'A.json'}: ok (9 steps)",
                                f"{ROUTES / 'B.json'}: ok (9 steps)"]
    broken = tmp_path / "broken.json"
    broken.write_text(swap('"requires": [60]', '"requires": [90]')(A_TEXT))
    code, out, _ = run_handler(capsys, "routes", "check", files[0], str(broken))
    line, col = position_of(broken.read_text(), '"requires": [90]', 13)
    assert code == 1
    assert out.splitlines()[1].startswith(f"{broken}:{line}:{col}: steps[2].requires[0]: ")
    code, _, err = run_handler(capsys, "routes", "check", str(broken), str(tmp_path / "none.json"))
    assert code == 2 and "cannot read" in err


def test_routes_show_handler(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_handler(capsys, "routes", "show", "A", "--json")
    assert code == 0 and json.loads(out) == json.loads(A_TEXT)
    code, out, _ = run_handler(capsys, "routes", "show", "A")
    assert code == 0 and "gpu x8 [0-7] on baseboard" in out and "repair 900 -> 80" in out
    code, _, err = run_handler(capsys, "routes", "show", "Z")
    assert code == 2 and "no route for product 'Z'" in err


def test_linetrace_routes_check_exit_codes(tmp_path: Path) -> None:
    assert "routes_cmds" in cli_main.COMMAND_MODULES, "add it to COMMAND_MODULES in cli/main.py"
    def run(*files: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "linetrace.cli.main", "routes", "check",
                               *files], capture_output=True, text=True, timeout=60, cwd=tmp_path)

    ok = run(*map(str, SHIPPED))
    assert ok.returncode == 0 and ok.stdout.count(": ok (") == 3, ok.stderr
    broken = tmp_path / "A.json"
    broken.write_text(swap('"station_type": "firmware"', '"station_type": "flasher"')(A_TEXT))
    line, col = position_of(broken.read_text(), '"flasher"')
    bad = run(str(broken))
    assert bad.returncode == 1 and bad.stdout.startswith(f"{broken}:{line}:{col}: ")
    assert run(str(tmp_path / "missing.json")).returncode == 2


def test_route_files_are_package_data() -> None:
    """`pip install linetrace` must ship the route files (pyproject package-data)."""
    import tomllib

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    data = pyproject["tool"]["setuptools"]["package-data"]
    assert (data.get("linetrace.schemas.routes.products") == ["*.json"]
            or "products/*.json" in data.get("linetrace.schemas.routes", []))
    assert "json/*.json" in data["linetrace.schemas"] or data["linetrace.schemas.json"] == [
        "*.json"]  # route.v1.schema.json ships with it
    packages = pyproject["tool"]["setuptools"]["packages"]
    assert "linetrace.schemas.routes" in packages


def test_route_error_codes_are_documented() -> None:
    from linetrace.schemas.errors import SchemaError

    assert {"route.invalid", "route.unknown_product", "route.unreadable"} <= set(
        ROUTE_ERROR_CODES)
    assert RouteError("x").code == "route.invalid" and isinstance(RouteError("x"), SchemaError)


def test_msgspec_error_paths_map_to_document_positions() -> None:
    from linetrace.schemas.routes.json_positions import format_path, locate, parse_msgspec_path

    assert parse_msgspec_path("$.steps[3].station_type") == ("steps", 3, "station_type")
    assert parse_msgspec_path("$.$schema") == ("$schema",)
    assert format_path(("steps", 3, "parts", 0)) == "steps[3].parts[0]" and format_path(()) == \
        "(document)"
    pos = locate('{\n  "a": [1,\n    {"b": true}]\n}\n')
    assert pos.position(("a", 1, "b")) == (3, 11) and pos.position(("a", 1, "b"), "key") == (3, 6)
    assert pos.position(("a", 1, "missing")) == (3, 5)  # the object that lacks it
