"""`linetrace line` on a data dir without a ledger: a configuration error (exit 2) that says
what to run, never a new database; on a fresh ledger: the empty document."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger

from ..conftest import run_cli

pytestmark = pytest.mark.integration


def test_line_without_a_ledger_is_exit_2_and_creates_nothing(tmp_path: Path) -> None:
    r = run_cli("line", "--json", data_dir=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert r.stdout == "" and "linetrace:" in r.stderr
    assert not (tmp_path / "ledger.db").exists()


def test_line_on_a_fresh_ledger(tmp_path: Path) -> None:
    Ledger(f"sqlite:///{tmp_path / 'ledger.db'}").close()
    r = run_cli("line", "--json", data_dir=tmp_path)
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["stations"] == [] and doc["wip_total"] == 0 and doc["holds"]["count"] == 0
    text = run_cli("line", data_dir=tmp_path)
    assert text.returncode == 0, text.stderr
    assert "work in progress: 0 units" in text.stdout and "holds in force: 0" in text.stdout
