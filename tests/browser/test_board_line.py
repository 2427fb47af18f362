"""The line view in a real browser over a simulated line: each station in its andon colour
(a station reported down is red, one in maintenance blue, an idle one amber), WIP per step,
throughput, first-pass yield and the holds in force, refreshed without a reload. With
LINETRACE_SCREENSHOTS=DIR the view and the board over it are saved as DIR/line.png and
DIR/board.png."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from playwright.sync_api import expect

from linetrace.ledger.alerts.conditions import alert_id
from linetrace.schemas.envelope import format_time, parse_time

from .conftest import LiveLine, shot

pytestmark = pytest.mark.integration


def test_the_line_view_shows_stations_wip_throughput_yield_and_holds(
        live_line: LiveLine, open_page: Any) -> None:
    run = live_line.simulate("--units", "4", "--seed", "11", "--burnin-seconds", "10",
                             "--faults", "skip-step:2")
    page, log = open_page(live_line, "sam", "/line")
    expect(page.locator('#stations .station[data-station="ict-01"]')).to_be_visible()
    expect(page.locator("#summary")).to_contain_text("Line clock")
    expect(page.locator("#fpy-rows")).to_contain_text("ict-01")

    # stations report their state: the view follows within its refresh, no reload
    after = parse_time(run["last_event"])
    for i, (station, code, reason) in enumerate([
            ("ict-01", 5000, "fixture controller fault"),
            ("smt-01", 4000, "nozzle change"),
            ("aoi-01", 2000, "starved: no boards from SMT")]):
        live_line.station_state(station, code, reason,
                                format_time(after + timedelta(minutes=1 + i)), 1_000_000 + i)
    down = page.locator('#stations .station[data-station="ict-01"]')
    expect(down).to_have_attribute("data-state", "down", timeout=15_000)
    expect(down).to_have_class("station andon-red")
    expect(down).to_contain_text("fixture controller fault")
    smt = page.locator('#stations .station[data-station="smt-01"]')
    expect(smt).to_have_attribute("data-state", "maintenance", timeout=15_000)
    expect(smt).to_have_class("station andon-blue")
    aoi = page.locator('#stations .station[data-station="aoi-01"]')
    expect(aoi).to_have_attribute("data-state", "idle", timeout=15_000)
    expect(aoi).to_have_class("station andon-amber")
    expect(page.locator("#summary")).to_contain_text("Down")

    status = live_line.console.as_("sam").get("/api/v1/line").json()
    if status["wip_total"]:
        expect(page.locator("#wip .step").first).to_be_visible()
    if status["holds"]["count"]:
        expect(page.locator("#hold-rows")).to_contain_text(status["holds"]["list"][0]["id"])
    else:
        expect(page.locator("#holds")).to_contain_text("No holds in force")
    packed = status["throughput"]["windows"]["8h"]["completed"]
    expect(page.locator("#summary .stat", has_text="Packed 8 h")).to_contain_text(str(packed))
    shot(page, "line.png")
    log.assert_clean()

    # the board over the same line: its flow alerts (medium) beside the forged records' (high)
    board, board_log = open_page(live_line, "sam", "/")
    expect(board.locator("#live.on")).to_be_visible(timeout=10_000)
    expect(board.locator('article.alert[data-priority="medium"]').first).to_be_visible()
    shot(board, "board.png")
    board_log.assert_clean()


def test_an_alarm_flood_shows_its_banner_on_the_board_without_a_reload(
        live_line: LiveLine, open_page: Any) -> None:
    page, log = open_page(live_line, "quinn", "/")
    expect(page.locator("#live.on")).to_be_visible(timeout=10_000)
    expect(page.locator("#flood")).to_be_hidden()
    # more than 10 alarms in 10 minutes of the line clock: the worker's tick raises the flood
    now = live_line.line_clock()
    ids = [live_line.inject_forged(f"flood-{i:02d}", time_=now) for i in range(12)]
    for aid in ids:
        live_line.wait_alert(aid)
    flood = live_line.wait_alert(alert_id("alerts.flood", "line"), timeout=30)
    assert flood.active
    banner = page.locator("#flood")
    expect(banner).to_be_visible(timeout=2_000)
    expect(banner).to_contain_text("flood")
    log.assert_clean()
