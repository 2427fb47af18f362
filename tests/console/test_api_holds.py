"""Holds and the interlock through the API: place, the two-person release of a quality hold,
the plant's `user-keys` policy, and `validate` (real ledger, units written by the worker's
batch processor)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from linetrace.ledger.models import EventRow
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_stored_event

from ..integration.route_line import Batches, serial_on
from .conftest import Console, make_console


def a_unit(console: Console, prefix: str = "SRV-C") -> tuple[Batches, str]:
    """A server that passed kitting, GPU install and integration (next: firmware, step 80)."""
    line = Batches(console.ledger, console.data_dir / "keys")
    serial = serial_on(prefix)
    for step in (50, 60, 70):
        line.flow.visit(serial, step)
    line.write()
    return line, serial


@pytest.fixture
def any_console(db_url: str, tmp_path: Path) -> Iterator[Console]:
    """The console on SQLite and on PostgreSQL."""
    c = make_console(db_url, tmp_path)
    yield c
    c.close()
    c.ledger.close()


@pytest.fixture
def user_keys_console(tmp_path: Path) -> Iterator[Console]:
    c = make_console(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path,
                     quality_release="user-keys")
    yield c
    c.close()
    c.ledger.close()


def test_place_list_and_two_person_release(any_console: Console) -> None:
    console = any_console
    _, serial = a_unit(console)
    quinn, rae, sam = console.as_("quinn"), console.as_("rae"), console.as_("sam")
    r = quinn.post("/api/v1/holds", json={"scope": "unit", "target": serial,
                                          "reason": "suspect solder joints"})
    assert r.status_code == 200, r.text
    hold = r.json()
    assert (hold["scope"], hold["target"], hold["category"]) == ("unit", serial, "quality")
    assert hold["placed_by"] == "quinn" and hold["state"] == "active" and hold["new"] is True
    hid = hold["id"]
    listed = console.as_("vic").get("/api/v1/holds").json()
    assert [h["id"] for h in listed] == [hid] and "recorded" not in listed[0]

    # a supervisor may not release a quality hold; the first quality user's release is an
    # approval: still in force, and the answer says a second quality user must confirm
    r = sam.post(f"/api/v1/holds/{hid}/release", json={"reason": "reworked"})
    assert r.status_code == 403, r.text
    r = quinn.post(f"/api/v1/holds/{hid}/release", json={"reason": "reworked"})
    assert r.status_code == 200, r.text
    first = r.json()
    assert first["state"] == "active" and first["recorded"] == ["hold.approved"]
    assert "a second quality user must sign" in first["message"]
    assert [a["user"] for a in first["approvals"]] == ["quinn"]
    again = quinn.post(f"/api/v1/holds/{hid}/release", json={"reason": "reworked"})
    assert again.status_code == 409 and again.json()["code"] == "hold.same_user"

    r = rae.post(f"/api/v1/holds/{hid}/release", json={"reason": "reworked"})
    assert r.status_code == 200, r.text
    done = r.json()
    assert done["state"] == "released" and done["released_by"] == ["quinn", "rae"]
    assert "hold.released" in done["recorded"]
    assert console.as_("vic").get("/api/v1/holds").json() == []
    assert [h["state"] for h in console.as_("vic").get("/api/v1/holds?all=true").json()] == \
        ["released"]

    # the release carries both statements, attested by the console's key for each user
    with console.ledger.reader() as s:
        [value] = s.scalars(select(EventRow.value).where(EventRow.type == "hold.released"))
    body = decode_stored_event(value).body
    console_keyid = signing.keyid_of(console.console_key.public_key())
    assert [(st.user, st.keyid) for st in body.statements] == [  # type: ignore[attr-defined]
        ("quinn", console_keyid), ("rae", console_keyid)]


def test_place_refusals(console: Console) -> None:
    _, serial = a_unit(console)
    sam = console.as_("sam")
    r = sam.post("/api/v1/holds", json={"scope": "lot", "target": "LOT-1", "reason": "x"})
    assert r.status_code == 403 and r.json()["field"] == "body.scope"
    assert "quality or admin" in r.json()["message"]
    r = console.as_("vic").post("/api/v1/holds", json={"scope": "unit", "target": serial,
                                                       "reason": "x"})
    assert r.status_code == 403 and r.json()["code"] == "role.forbidden"
    for body, field in (({"scope": "pallet", "target": serial, "reason": "x"}, "body.scope"),
                        ({"scope": "unit", "target": serial, "reason": " "}, "body.reason"),
                        ({"scope": "unit", "reason": "x"}, "body.target")):
        r = sam.post("/api/v1/holds", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = sam.post("/api/v1/holds", json={"scope": "unit", "target": "SRV-NOPE", "reason": "x"})
    assert r.status_code == 404 and r.json()["code"] == "hold.target_unknown"
    assert r.json()["field"] == "body.target"
    r = sam.post("/api/v1/holds/HOLD-NOPE/release", json={"reason": "x"})
    assert r.status_code == 404 and r.json()["code"] == "hold.unknown"
    # an operational hold (a supervisor's) is released by one person
    r = sam.post("/api/v1/holds", json={"scope": "unit", "target": serial, "reason": "look"})
    assert r.status_code == 200 and r.json()["category"] == "operational", r.text
    r = sam.post(f"/api/v1/holds/{r.json()['id']}/release", json={"reason": "fine"})
    assert r.status_code == 200 and r.json()["state"] == "released", r.text


def test_user_keys_policy_refuses_a_console_quality_release(
        user_keys_console: Console) -> None:
    console = user_keys_console
    _, serial = a_unit(console)
    quinn = console.as_("quinn")
    hid = quinn.post("/api/v1/holds", json={"scope": "unit", "target": serial,
                                            "reason": "x-ray"}).json()["id"]
    r = quinn.post(f"/api/v1/holds/{hid}/release", json={"reason": "fine"})
    assert r.status_code == 403, r.text
    assert r.json()["code"] == "hold.needs_user_keys"
    assert f"linetrace hold release {hid} --reason R" in r.json()["message"]
    assert console.as_("vic").get("/api/v1/holds").json()[0]["approvals"] == []
    # an operational hold is still released in the console
    sam = console.as_("sam")
    op = sam.post("/api/v1/holds", json={"scope": "unit", "target": serial, "reason": "y"})
    r = sam.post(f"/api/v1/holds/{op.json()['id']}/release", json={"reason": "ok"})
    assert r.status_code == 200 and r.json()["state"] == "released", r.text


def test_validate_allowed_and_refused(console: Console) -> None:
    line, serial = a_unit(console)
    token = console.token("vic", "firmware-01 interlock")
    station = console.anon()
    station.headers["Authorization"] = f"Bearer {token}"
    ok = station.post("/api/v1/validate", json={"serial": serial, "step": 80,
                                                "station": "firmware-01"})
    assert ok.status_code == 200 and ok.json() == {"allowed": True, "reasons": []}, ok.text
    skipped = station.post("/api/v1/validate", json={"serial": serial, "step": 90,
                                                     "station": "burnin-01"})
    assert skipped.status_code == 200
    assert skipped.json()["allowed"] is False
    assert [r["code"] for r in skipped.json()["reasons"]] == ["route.skipped_step"]

    hid = console.as_("sam").post("/api/v1/holds", json={
        "scope": "unit", "target": serial, "reason": "wait"}).json()["id"]
    held = station.post("/api/v1/validate", json={"serial": serial, "step": 80,
                                                  "station": "firmware-01"}).json()
    assert held["allowed"] is False and hid in held["reasons"][0]["message"]

    unknown = station.post("/api/v1/validate", json={"serial": serial, "step": 80,
                                                     "station": "nowhere-9"})
    assert unknown.status_code == 404 and unknown.json()["code"] == "validate.unknown_station"
    assert unknown.json()["field"] == "body.station"
    bad = station.post("/api/v1/validate", json={"serial": serial, "step": -1,
                                                 "station": "firmware-01"})
    assert bad.status_code == 422 and bad.json()["field"] == "body.step"
    assert console.anon().post("/api/v1/validate", json={}).status_code == 401
