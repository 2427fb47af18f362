"""linetrace's burn-in verdict end to end: `linetrace burnin` (a real StationClient) into the
embedded broker, a real worker deciding `burnin.verdict`, `burnin show --json` reading it back.

The GPU each fault strikes is drawn by the simulated baseboard's seed; the test learns it from
the station's own results (its failed `gpuN.*` measurements, XIDs, absent GPUs), an
implementation of its own, and checks the verdict names that GPU, and only that one.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from ..conftest import Proc, run_cli, wait_for

GPU = re.compile(r"^gpu(\d+)\.")


def _station_gpus(summary: dict[str, Any]) -> set[int]:
    """GPUs the station's own results blame: out-of-limits gpuN.* measurements, XIDs, absent."""
    out = {x["gpu_index"] for x in summary["xids"]} | set(summary["absent_gpus"])
    for t in summary["tests"]:
        if t["result"] not in ("Failed", "Error"):
            continue
        for m in t.get("measurements", []):
            match = GPU.match(m["name"])
            lo, hi = m.get("min"), m.get("max")
            if match and ((lo is not None and m["value"] < lo) or (hi is not None
                                                                   and m["value"] > hi)):
                out.add(int(match.group(1)))
    return out


def _verdicts(unit: str, data_dir: Path) -> list[dict[str, Any]]:
    shown = run_cli("burnin", "show", unit, "--json", data_dir=data_dir)
    if shown.returncode != 0:
        return []
    docs: list[dict[str, Any]] = json.loads(shown.stdout)
    return docs


CASES = [("none", None, 120), ("hot-gpu", "clocks.throttle", 220), ("ecc-dbe", "ecc.dbe", 120),
         ("fatal-xid", "xid.fatal", 120), ("gpu-off-bus", "gpu.missing", 120)]


@pytest.mark.integration
@pytest.mark.slow
def test_burnin_verdicts_for_each_fault_and_a_clean_run(broker: str, worker: Proc,
                                                        line_dir: Path) -> None:
    missing = run_cli("burnin", "show", "SRV-NEVER", data_dir=line_dir)
    assert missing.returncode == 1 and "no burn-in verdict" in missing.stderr
    for n, (fault, code, seconds) in enumerate(CASES):
        unit = f"SRV-BV-{n:04d}"
        # today's form (`burnin --unit`) and the new one (`burnin run --unit`) both run
        form = ["burnin"] if n % 2 else ["burnin", "run"]
        done = run_cli(*form, "--unit", unit, "--seed", str(40 + n), "--faults", fault,
                       "--duration", str(seconds), "--json", data_dir=line_dir, timeout=300)
        assert done.returncode in (0, 1), done.stderr
        summary = json.loads(done.stdout)
        docs = wait_for(lambda u=unit: _verdicts(u, line_dir), timeout=120,
                        what=f"the verdict of {unit}")
        assert len(docs) == 1, docs
        v = docs[0]
        assert v["unit"] == unit and v["run_id"] == summary["run_id"]
        assert v["telemetry_events"] == summary["telemetry_events"]
        assert re.fullmatch(r"[0-9a-f]{64}", v["telemetry_sha256"])
        assert [g["gpu_index"] for g in v["gpus"]] == list(range(8))
        assert all(g["gpu_serial"] for g in v["gpus"])
        if fault == "none":
            assert v["result"] == "Passed", v["reasons"]
            assert summary["result"] == "Passed" and v["reasons"] == []
            continue
        blamed = _station_gpus(summary)
        assert len(blamed) == 1, summary
        (gpu,) = blamed
        assert v["result"] == "Failed"
        assert code in {r["code"] for r in v["reasons"] if r["gpu_index"] == gpu}, v["reasons"]
        assert {r["gpu_index"] for r in v["reasons"]} == {gpu}, v["reasons"]
        assert [g["gpu_index"] for g in v["gpus"] if g["result"] == "Failed"] == [gpu]
        text = run_cli("burnin", "show", unit, data_dir=line_dir)
        assert code is not None and text.returncode == 0
        assert "Failed" in text.stdout and code in text.stdout
    assert "Traceback" not in worker.tail()


@pytest.mark.integration
def test_a_malformed_limits_file_starts_no_worker(tmp_path: Path) -> None:
    bad = tmp_path / "limits.json"
    bad.write_text('{"version": "1", "skus": {}}')
    done = run_cli("worker", data_dir=tmp_path / "data", env={
        "LINETRACE_BURNIN_LIMITS": str(bad), "LINETRACE_BROKER": "kafka://127.0.0.1:1"})
    assert done.returncode == 2, done.stderr
    assert "LINETRACE_BURNIN_LIMITS" in done.stderr and "docs/burnin.md" in done.stderr
