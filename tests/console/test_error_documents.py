"""Inputs at the edges get the error document, never a bare 500 page: absurd durations are a
422 naming the field, and a failure inside the console is `{code: internal, message}` with no
traceback (the server logs it)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from .conftest import Console


def test_an_absurd_duration_is_a_422_naming_the_field(console: Console) -> None:
    sam = console.as_("sam")
    r = sam.get("/api/v1/alerts/kpi", params={"since": "99999999999d"})
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "request.invalid" and r.json()["field"] == "query.since"
    r = sam.post("/api/v1/alerts/AL-000000000000/shelve",
                 json={"for": "99999999999d", "reason": "x"})
    assert r.status_code in (404, 422), r.text  # unknown alert or invalid duration, never 500
    assert set(r.json()) <= {"code", "message", "field"}


def test_a_failure_inside_the_console_answers_the_error_document(console: Console) -> None:
    @console.app.get("/api/v1/_test_failure", include_in_schema=False)
    async def fail() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    with TestClient(console.app, raise_server_exceptions=False) as client:
        r = client.get("/api/v1/_test_failure")
    assert r.status_code == 500
    assert r.json()["code"] == "internal" and set(r.json()) == {"code", "message"}
    assert "secret internals" not in r.text and "Traceback" not in r.text
