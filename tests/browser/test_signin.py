"""The sign-in page in a real browser: a supervisor signs in and lands where they were going;
a wrong password says so; repeated failures are throttled and the page says when to try again;
a one-time password leads to the account page first; no page breaks the CSP."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import expect

from linetrace.ledger.console_auth import THROTTLE_FAILURES, set_password

from ..console.conftest import password_of
from .conftest import VIEWPORT, LiveConsole, Watched, sign_in

pytestmark = pytest.mark.integration


def test_a_supervisor_signs_in_and_lands_on_the_page_asked_for(
        live_console: LiveConsole, browser: Any) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    watched = Watched(page)
    page.goto(f"{live_console.url}/audit")  # no session: sent to /signin, coming back after
    page.wait_for_url(f"{live_console.url}/signin?next=%2Faudit")
    sign_in(page, live_console.url, "sam", next_path="/audit")
    page.wait_for_selector("#nav-user")
    assert page.inner_text("#nav-user") == "sam"
    assert page.inner_text("#nav-role").lower() == "supervisor"
    links = page.eval_on_selector_all(".topnav .links a", "as => as.map(a => a.textContent)")
    assert links == ["Alerts", "Line", "Units", "Recall", "SPC", "Holds", "Checkpoints", "Audit",
                     "Account"]
    page.wait_for_selector("#audit-rows")  # sam's sign-in is in the audit
    assert "POST /api/v1/session" in page.inner_text("#audit-rows")
    page.click("#signout")
    page.wait_for_url(f"{live_console.url}/signin")
    page.goto(f"{live_console.url}/")
    page.wait_for_url(f"{live_console.url}/signin?next=%2F")
    watched.assert_clean()
    ctx.close()



@pytest.mark.parametrize("evil", ["//evil.example/", "/\\evil.example/", "/\t/evil.example/",
                                  "https://evil.example/", "javascript:alert(1)"])
def test_signing_in_never_leads_to_another_site(live_console: LiveConsole, browser: Any,
                                                evil: str) -> None:
    """`next` is resolved as the browser would and kept on this site (an open redirect after
    sign-in is a phishing tool)."""
    from urllib.parse import quote

    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    page.goto(f"{live_console.url}/signin?next={quote(evil, safe='')}")
    page.fill("#user", "sam")
    page.fill("#password", password_of("sam"))
    page.click("#signin-submit")
    page.wait_for_selector("#nav-user")
    assert page.url.startswith(live_console.url + "/"), page.url
    ctx.close()

def test_a_wrong_password_is_refused_and_a_one_time_password_must_be_changed_first(
        live_console: LiveConsole, browser: Any) -> None:
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    watched = Watched(page)
    page.goto(f"{live_console.url}/signin")
    page.fill("#user", "rae")
    page.fill("#password", "not-rae-s-password")
    page.click("#signin-submit")
    error = page.wait_for_selector("#signin-error .banner")
    assert "user name or password is wrong" in error.inner_text()
    assert page.url == f"{live_console.url}/signin"

    set_password(live_console.ledger, "rae", "one-time-pass-123", by="ada", one_time=True)
    page.goto(f"{live_console.url}/signin?next=%2Fline")
    page.fill("#user", "rae")
    page.fill("#password", "one-time-pass-123")
    page.click("#signin-submit")
    page.wait_for_url(f"{live_console.url}/account?must_change=1&next=%2Fline")
    page.wait_for_selector("#must-change")
    page.fill("#pw-current", "one-time-pass-123")
    page.fill("#pw-new", "rae-own-password-9")
    page.fill("#pw-again", "rae-own-password-9")
    page.click("#password-form button[type=submit]")
    page.wait_for_url(f"{live_console.url}/line")
    watched.assert_clean()
    ctx.close()


def test_the_account_page_makes_a_token_shown_once_and_revokes_it(
        live_console: LiveConsole, open_page: Any) -> None:
    page, watched = open_page(live_console, "quinn", "/account")
    page.fill("#token-name", "erp recall export")
    page.click("#token-form button[type=submit]")
    secret = page.locator("#token-secret")
    expect(secret).to_contain_text("lt_")
    token = secret.inner_text().strip()
    row = page.locator("#token-rows tbody tr", has_text="erp recall export")
    expect(row).to_contain_text("active")
    api = live_console.console.anon()
    assert api.get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"}
                   ).status_code == 200
    page.reload()  # shown once: gone after a reload, the token listed without its secret
    expect(page.locator("#token-secret")).to_have_count(0)
    row.locator("button.danger").click()
    page.locator("dialog.form-dialog button[type=submit]").click()
    expect(row).to_contain_text("revoked")
    assert api.get("/api/v1/alerts", headers={"Authorization": f"Bearer {token}"}
                   ).status_code == 401
    watched.assert_clean()


def test_repeated_failures_are_throttled_and_the_page_says_when_to_try_again(
        live_console: LiveConsole, browser: Any) -> None:
    # the last test of this module on purpose: the throttle also locks the client address
    # (127.0.0.1) for a while, so no sign-in to this module's console works after it
    ctx = browser.new_context(viewport=VIEWPORT)
    page = ctx.new_page()
    watched = Watched(page)
    page.goto(f"{live_console.url}/signin")
    text = ""
    for _ in range(THROTTLE_FAILURES + 1):
        page.fill("#user", "vic")
        page.fill("#password", "guess-guess-guess")
        page.click("#signin-submit")
        expect(page.locator("#signin-error .banner")).to_be_visible()
        expect(page.locator("#signin-submit")).to_be_enabled()
        text = page.inner_text("#signin-error")
    assert "Too many failed sign-ins" in text and "try again in" in text, text
    assert "auth.throttled" in text
    # now even the right password waits
    page.fill("#user", "vic")
    page.fill("#password", "vic-correct-horse-1")
    page.click("#signin-submit")
    expect(page.locator("#signin-error")).to_contain_text("try again in")
    assert page.url.startswith(f"{live_console.url}/signin")
    watched.assert_clean()
    ctx.close()
