"""`linetrace up` says why a child failed, in its own words, not only where its log is."""

from __future__ import annotations

import json

import pytest

from tests.conftest import run_cli

pytestmark = pytest.mark.integration


def test_up_prints_the_simulators_own_error(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """A seed already simulated into the data dir: `up` exits 1 and prints the simulator's
    refusal (what is wrong and what to do) beside the log's path."""
    data = tmp_path / "data"
    (data / "sim").mkdir(parents=True)
    (data / "sim" / "seeds.json").write_text(json.dumps([5]))
    r = run_cli("up", "--units", "1", "--seed", "5", "--until-idle", data_dir=data,
                timeout=180)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "seed 5 was already simulated" in r.stderr and "Use another --seed" in r.stderr
    assert "simulate.log" in r.stderr and "Traceback" not in r.stderr
