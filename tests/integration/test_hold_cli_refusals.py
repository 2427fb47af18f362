"""What `linetrace` says when a person asks for what cannot be done: each refusal names what
is wrong and what to do, with its exit code (found by walking the CLI as a plant would)."""

from __future__ import annotations

import pytest

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.schemas import signing
from tests.conftest import run_cli
from tests.integration.test_holds import CAP_LOT, PEOPLE, build_line, enrol_people, person

pytestmark = pytest.mark.integration


def test_a_disposition_refusal_says_why(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """An unknown serial is said to be unknown (not 'held for no disposition'); a unit on a
    hold that is not for a disposition is told which hold and how it ends."""
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    ledger.close()
    key = tmp_path / "q1.key"
    key.write_bytes(signing.private_key_pem(person("q1")))
    assert PEOPLE["q1"] == "quality"

    def cli(*args: str):  # type: ignore[no-untyped-def]
        return run_cli(*args, data_dir=data, env={"LINETRACE_USER_KEY": str(key)})

    r = cli("disposition", "SRV-NOPE-9", "--decision", "scrap", "--reason", "x")
    assert r.returncode == 1 and "[hold.target_unknown]" in r.stderr, r.stderr
    assert "no unit 'SRV-NOPE-9'" in r.stderr and "Traceback" not in r.stderr
    r = cli("disposition", "SRV-H-1", "--decision", "scrap", "--reason", "x")
    assert r.returncode == 1 and "[hold.no_disposition]" in r.stderr, r.stderr
    assert "on no hold" in r.stderr
    r = cli("hold", "place", "--lot", CAP_LOT, "--reason", "ESR drift", "--json")
    assert r.returncode == 0, r.stderr
    r = cli("disposition", "SRV-H-1", "--decision", "scrap", "--reason", "x")
    assert r.returncode == 1 and "[hold.no_disposition]" in r.stderr, r.stderr
    assert "not held for a disposition" in r.stderr and "linetrace hold release" in r.stderr


def test_a_hold_on_an_unknown_target_says_where_to_look(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Each scope's refusal points at the command that lists that kind of name (`lots show`
    needs a lot, so it is not offered bare)."""
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    ledger.close()
    key = tmp_path / "q1.key"
    key.write_bytes(signing.private_key_pem(person("q1")))
    hints = {"--unit": "`linetrace units` lists the units",
             "--lot": "`linetrace lots show LOT` shows one lot",
             "--mpn": "`linetrace trace SERIAL` lists a unit's parts with their MPNs",
             "--work-order": "`linetrace trace SERIAL` names a unit's work order",
             "--station": "`linetrace stations list` lists the stations"}
    for flag, hint in hints.items():
        r = run_cli("hold", "place", flag, "NOPE-1", "--reason", "x", data_dir=data,
                    env={"LINETRACE_USER_KEY": str(key)})
        assert r.returncode == 1 and "[hold.target_unknown]" in r.stderr, r.stderr
        assert hint in r.stderr and "`linetrace lots show`" not in r.stderr, r.stderr


def test_enrolling_a_private_key_file_says_to_give_the_public_one(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`users add --public-key` given the private key (or anything not a public key) says
    which file to give, exit 2."""
    private = tmp_path / "q1.key"
    private.write_bytes(signing.private_key_pem(person("q1")))
    r = run_cli("users", "add", "q1", "--role", "quality", "--public-key", str(private),
                data_dir=tmp_path / "data", env={"LINETRACE_USER_KEY": str(private)})
    assert r.returncode == 2 and "[config.invalid]" in r.stderr, r.stderr
    assert "FILE.pub that `linetrace users keygen --out FILE` wrote" in r.stderr, r.stderr


def test_recall_shows_a_held_unit_on_hold_as_units_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """After a lot hold, `recall --lot` gives each unit it stops the state `units` gives it
    (`on_hold`), and shipped units stay shipped."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    ledger.close()
    key = tmp_path / "q1.key"
    key.write_bytes(signing.private_key_pem(person("q1")))
    env = {"LINETRACE_USER_KEY": str(key)}
    r = run_cli("hold", "place", "--lot", CAP_LOT, "--reason", "ESR drift", data_dir=data,
                env=env)
    assert r.returncode == 0, r.stderr
    r = run_cli("units", "--json", data_dir=data, env=env)
    states = {u["serial"]: u["state"] for u in json.loads(r.stdout)}
    r = run_cli("recall", "--lot", CAP_LOT, "--json", data_dir=data, env=env)
    assert r.returncode == 0, r.stderr
    hits = json.loads(r.stdout)
    hits = hits["units"] if isinstance(hits, dict) else hits
    assert {h["serial"]: h["state"] for h in hits} == {
        s: states[s] for s in {h["serial"] for h in hits}}
    assert {h["serial"] for h in hits if h["state"] == "on_hold"} == {"SRV-H-1", "PCBA-H-3"}
    assert any(h["state"] == "shipped" for h in hits)


def test_a_hold_on_an_installed_board_holds_its_server(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`hold place --unit PCBA` of a board already in a server stops the server (it would
    otherwise go on and ship with the held board); a board in a shipped server lists it."""
    import json

    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    ledger.close()
    key = tmp_path / "q1.key"
    key.write_bytes(signing.private_key_pem(person("q1")))
    env = {"LINETRACE_USER_KEY": str(key)}
    r = run_cli("hold", "place", "--unit", "PCBA-H-1", "--reason", "board suspect", "--json",
                data_dir=data, env=env)
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)
    assert "SRV-H-1" in placed["affected_units"] and placed["shipped"] == []
    r = run_cli("units", "--state", "on_hold", "--json", data_dir=data, env=env)
    assert [u["serial"] for u in json.loads(r.stdout)] == ["SRV-H-1"]
    r = run_cli("hold", "place", "--unit", "PCBA-H-2", "--reason", "board suspect", "--json",
                data_dir=data, env=env)
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)
    assert placed["affected_units"] == [] and placed["shipped"] == ["SRV-H-2"]


def test_keygen_names_its_file_as_its_help_does(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`users keygen` says it writes FILE and FILE.pub: its option reads `--out FILE`, and a
    run without it says so."""
    r = run_cli("users", "keygen", data_dir=tmp_path)
    assert r.returncode == 2 and "--out FILE" in r.stderr, r.stderr
