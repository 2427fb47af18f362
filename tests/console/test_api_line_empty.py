"""The line view on a ledger the line has not fed yet: an empty but well-formed document,
and the SPC API says there are no charts (no line run: fast)."""

from __future__ import annotations

from datetime import UTC, datetime

from .conftest import Console


def test_line_status_of_an_empty_line(console: Console) -> None:
    r = console.as_("vic").get("/api/v1/line")
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc) == {"clock", "stations", "wip", "wip_total", "throughput",
                        "first_pass_yield", "holds", "alerts"}
    assert doc["stations"] == [] and doc["wip"] == [] and doc["wip_total"] == 0
    assert doc["first_pass_yield"] == []
    assert doc["holds"] == {"count": 0, "by_scope": {}, "list": []}
    assert doc["alerts"]["total"] == 0
    assert doc["alerts"]["by_priority"] == {"high": 0, "medium": 0, "low": 0}
    # no event yet: the line clock is the wall clock
    clock = datetime.fromisoformat(doc["clock"].replace("Z", "+00:00"))
    assert abs((datetime.now(UTC) - clock).total_seconds()) < 120
    for w in doc["throughput"]["windows"].values():
        assert (w["completed"], w["shipped"], w["operations"]) == (0, 0, 0)


def test_spc_without_charts(console: Console) -> None:
    c = console.as_("sam")
    assert c.get("/api/v1/spc").json() == []
    r = c.get("/api/v1/spc/ict/TP1")
    assert r.status_code == 404 and r.json()["code"] == "spc.unknown_chart"
    assert "field" not in r.json()
