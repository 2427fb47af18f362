"""The query commands through the CLI, over a ledger written by the real batch writer:
their --json keeps its contract shape, text output shows what the README promises with
control characters escaped, and a query never creates or migrates a ledger."""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
from pathlib import Path

import pytest

from ..conftest import run_cli
from . import json_shapes as shape
from .cli_ledger import (
    BAD_LOT, GPU_LOT, GPU_MPN, PCBA, REMOVED_GPU, REPLACEMENT_GPU, SERVER, STATION, UNUSED_PART,
    build_ledger,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def fixed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fixed") / "data"
    build_ledger(d).close()
    return d


def ok(*args: str, data_dir: Path) -> str:
    r = run_cli(*args, data_dir=data_dir)
    assert r.returncode == 0, (args, r.stdout, r.stderr)
    return r.stdout


def as_json(*args: str, data_dir: Path) -> object:
    return json.loads(ok(*args, "--json", data_dir=data_dir))


# --- the --json contract ---------------------------------------------------------------------

QUERIES = [
    (("units",), [shape.UNIT]),
    (("trace", SERVER), shape.TRACE),
    (("trace", PCBA), shape.TRACE),
    (("recall", "--lot", GPU_LOT), [shape.RECALL]),
    (("recall", "--part", REMOVED_GPU), [shape.RECALL]),
    (("recall", "--mpn", GPU_MPN), [shape.RECALL]),
    (("lots", "show", GPU_LOT), shape.LOT),
    (("stations", "show", STATION), shape.STATION),
    (("rejected",), [shape.REJECTED]),
]


@pytest.mark.parametrize("args,pinned", QUERIES, ids=[" ".join(a) for a, _ in QUERIES])
def test_json_of_each_query_keeps_its_pinned_fields_types_and_order(
        fixed: Path, args: tuple[str, ...], pinned: object) -> None:
    report = shape.check(as_json(*args, data_dir=fixed), pinned)
    assert report.problems == []
    # Every pinned list is exercised by this ledger, except what it does not have.
    # Holds and route violations: test_hold_shapes.py, over a ledger that has them.
    unheld = {"$.holds", "$.violations"}
    allowed_empty = {("trace", PCBA): {"$.removed", "$.tests", "$.firmware", "$.operations"}
                     | unheld, ("trace", SERVER): unheld}
    assert report.never_exercised <= allowed_empty.get(args, set())


def test_wip_json_keeps_its_shape_over_units_still_on_the_line(fixed: Path, tmp_path: Path) -> None:
    d = copy_ledger(fixed, tmp_path)
    with sqlite3.connect(d / "ledger.db") as db:
        db.execute("UPDATE units SET state = 'on_hold' WHERE serial = ?", (SERVER,))
    rows = as_json("wip", data_dir=d)
    assert rows == [{"kind": "server", "step": 120, "state": "on_hold", "units": 1}]
    assert shape.check(rows, [shape.WIP]).problems == []


def test_the_shape_check_itself_catches_a_renamed_a_retyped_and_a_reordered_field() -> None:
    good = {"serial": "S", "product": "P", "kind": "server", "state": "shipped", "step": 1,
            "updated": "T"}
    assert shape.check(good, shape.UNIT).problems == []
    renamed = {("unit" if k == "serial" else k): v for k, v in good.items()}
    retyped = {**good, "step": "1"}
    reordered = {"product": "P", **good}
    added = {**good, "route_revision": "r1"}
    assert shape.check(renamed, shape.UNIT).problems
    assert shape.check(retyped, shape.UNIT).problems
    assert shape.check(reordered, shape.UNIT).problems
    assert shape.check(added, shape.UNIT).problems == []


# --- item 12: shipped servers show their last step ------------------------------------------

def test_a_shipped_server_shows_step_120_of_its_last_operation_in_units(fixed: Path) -> None:
    units = {u["serial"]: u for u in as_json("units", data_dir=fixed)}  # type: ignore[union-attr]
    assert units[SERVER]["state"] == "shipped"
    assert units[SERVER]["step"] == 120
    line = next(x for x in ok("units", data_dir=fixed).splitlines() if x.startswith(SERVER))
    assert line.split()[3:5] == ["shipped", "120"]


# --- item 13: text trace ---------------------------------------------------------------------

def test_text_trace_shows_tests_with_failure_reasons_removed_parts_firmware_and_history(
        fixed: Path) -> None:
    out = ok("trace", SERVER, data_dir=fixed)
    assert "step 120" in out.splitlines()[0]
    removed = section(out, "removed parts (1):")
    assert REMOVED_GPU in removed and "DefectiveMaterial" in removed
    tests = section(out, "tests (2):")
    assert "defect SCRATCH (cosmetic at lid)" in tests
    assert "nic_link Failed" in tests and "link_speed 100 Gb/s outside [400, 400]" in tests
    assert "gpu_count" not in tests  # a passed test is no failure reason
    firmware = section(out, "firmware (1):")
    assert "BMC" in firmware and "cd" * 32 in firmware
    history = section(out, "history (20 events):")
    assert "materials.uninstalled" in history and "no PCIe link" in history
    assert "unit.sealed" in history and "unit.shipped" in history


def test_text_trace_of_an_installed_assembly_says_where_it_is_installed(fixed: Path) -> None:
    out = ok("trace", PCBA, data_dir=fixed)
    assert f"installed in {SERVER}" in out
    assert "C1-C480" in section(out, "parts (1):")


def test_trace_of_a_gpu_says_which_server_it_is_in_and_points_to_recall(fixed: Path) -> None:
    r = run_cli("trace", REPLACEMENT_GPU, data_dir=fixed)
    assert r.returncode == 1 and r.stdout == ""
    assert f"installed in {SERVER} on BB-T-1 at slot 3" in r.stderr
    assert f"linetrace trace {SERVER}" in r.stderr
    assert f"linetrace recall --part {REPLACEMENT_GPU}" in r.stderr
    gone = run_cli("trace", REMOVED_GPU, data_dir=fixed)
    assert gone.returncode == 1 and f"removed from {SERVER}" in gone.stderr
    assert f"recall --part {REMOVED_GPU}" in gone.stderr
    spare = run_cli("trace", UNUSED_PART, data_dir=fixed)
    assert spare.returncode == 1 and f"received in lot {BAD_LOT}" in spare.stderr
    nothing = run_cli("trace", "SRV-NEVER", data_dir=fixed)
    assert nothing.returncode == 1 and "no unit 'SRV-NEVER'" in nothing.stderr


# --- item 14: recall of what was never seen ---------------------------------------------------

@pytest.mark.parametrize("flag", ["--lot", "--part", "--mpn"])
def test_recall_of_something_never_seen_says_unknown_and_exits_1(fixed: Path, flag: str) -> None:
    for extra in ((), ("--json",)):
        r = run_cli("recall", flag, "NEVER-SEEN-1", *extra, data_dir=fixed)
        assert r.returncode == 1, r.stdout
        assert "'NEVER-SEEN-1' is unknown" in r.stderr and "[recall.unknown]" in r.stderr
        assert r.stdout == ""


def test_recall_of_a_known_lot_or_part_in_no_unit_is_zero_units_and_exit_0(fixed: Path) -> None:
    assert ok("recall", "--lot", BAD_LOT, data_dir=fixed).splitlines()[-1] == "0 units"
    assert as_json("recall", "--part", UNUSED_PART, data_dir=fixed) == []
    assert as_json("recall", "--mpn", "MCX-UNLISTED", data_dir=fixed) == []
    late = as_json("recall", "--lot", GPU_LOT, "--from", "2030-01-01T00:00:00Z", data_dir=fixed)
    assert late == []


# --- item 15: lots show, stations show --------------------------------------------------------

def test_lots_show_prints_the_approved_vendor_list_result(fixed: Path) -> None:
    assert "approved vendor list: Passed" in ok("lots", "show", GPU_LOT, data_dir=fixed)
    out = ok("lots", "show", BAD_LOT, data_dir=fixed)
    assert "approved vendor list: Failed: MPN MCX-UNLISTED is not on the approved vendor list" in out
    lot = as_json("lots", "show", BAD_LOT, data_dir=fixed)
    assert lot["avl"]["result"] == "Failed" and len(lot["avl"]["avl_sha256"]) == 64  # type: ignore[index]


def test_stations_show_prints_readable_states_and_whole_event_lines(fixed: Path) -> None:
    out = ok("stations", "show", STATION, data_dir=fixed)
    assert out.splitlines()[0].endswith("state SDT (scheduled downtime)")
    assert "station.state  SDT (scheduled downtime): PDU trip" in out
    assert "open fault F-9 Alarm PDU-OC: PDU trip" in out
    assert "x" * 150 in out  # a long description is printed whole, never cut
    st = as_json("stations", "show", STATION, data_dir=fixed)
    assert st["state"] == 4000 and st["state_name"] == "SDT (scheduled downtime)"  # type: ignore[index]


# --- item 16: rejected ------------------------------------------------------------------------

def test_rejected_lists_refused_records_with_their_exact_bytes_and_filters(fixed: Path) -> None:
    [row] = as_json("rejected", data_dir=fixed)  # type: ignore[misc]
    assert list(row) == list(shape.REJECTED)
    assert (row["code"], row["destination"], row["stage"]) == (
        "event.malformed", "line.events.dlq", "decode")
    assert (row["topic"], row["partition"], row["offset"]) == ("line.events", 1, 77)
    assert base64.b64decode(row["key_b64"]) == b"SRV-T-000009"
    assert base64.b64decode(row["value_b64"]) == b"{not json"
    assert len(as_json("rejected", "--code", "event.malformed", data_dir=fixed)) == 1  # type: ignore[arg-type]
    assert as_json("rejected", "--code", "key.revoked", data_dir=fixed) == []
    assert len(as_json("rejected", "--since", "2000-01-01T00:00:00Z", data_dir=fixed)) == 1  # type: ignore[arg-type]
    assert as_json("rejected", "--since", "2999-01-01T00:00:00+02:00", data_dir=fixed) == []
    text = ok("rejected", data_dir=fixed)
    assert "event.malformed" in text and "not a JSON object" in text
    assert text.splitlines()[-1] == "1 rejected records"
    bad = run_cli("rejected", "--since", "yesterday", data_dir=fixed)
    assert bad.returncode == 2 and "RFC 3339" in bad.stderr


# --- issue 8 item 4: control characters from the ledger ------------------------------------

ESC_SERIAL = "SRV-\x1b[2J\x1b]0;owned\x07-1"


def copy_ledger(src: Path, tmp_path: Path) -> Path:
    d = tmp_path / "copy"
    d.mkdir()
    shutil.copy(src / "ledger.db", d / "ledger.db")
    return d


def test_text_output_escapes_escape_sequences_stored_in_the_ledger(fixed: Path,
                                                                   tmp_path: Path) -> None:
    d = copy_ledger(fixed, tmp_path)
    with sqlite3.connect(d / "ledger.db") as db:  # as a ledger written before ingest refused it
        db.execute("INSERT INTO units (serial, product, kind, state, step, created, updated) "
                   "SELECT ?, 'HGX\r\x1b[31m', kind, state, step, created, updated FROM units "
                   "WHERE serial = ?", (ESC_SERIAL, SERVER))
        db.execute("UPDATE operations SET operation = 'ship\x1b[2K\r' WHERE step = 120")
        db.execute("UPDATE installs SET lot = 'LOT\x9b31m' WHERE serial = ?", (REPLACEMENT_GPU,))
    outputs = [ok("units", data_dir=d), ok("trace", SERVER, data_dir=d),
               ok("trace", ESC_SERIAL, data_dir=d), ok("recall", "--part", REPLACEMENT_GPU,
                                                       data_dir=d)]
    for out in outputs:
        assert not any(c in out for c in "\x1b\r\x07\x9b"), out
    assert "SRV-\\x1b[2J\\x1b]0;owned\\x07-1" in outputs[0]
    assert "HGX\\x0d\\x1b[31m" in outputs[0]
    assert "ship\\x1b[2K\\x0d" in outputs[1]
    assert "LOT\\x9b31m" in outputs[3]
    # --json stays exact: JSON escapes control characters itself
    units = as_json("units", data_dir=d)
    assert ESC_SERIAL in [u["serial"] for u in units]  # type: ignore[union-attr]


# --- read-only opens ---------------------------------------------------------------------

READ_COMMANDS = [("units",), ("trace", SERVER), ("recall", "--lot", GPU_LOT), ("wip",),
                 ("lots", "show", GPU_LOT), ("stations", "show", STATION), ("stations", "list"),
                 ("rejected",), ("hbom", SERVER)]


@pytest.mark.parametrize("args", READ_COMMANDS, ids=" ".join)
def test_a_query_without_a_ledger_says_what_to_run_exits_2_and_creates_nothing(
        tmp_path: Path, args: tuple[str, ...]) -> None:
    d = tmp_path / "nowhere"
    r = run_cli(*args, data_dir=d)
    assert r.returncode == 2, r.stderr
    assert "no ledger database at" in r.stderr and "linetrace up" in r.stderr
    assert "[db.missing]" in r.stderr and "Traceback" not in r.stderr
    assert not d.exists()


@pytest.mark.parametrize("args", READ_COMMANDS[:3], ids=" ".join)
def test_a_query_on_an_empty_database_creates_no_schema(tmp_path: Path,
                                                          args: tuple[str, ...]) -> None:
    d = tmp_path / "data"
    d.mkdir()
    (d / "ledger.db").touch()
    r = run_cli(*args, data_dir=d)
    assert r.returncode == 2 and "the ledger database is empty" in r.stderr
    assert (d / "ledger.db").stat().st_size == 0
    assert sorted(os.listdir(d)) == ["ledger.db"]


def test_a_query_on_an_empty_postgresql_database_creates_no_table(pg_url: str,
                                                                    tmp_path: Path) -> None:
    from sqlalchemy import create_engine, inspect

    r = run_cli("units", data_dir=tmp_path, env={"LINETRACE_DB": pg_url})
    assert r.returncode == 2 and "the ledger database is empty" in r.stderr
    engine = create_engine(pg_url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        assert inspect(engine).get_table_names() == []
    finally:
        engine.dispose()


def test_a_query_on_an_out_of_date_ledger_asks_for_db_upgrade_and_leaves_it(
        fixed: Path, tmp_path: Path) -> None:
    d = copy_ledger(fixed, tmp_path)
    with sqlite3.connect(d / "ledger.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'a0c970f6a6d7'")
    r = run_cli("units", data_dir=d)
    assert r.returncode == 2 and "run `linetrace db upgrade`" in r.stderr
    with sqlite3.connect(d / "ledger.db") as db:
        assert db.execute("SELECT version_num FROM alembic_version").fetchall() == [
            ("a0c970f6a6d7",)]


def section(text: str, title: str) -> str:
    """The block of `text` that starts with the line `title`, up to the next blank line."""
    lines = text.splitlines()
    start = lines.index(title)
    end = next((i for i in range(start, len(lines)) if not lines[i].strip()), len(lines))
    return "\n".join(lines[start:end])
