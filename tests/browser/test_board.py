"""The live alert board in a real browser over a running line (embedded broker, `linetrace
worker`, the console): an alert raised by an injected event appears within a second of its
commit without a reload; a viewer's acknowledge is refused and the page says why; a
supervisor acknowledges, shelves and comments; the history and the audit show who and when;
no page breaks the CSP (the board's screenshot is taken in test_board_line.py)."""

from __future__ import annotations

import time
from typing import Any

import pytest
from playwright.sync_api import expect

from .conftest import LiveLine

pytestmark = pytest.mark.integration


def card(page: Any, aid: str) -> Any:
    return page.locator(f'article.alert[data-id="{aid}"]')


def test_an_injected_event_s_alert_appears_live_and_is_acknowledged_with_who_and_when(
        live_line: LiveLine, open_page: Any) -> None:
    sam, sam_log = open_page(live_line, "sam", "/")
    vic, vic_log = open_page(live_line, "vic", "/")
    for page in (sam, vic):
        expect(page.locator("#live.on")).to_be_visible(timeout=10_000)  # the stream is open

    aid = live_line.inject_forged("ict-forged-01")
    alert = live_line.wait_alert(aid)  # committed now
    committed = time.monotonic()
    expect(card(sam, aid)).to_be_visible(timeout=1_000)  # within 1 s of the commit, no reload
    seen = time.monotonic() - committed
    expect(card(vic, aid)).to_be_visible(timeout=1_000)
    assert seen < 1.0, seen
    assert alert.priority == "high" and alert.state == "unacknowledged"
    c = card(sam, aid)
    expect(c).to_have_attribute("data-state", "unacknowledged")
    assert "unacked" in (c.get_attribute("class") or "")
    expect(c.locator(".unack-mark.blink")).to_be_visible()
    expect(c).to_contain_text("ict-forged-01")
    expect(c).to_contain_text("security.quarantine")
    expect(sam.locator("#counts")).to_contain_text("high")
    expect(sam.locator("#counts")).not_to_contain_text("0 high")

    # a viewer may look but not acknowledge: the page says why
    card(vic, aid).locator('button[data-action="ack"]').click()
    error = vic.locator("#board-error .banner")
    expect(error).to_contain_text("vic is viewer")
    expect(error).to_contain_text("role.forbidden")
    assert live_line.alert(aid).state == "unacknowledged"  # type: ignore[union-attr]

    # the supervisor opens its history, then acknowledges it
    card(sam, aid).locator('button[data-action="details"]').click()
    expect(sam.locator("#drawer #history")).to_contain_text("raised")
    card(sam, aid).locator('button[data-action="ack"]').click()
    done = live_line.wait_alert(aid, timeout=10, pred=lambda a: a.state != "unacknowledged")
    assert done.state in ("normal", "acknowledged")
    history = sam.locator("#drawer #history")
    expect(history).to_contain_text("acknowledged")
    expect(history.locator("tbody tr").first).to_contain_text("sam")
    # the viewer's board follows over the stream: no longer waiting for an acknowledgement
    if done.state == "normal":
        expect(card(vic, aid)).to_have_count(0, timeout=2_000)
    else:
        expect(card(vic, aid)).to_have_attribute("data-state", "acknowledged", timeout=2_000)

    # the audit: who did what, and when (sam's acknowledgement and vic's refusal)
    sam.goto(f"{live_line.url}/audit")
    rows = sam.locator("#audit-rows")
    expect(rows).to_contain_text(f"POST /api/v1/alerts/{aid}/ack")
    ack_rows = rows.locator("tbody tr", has_text=f"/api/v1/alerts/{aid}/ack")
    texts = ack_rows.all_inner_texts()
    assert any("sam" in t and "200" in t for t in texts), texts
    assert any("vic" in t and "403" in t and "role.forbidden" in t for t in texts), texts
    sam_log.assert_clean()
    vic_log.assert_clean()


def test_a_supervisor_shelves_and_comments_and_the_board_shows_it(
        live_line: LiveLine, open_page: Any) -> None:
    page, log = open_page(live_line, "sam", "/")
    expect(page.locator("#live.on")).to_be_visible(timeout=10_000)
    ids = [live_line.inject_forged(f"aoi-forged-0{i}") for i in (1, 2, 3)]
    for aid in ids:
        live_line.wait_alert(aid)
        expect(card(page, aid)).to_be_visible(timeout=2_000)
    expect(page.locator("#kpi")).to_contain_text("Alarms")

    shelved = ids[0]
    card(page, shelved).locator('button[data-action="shelve"]').click()
    dialog = page.locator("dialog.form-dialog")
    dialog.locator("#dlg-for").select_option("2h")
    dialog.locator("#dlg-reason").fill("fixture swap on AOI-1 until noon")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    expect(card(page, shelved)).to_have_attribute("data-state", "shelved")
    expect(card(page, shelved)).to_contain_text("shelved until")
    view = live_line.wait_alert(shelved, timeout=5, pred=lambda a: a.state == "shelved")
    assert view.shelved_until is not None

    other = ids[1]
    card(page, other).locator('button[data-action="comment"]').click()
    dialog.locator("#dlg-comment").fill("maintenance called, ETA 10 min")
    dialog.locator("button[type=submit]").click()
    expect(dialog).to_have_count(0)
    card(page, other).locator('button[data-action="details"]').click()
    history = page.locator("#drawer #history")
    expect(history).to_contain_text("maintenance called, ETA 10 min")
    expect(history).to_contain_text("sam")
    log.assert_clean()
