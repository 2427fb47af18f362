"""The holds page in a real browser over a real line's ledger: a quality hold placed on a lot
is released only when a second, different quality user confirms (the first one's release is
an approval and the page says it waits); the same user twice, a supervisor, and a plant that
wants the users' own key signatures are refused, and the page says why."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from ..console.conftest import make_console
from .conftest import LiveConsole, _Server, _start_console, _stop_console
from .test_unit_page import HOT, cli_json, simulated_line

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    live = _start_console(simulated_line(tmp_path_factory))
    yield live
    _stop_console(live)


@pytest.fixture(scope="module")
def own_keys_line(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveConsole]:
    """The same line where the plant releases quality holds only with the users' own keys
    (LINETRACE_QUALITY_RELEASE=user-keys)."""
    data_dir = simulated_line(tmp_path_factory)
    console = make_console(f"sqlite:///{data_dir / 'ledger.db'}", data_dir,
                           quality_release="user-keys")
    server = _Server(console.app)
    live = LiveConsole(f"http://127.0.0.1:{server.port}", console, data_dir, server)
    yield live
    _stop_console(live)


def gpu_lot(live: LiveConsole) -> str:
    trace = cli_json(live, "trace", HOT)
    lot: str = next(p["lot"] for p in trace["parts"] if p["category"] == "gpu")
    return lot


def holds_api(page: Any, url: str, all_: bool = True) -> list[dict[str, Any]]:
    r = page.request.get(f"{url}/api/v1/holds" + ("?all=true" if all_ else ""))
    assert r.status == 200, r.text()
    found: list[dict[str, Any]] = json.loads(r.body())
    return found


def place_lot_hold(page: Any, lot: str, reason: str) -> str:
    page.wait_for_selector("#holds-list")
    page.select_option("#place-scope", "lot")
    page.fill("#place-target", lot)
    page.fill("#place-reason", reason)
    page.click("#place-go")
    placed = page.wait_for_selector("#place-result [data-hold]")
    hold_id: str = placed.get_attribute("data-hold")
    page.wait_for_selector(f"#holds-table button[data-hold='{hold_id}']")
    return hold_id


def release(page: Any, hold_id: str, reason: str) -> None:
    cell = f".lt-hold-status[data-hold='{hold_id}']"
    page.fill(f"{cell} input[name=release-reason]", reason)
    page.click(f"{cell} button.lt-release")


def outcome(page: Any, hold_id: str) -> Any:
    return page.wait_for_selector(f".lt-hold-status[data-hold='{hold_id}'] .lt-outcome")


def test_a_quality_hold_is_released_only_when_a_second_quality_user_confirms(
        line: LiveConsole, open_page: Any) -> None:
    lot = gpu_lot(line)
    quinn, wq = open_page(line, "quinn", "/holds")
    hold_id = place_lot_hold(quinn, lot, "supplier notice SN-7: GPU lot suspect")
    [held] = [h for h in holds_api(quinn, line.url) if h["id"] == hold_id]
    assert (held["state"], held["category"], held["scope"]) == ("active", "quality", "lot")

    # quinn's release is an approval: still in force, and the page says what it waits for
    release(quinn, hold_id, "supplier cleared the lot")
    out = outcome(quinn, hold_id)
    assert out.get_attribute("data-outcome") == "approved"
    waiting = quinn.wait_for_selector(f".lt-hold-status[data-hold='{hold_id}'] .lt-waiting")
    assert waiting.inner_text() == "approved by quinn — waiting for a second quality user"
    [held] = [h for h in holds_api(quinn, line.url) if h["id"] == hold_id]
    assert held["state"] == "active"
    assert [a["user"] for a in held["approvals"]] == ["quinn"]

    # quinn again: refused, a second, different quality user must sign
    release(quinn, hold_id, "really cleared")
    refused = quinn.wait_for_selector(
        f".lt-hold-status[data-hold='{hold_id}'] .lt-outcome[data-error]")
    assert refused.get_attribute("data-error") == "hold.same_user"
    assert "different quality user" in refused.inner_text()

    # a supervisor may not release a quality hold
    sam, ws = open_page(line, "sam", "/holds")
    sam.wait_for_selector(f"#holds-table button[data-hold='{hold_id}']")
    release(sam, hold_id, "need the line running")
    refused = sam.wait_for_selector(
        f".lt-hold-status[data-hold='{hold_id}'] .lt-outcome[data-error]")
    assert "quality" in refused.inner_text()
    assert [h["state"] for h in holds_api(sam, line.url) if h["id"] == hold_id] == ["active"]

    # rae, a second quality user, confirms: released by both
    rae, wr = open_page(line, "rae", "/holds")
    waiting = rae.wait_for_selector(f".lt-hold-status[data-hold='{hold_id}'] .lt-waiting")
    assert "approved by quinn" in waiting.inner_text()
    assert rae.inner_text(f"#holds-table button[data-hold='{hold_id}']") == "Confirm release"
    release(rae, hold_id, "supplier cleared the lot")
    out = outcome(rae, hold_id)
    assert out.get_attribute("data-outcome") == "released"
    assert "quinn and rae" in out.inner_text()
    [held] = [h for h in holds_api(rae, line.url) if h["id"] == hold_id]
    assert held["state"] == "released"
    assert held["released_by"] == ["quinn", "rae"]
    for w in (wq, ws, wr):
        w.assert_clean()


def test_a_plant_that_wants_own_key_signatures_sends_quality_users_to_the_cli(
        own_keys_line: LiveConsole, open_page: Any) -> None:
    lot = gpu_lot(own_keys_line)
    quinn, watched = open_page(own_keys_line, "quinn", "/holds")
    hold_id = place_lot_hold(quinn, lot, "supplier notice SN-8")
    release(quinn, hold_id, "supplier cleared the lot")
    refused = quinn.wait_for_selector(
        f".lt-hold-status[data-hold='{hold_id}'] .lt-outcome[data-error]")
    assert refused.get_attribute("data-error") == "hold.needs_user_keys"
    assert f"linetrace hold release {hold_id}" in refused.inner_text()
    [held] = [h for h in holds_api(quinn, own_keys_line.url) if h["id"] == hold_id]
    assert held["state"] == "active" and held["approvals"] == []
    watched.assert_clean()
