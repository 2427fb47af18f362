"""The units, recall, SPC, holds and checkpoints pages load in a real browser over a real
line's ledger, show what the API holds, and break no rule of the CSP (no inline script or
style) and throw no script error."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from .conftest import LiveConsole, _start_console, _stop_console
from .test_unit_page import HOT, simulated_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    live = _start_console(simulated_line(tmp_path_factory))
    yield live
    _stop_console(live)


def get(page: Any, url: str) -> Any:
    r = page.request.get(url)
    assert r.status == 200, r.text()
    return json.loads(r.body()) if "json" in r.headers.get("content-type", "") else r.text()


def test_the_units_page_lists_every_unit_and_filters_as_you_type(
        line: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(line, "vic", "/units")
    units = get(page, f"{line.url}/api/v1/units")
    page.wait_for_selector("#units-table")
    assert page.locator("#units-table tbody tr").count() == len(units)
    page.fill("#unit-search", HOT)
    assert page.locator("#units-table tbody tr").count() == 1
    page.click(f"#units-table a:text('{HOT}')")
    page.wait_for_url(f"{line.url}/units/{HOT}")
    page.wait_for_selector("body[data-loaded=true]", timeout=20_000)
    page.go_back()
    page.wait_for_selector("#units-table")
    page.select_option("#unit-kind", "assembly")
    page.fill("#unit-search", "")
    assemblies = [u for u in units if u["kind"] == "assembly"]
    assert page.locator("#units-table tbody tr").count() == len(assemblies)
    watched.assert_clean()


def test_the_spc_page_lists_the_charts_and_draws_one(line: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(line, "vic", "/spc")
    charts = get(page, f"{line.url}/api/v1/spc")
    if not charts:
        page.wait_for_selector("#spc-list .banner")
        watched.assert_clean()
        return
    page.wait_for_selector("#spc-table")
    assert page.locator("#spc-table tbody tr").count() == len(charts)
    c = charts[-1]
    page.click(f"#spc-table a[data-chart='{c['station_type']}/{c['measurement']}']")
    page.wait_for_selector(f"#spc-chart h2:text('{c['station_type']} / {c['measurement']}')")
    doc = get(page, f"{line.url}/api/v1/spc/{c['station_type']}/{c['measurement']}")
    dots = page.locator("#spc-chart svg[data-metric=spc] .lt-dots circle").count()
    assert dots == len(doc["points"])
    limits = [x for x in (doc["centre"], doc["ucl"], doc["lcl"]) if x is not None]
    assert page.locator("#spc-chart svg .lt-hline").count() == len(limits)
    marked = [p for p in doc["points"] if p["violations"] or p["alarm"]]
    assert page.locator("#spc-chart svg .lt-mark.violation").count() == len(marked)
    watched.assert_clean()


def test_the_checkpoints_page_shows_the_signed_note_and_the_verifier_key(
        line: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(line, "vic", "/checkpoints")
    note = get(page, f"{line.url}/api/v1/checkpoint")
    key = get(page, f"{line.url}/api/v1/verifier-key").strip()
    page.wait_for_selector("#checkpoint-note")
    assert page.inner_text("#checkpoint-note").strip() == note.strip()
    page.wait_for_selector("#verifier-key-text")
    assert page.inner_text("#verifier-key-text").strip() == key
    assert "/api/v1/proofs/consistency?from=M&to=N" in page.inner_text("#howto-curl")
    listed = get(page, f"{line.url}/api/v1/checkpoints")
    assert page.locator("#checkpoints-table tbody tr").count() == min(len(listed), 200)
    if len(listed) > 1:
        page.click("#proof-form button")
        page.wait_for_selector("#proof-hashes")
    watched.assert_clean()


def test_the_chart_module_marks_rule_violations_and_draws_the_limits(
        line: LiveConsole, open_page: Any) -> None:
    """chart.js itself, in the browser (the simulated line is too short for an SPC chart to
    leave its baseline): the points, a centre line and two limits, and a red mark on each
    point given as a violation, at that point."""
    page, watched = open_page(line, "vic", "/spc")
    page.wait_for_selector("#spc-list")
    drawn = page.evaluate("""async () => {
      const { lineChart } = await import("/assets/chart.js");
      const pts = [1, 2, 3, 4, 5, 6, 7, 8].map((i) => [i, i === 6 ? 14 : 10 + (i % 2)]);
      const svg = lineChart({ title: "t", metric: "test", dots: true,
        series: [{ label: "m", points: pts, cls: "spc" }],
        hlines: [{ y: 10.5, label: "CL", cls: "centre" }, { y: 13, label: "UCL", cls: "limit" },
                 { y: 8, label: "LCL", cls: "limit" }],
        marks: [{ x: 6, y: 14, cls: "violation", label: "we1" }] });
      document.getElementById("main").append(svg);
      const dots = [...svg.querySelectorAll(".lt-dots circle")];
      const mark = svg.querySelector(".lt-mark.violation");
      const six = dots[5];
      return { dots: dots.length, hlines: svg.querySelectorAll(".lt-hline").length,
               marks: svg.querySelectorAll(".lt-mark").length,
               at: [mark.getAttribute("cx"), mark.getAttribute("cy")],
               six: [six.getAttribute("cx"), six.getAttribute("cy")],
               fill: getComputedStyle(mark).fill, dotFill: getComputedStyle(six).fill,
               ucl: svg.querySelector(".lt-hline.limit").getAttribute("y1"),
               top: Math.min(...dots.map((d) => Number(d.getAttribute("cy")))) };
    }""")
    assert drawn["dots"] == 8 and drawn["hlines"] == 3 and drawn["marks"] == 1
    assert drawn["at"] == drawn["six"]  # the mark sits on the sixth point
    assert drawn["fill"] != drawn["dotFill"]  # and is coloured apart from the others
    assert float(drawn["top"]) < float(drawn["ucl"])  # the point above the UCL is drawn above it
    watched.assert_clean()


@pytest.mark.parametrize("path", ["/recall", "/holds", f"/units/{HOT}",
                                  "/units/PCBA-S7301-000001"])
def test_the_other_pages_load_without_csp_violations(
        line: LiveConsole, open_page: Any, path: str) -> None:
    page, watched = open_page(line, "sam", path)
    page.wait_for_selector("#nav-user")
    page.wait_for_load_state("networkidle")
    assert page.locator("[data-error]").count() == 0
    watched.assert_clean()
