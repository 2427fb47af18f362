"""The alerts API: list, KPIs, one alert with its history, and the operator's actions attested
by the console's key for the signed-in user (real ledger, real alert engine)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from sqlalchemy import select

from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_conditions
from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_stored_event

from .conftest import Console, make_console

T0 = datetime.now(UTC).replace(microsecond=0) - timedelta(hours=1)
DOWN = alert_id("flow.station_down", "ict-1")


@pytest.fixture
def any_console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """The console on SQLite and on PostgreSQL."""
    c = make_console(db_url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


def raise_alert(ledger: Ledger, condition: str = "flow.station_down", subject: str = "ict-1",
                *, active: bool = True, at: datetime = T0, cause: str = "e1") -> str:
    with ledger.transaction() as s:
        apply_conditions(s, [Condition(condition, subject, active, at, cause,
                                       station=subject if condition.startswith("flow.") else None)])
    return alert_id(condition, subject)


def events_of(ledger: Ledger, etype: str, subject: str) -> list[object]:
    with ledger.reader() as s:
        return [decode_stored_event(v) for v in s.scalars(
            select(EventRow.value).where(EventRow.type == etype, EventRow.subject == subject)
            .order_by(EventRow.seq))]


def test_list_show_and_kpi(console: Console) -> None:
    aid = raise_alert(console.ledger)
    vic = console.as_("vic")
    r = vic.get("/api/v1/alerts")
    assert r.status_code == 200, r.text
    [doc] = r.json()
    assert doc["id"] == aid and doc["state"] == "unacknowledged"
    assert doc["priority"] == "medium" and doc["station"] == "ict-1"
    assert vic.get("/api/v1/alerts?state=acknowledged").json() == []
    assert [a["id"] for a in vic.get("/api/v1/alerts?state=all").json()] == [aid]
    bad = vic.get("/api/v1/alerts?state=sleepy")
    assert bad.status_code == 422 and bad.json()["field"] == "query.state"
    assert "sleepy" in bad.json()["message"]

    one = vic.get(f"/api/v1/alerts/{aid}").json()
    assert one["history"][0]["transition"] == "raised" and one["history"][0]["by"] is None
    missing = vic.get("/api/v1/alerts/AL-000000000000")
    assert missing.status_code == 404 and missing.json()["code"] == "alert.unknown"

    kpi = vic.get("/api/v1/alerts/kpi?since=7d")
    assert kpi.status_code == 200, kpi.text
    assert kpi.json()["alarms"] == 1 and kpi.json()["flood"] is False
    worse = vic.get("/api/v1/alerts/kpi?since=soon")
    assert worse.status_code == 422 and worse.json()["field"] == "query.since"


def test_supervisor_ack_is_attested_by_the_console_and_named_in_history(
        any_console: Console) -> None:
    console = any_console
    aid = raise_alert(console.ledger)
    r = console.as_("sam").post(f"/api/v1/alerts/{aid}/ack", json={"comment": "on it"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["state"] == "acknowledged" and doc["new"] is True
    assert doc["recorded"] == ["alert.acknowledged"] and "sam acknowledged" in doc["message"]

    history = console.as_("vic").get(f"/api/v1/alerts/{aid}").json()["history"]
    ack = history[-1]
    assert (ack["transition"], ack["by"], ack["note"]) == ("acknowledged", "sam", "on it")
    assert datetime.fromisoformat(ack["time"].replace("Z", "+00:00")) > datetime.now(UTC) \
        - timedelta(minutes=5)

    [event] = events_of(console.ledger, "alert.acknowledged", aid)
    body = event.body  # type: ignore[attr-defined]
    assert body.user == "sam" and body.comment == "on it"
    assert body.statement.user == "sam"
    assert body.statement.keyid == signing.keyid_of(console.console_key.public_key())
    # the console's key was enrolled by a plant-signed event before it attested
    assert len(events_of(console.ledger, "console.enrolled", "console")) == 1

    again = console.as_("quinn").post(f"/api/v1/alerts/{aid}/ack", json={})
    assert again.status_code == 409 and again.json()["code"] == "alert.not_allowed"


def test_viewer_is_refused_before_anything(console: Console) -> None:
    aid = raise_alert(console.ledger)
    vic = console.as_("vic")
    for path, body in (("ack", {}), ("shelve", {"for": "nonsense"}), ("comment", {}),
                       ("out-of-service", {"reason": "x"})):
        r = vic.post(f"/api/v1/alerts/{aid}/{path}", json=body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["code"] == "role.forbidden" and "vic is viewer" in r.json()["message"]
    assert events_of(console.ledger, "alert.acknowledged", aid) == []
    # out of service needs a supervisor or admin: a quality user is refused too
    r = console.as_("quinn").post(f"/api/v1/alerts/{aid}/out-of-service", json={"reason": "x"})
    assert r.status_code == 403 and "supervisor or admin" in r.json()["message"]
    # and nobody without credentials
    assert console.anon().post(f"/api/v1/alerts/{aid}/ack").status_code == 401


def test_shelve_body_is_checked_and_shelve_unshelve_work(console: Console) -> None:
    aid = raise_alert(console.ledger)
    sam = console.as_("sam")
    for body, field, words in (
            ({"for": "2 hours", "reason": "r"}, "body.for", "not a duration"),
            ({"for": "30s", "reason": "r"}, "body.for", "lasts 1 minute to 24 hours"),
            ({"for": "25h", "reason": "r"}, "body.for", "out of service"),
            ({"for": "2h", "reason": "  "}, "body.reason", "may not be empty"),
            ({"for": "2h"}, "body.reason", "Field required"),
            ({"reason": "r"}, "body.for", "Field required")):
        r = sam.post(f"/api/v1/alerts/{aid}/shelve", json=body)
        assert r.status_code == 422, (body, r.text)
        assert r.json()["code"] == "request.invalid" and r.json()["field"] == field, r.json()
        assert words in r.json()["message"], r.json()

    r = sam.post(f"/api/v1/alerts/{aid}/shelve", json={"for": "1h30m", "reason": "known"})
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["state"] == "shelved"
    until = datetime.fromisoformat(doc["shelved_until"].replace("Z", "+00:00"))
    assert timedelta(minutes=85) < until - datetime.now(UTC) <= timedelta(minutes=90)
    r = sam.post(f"/api/v1/alerts/{aid}/unshelve", json={"reason": "fixed"})
    assert r.status_code == 200 and r.json()["state"] == "unacknowledged", r.text
    r = sam.post(f"/api/v1/alerts/{aid}/comment", json={"comment": "cable swapped"})
    assert r.status_code == 200 and r.json()["recorded"] == ["alert.commented"]
    empty = sam.post(f"/api/v1/alerts/{aid}/comment", json={"comment": ""})
    assert empty.status_code == 422 and empty.json()["field"] == "body.comment"

    r = sam.post(f"/api/v1/alerts/{aid}/out-of-service", json={"reason": "sensor swap"})
    assert r.status_code == 200 and r.json()["state"] == "out_of_service", r.text
    r = sam.post(f"/api/v1/alerts/{aid}/return", json={})
    assert r.status_code == 200 and r.json()["state"] != "out_of_service", r.text
    transitions = [(h["transition"], h["by"]) for h in
                   sam.get(f"/api/v1/alerts/{aid}").json()["history"]]
    assert transitions[1:] == [("shelved", "sam"), ("unshelved", "sam"), ("commented", "sam"),
                               ("out_of_service", "sam"), ("returned_to_service", "sam")]


def test_an_api_token_acts_without_csrf_and_a_cookie_needs_it(console: Console) -> None:
    aid = raise_alert(console.ledger)
    no_csrf = console.as_("sam", csrf=False)
    r = no_csrf.post(f"/api/v1/alerts/{aid}/ack", json={})
    assert r.status_code == 403 and r.json()["code"] == "csrf.missing"
    token = console.token("quinn")
    r = console.anon().post(f"/api/v1/alerts/{aid}/ack", json={},
                            headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["state"] == "acknowledged", r.text
    assert r.json()["message"].startswith("quinn acknowledged")
