"""Operators act on alerts through the real CLI, signing with their own keys, on SQLite and
PostgreSQL: `ack`, `shelve`, `unshelve`, `alerts comment|out-of-service|return`. Each action is
a plant-signed `alert.*` leaf carrying the person's statement and naming them, applied to the
alert in the same transaction (its history and `line.alerts` messages); a role that may not is
refused with a clear error, an unknown alert too, a shelve ends by itself when its time is up,
and `verify-ledger` re-checks every statement: a forged or altered one is reported.

The ledger: root (admin, self-signed), sup (supervisor), qa1 (quality), v.ng (viewer); one
alert raised by the engine from a detector's finding (`apply_conditions`).
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from linetrace.ledger.alerts.actions import act
from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_conditions, expire_shelves
from linetrace.ledger.alerts.models import AlertHistory
from linetrace.ledger.alerts.views import get_alert
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.models import EventRow
from linetrace.ledger.outbox import OutboxRow
from linetrace.ledger.users import UserError
from linetrace.schemas import alert_events as ae
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_stored_event, parse_time
from linetrace.schemas.statements import new_statement, sign_statement

from ..conftest import run_cli

pytestmark = pytest.mark.integration

CONDITION, SUBJECT = "burnin.peer_deviation", "SRV-ACT-1/gpu3"
AID = alert_id(CONDITION, SUBJECT)
RAISED = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


class Cli:
    """`linetrace` in this process, as the person whose key LINETRACE_USER_KEY names."""

    def __init__(self, data: Path, db_url: str, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.data, self.db_url, self.capsys, self.monkeypatch = data, db_url, capsys, monkeypatch

    def key(self, name: str) -> Path:
        return self.data.parent / f"{name}.key"

    def private(self, name: str) -> Ed25519PrivateKey:
        return signing.load_private_key_pem(self.key(name).read_bytes())

    def __call__(self, *args: str, as_: str | None = None) -> tuple[int, str]:
        from linetrace.cli import main as cli_main

        if as_ is None:
            self.monkeypatch.delenv("LINETRACE_USER_KEY", raising=False)
        else:
            self.monkeypatch.setenv("LINETRACE_USER_KEY", str(self.key(as_)))
        self.capsys.readouterr()
        code = cli_main.main([*args, "--data-dir", str(self.data)])
        out = self.capsys.readouterr()
        return code, out.out + out.err

    def ok(self, *args: str, as_: str | None = None) -> str:
        code, out = self(*args, as_=as_)
        assert code == 0, (args, out)
        return out

    def json(self, *args: str, as_: str) -> dict[str, object]:
        out = self.ok(*args, "--json", as_=as_)
        doc = json.loads(out)
        assert isinstance(doc, dict)
        return doc

    def ledger(self) -> Ledger:
        return Ledger(self.db_url)


@pytest.fixture
def cli(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    """People enrolled and one alert raised (unacknowledged)."""
    monkeypatch.setenv("LINETRACE_DB", db_url)
    for var in ("LINETRACE_DATA_DIR", "LINETRACE_BROKER", "LINETRACE_USER_KEY"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    c = Cli(data, db_url, capsys, monkeypatch)
    for name in ("root", "sup", "qa1", "v.ng"):
        c.ok("users", "keygen", "--out", str(c.key(name)))
    for name, role in (("root", "admin"), ("sup", "supervisor"), ("qa1", "quality"),
                       ("v.ng", "viewer")):
        c.ok("users", "add", name, "--role", role, "--public-key", f"{c.key(name)}.pub",
             as_="root")
    lg = c.ledger()
    try:
        with lg.transaction() as s:
            apply_conditions(s, [Condition(CONDITION, SUBJECT, True, RAISED, str(uuid.uuid4()),
                                           unit="SRV-ACT-1")])
        with lg.reader() as s:
            assert get_alert(s, AID).state == "unacknowledged"
    finally:
        lg.close()
    yield c


def recorded(c: Cli, event_type: str) -> list[ae.AlertActionBody]:
    lg = c.ledger()
    try:
        with lg.reader() as s:
            bodies = [decode_stored_event(v).body for v in s.scalars(
                select(EventRow.value).where(EventRow.type == event_type).order_by(EventRow.seq))]
    finally:
        lg.close()
    assert all(isinstance(x, ae.ALERT_BODIES[event_type]) for x in bodies)
    return bodies  # type: ignore[return-value]


def history(c: Cli) -> list[tuple[str, str | None, str | None]]:
    lg = c.ledger()
    try:
        with lg.reader() as s:
            return [(h.transition, h.by, h.note) for h in s.scalars(
                select(AlertHistory).where(AlertHistory.alert_id == AID)
                .order_by(AlertHistory.id))]
    finally:
        lg.close()


def test_ack_shelve_unshelve_and_comment_are_signed_by_the_user_and_recorded(cli: Cli) -> None:
    doc = cli.json("ack", AID, "--comment", "fan checked", as_="sup")
    assert (doc["id"], doc["state"], doc["new"], doc["recorded"]) == (
        AID, "acknowledged", True, ["alert.acknowledged"])
    assert "sup acknowledged" in str(doc["message"])
    (ack,) = recorded(cli, "alert.acknowledged")
    assert isinstance(ack, ae.AlertAcknowledged)
    assert (ack.alert_id, ack.user, ack.comment, ack.statement.user) == (
        AID, "sup", "fan checked", "sup")

    before = datetime.now(UTC)
    doc = cli.json("shelve", AID, "--for", "2h", "--reason", "chamber door open", as_="qa1")
    assert (doc["state"], doc["recorded"]) == ("shelved", ["alert.shelved"])
    until = parse_time(str(doc["shelved_until"]))
    assert before + timedelta(hours=2) - timedelta(seconds=1) <= until
    assert until <= datetime.now(UTC) + timedelta(hours=2)
    (shelf,) = recorded(cli, "alert.shelved")
    assert isinstance(shelf, ae.AlertShelved)
    assert (shelf.user, shelf.reason, parse_time(shelf.until)) == ("qa1", "chamber door open",
                                                                   until)

    out = cli.ok("unshelve", AID, as_="qa1")
    assert f"qa1 unshelved {AID}" in out and "now acknowledged" in out
    out = cli.ok("alerts", "comment", AID, "same lot as last week", as_="qa1")
    assert f"qa1 commented on {AID}" in out
    (note,) = recorded(cli, "alert.commented")
    assert isinstance(note, ae.AlertCommented) and note.comment == "same lot as last week"

    assert history(cli)[1:] == [("acknowledged", "sup", "fan checked"),
                                ("shelved", "qa1", "chamber door open"),
                                ("unshelved", "qa1", None),
                                ("commented", "qa1", "same lot as last week")]
    lg = cli.ledger()
    try:
        with lg.reader() as s:
            topics = [(r.topic, r.key) for r in s.scalars(
                select(OutboxRow).where(OutboxRow.key == AID.encode()).order_by(OutboxRow.seq))]
    finally:
        lg.close()
    # Each action: its system event and the alert's transition, both on line.alerts by alert id.
    assert len(topics) >= 2 * 4 and set(topics) == {("line.alerts", AID.encode())}

    out = cli.ok("verify-ledger")
    assert "verified" in out, out


def test_out_of_service_needs_a_supervisor_and_returns(cli: Cli) -> None:
    code, out = cli("alerts", "out-of-service", AID, "--reason", "sensor swap", as_="qa1")
    assert code == 1, out
    assert ("taking an alert out of service needs the supervisor or admin role; quality qa1 "
            "has quality [user.forbidden]") in out
    doc = cli.json("alerts", "out-of-service", AID, "--reason", "sensor swap", as_="sup")
    assert (doc["state"], doc["recorded"]) == ("out_of_service", ["alert.outofservice"])
    code, out = cli("shelve", AID, "--for", "1h", "--reason", "x", as_="sup")
    assert code == 1 and "[alert.not_allowed]" in out, out
    doc = cli.json("alerts", "return", AID, "--reason", "sensor replaced", as_="root")
    assert (doc["state"], doc["recorded"]) == ("unacknowledged", ["alert.inservice"])
    (ret,) = recorded(cli, "alert.inservice")
    assert isinstance(ret, ae.AlertReturnedToService)
    assert (ret.user, ret.reason) == ("root", "sensor replaced")
    assert "verified" in cli.ok("verify-ledger")


def test_refusals_say_what_is_wrong(cli: Cli) -> None:
    code, out = cli("ack", AID, as_="v.ng")
    assert code == 1
    assert ("acknowledging an alert needs the supervisor, quality or admin role; viewer v.ng "
            "has viewer [user.forbidden]") in out
    code, out = cli("ack", AID)
    assert code == 2 and "LINETRACE_USER_KEY is not set" in out
    code, out = cli("ack", "AL-000000000000", as_="sup")
    assert code == 1 and "no alert 'AL-000000000000'" in out and "[alert.unknown]" in out
    cli.ok("ack", AID, as_="sup")
    code, out = cli("ack", AID, as_="qa1")
    assert code == 1 and "nothing to acknowledge" in out and "[alert.not_allowed]" in out
    code, out = cli("unshelve", AID, as_="sup")
    assert code == 1 and "not shelved" in out
    for duration, why in (("25h", "time-limited"), ("30s", "time-limited"),
                          ("soon", "not a duration")):
        code, out = cli("shelve", AID, "--for", duration, "--reason", "r", as_="sup")
        assert code == 2 and why in out, (duration, out)
    code, out = cli("shelve", AID, "--for", "1h", "--reason", "  ", as_="sup")
    assert code == 2 and "reason" in out
    code, out = cli("alerts", "comment", AID, "", as_="sup")
    assert code == 2 and "a comment is required" in out
    assert [h[0] for h in history(cli)] == ["raised", "acknowledged"]  # nothing else recorded


def test_the_cli_entry_point_exits_with_the_documented_codes(cli: Cli) -> None:
    env = {"LINETRACE_DB": cli.db_url, "LINETRACE_USER_KEY": str(cli.key("sup"))}
    done = run_cli("ack", AID, "--json", data_dir=cli.data, env=env)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["state"] == "acknowledged"
    done = run_cli("ack", "AL-000000000000", data_dir=cli.data, env=env)
    assert done.returncode == 1 and "[alert.unknown]" in done.stderr
    done = run_cli("shelve", AID, "--for", "2h", data_dir=cli.data, env=env)
    assert done.returncode == 2 and "--reason" in done.stderr


def test_a_shelve_ends_by_itself_and_a_request_is_recorded_once(cli: Cli) -> None:
    plant, _ = load_or_create_plant_key(cli.data / "keys")
    t = RAISED + timedelta(hours=1)
    until = "2026-03-02T10:00:00.000Z"
    signed = sign_statement(new_statement("alert.shelve", AID, {
        "until": until, "reason": "maintenance"}, user="qa1", time=t), cli.private("qa1"))
    lg = cli.ledger()
    try:
        first = act(lg, plant, signed, AID, "shelve", reason="maintenance", until=until, now=t)
        again = act(lg, plant, signed, AID, "shelve", reason="maintenance", until=until, now=t)
        assert (first.new, again.new, again.alert.state) == (True, False, "shelved")
        assert again.message == "already recorded"
        other = sign_statement(new_statement("alert.shelve", AID, {
            "until": until, "reason": "other"}, user="qa1", time=t,
            request=json.loads(base64.b64decode(signed.statement))["request"]),
            cli.private("qa1"))
        with pytest.raises(UserError, match="already recorded .* with another statement"):
            act(lg, plant, other, AID, "shelve", reason="other", until=until, now=t)
        with lg.transaction() as s:
            expire_shelves(s, t + timedelta(minutes=30))
        with lg.reader() as s:
            assert get_alert(s, AID).state == "shelved"
        with lg.transaction() as s:
            expire_shelves(s, parse_time(until))
        with lg.reader() as s:
            view = get_alert(s, AID)
            assert (view.state, view.shelved_until) == ("unacknowledged", None)
    finally:
        lg.close()
    assert [h[0] for h in history(cli)] == ["raised", "shelved", "shelve_expired"]
    assert len(recorded(cli, "alert.shelved")) == 1

    long = sign_statement(new_statement("alert.shelve", AID, {
        "until": "2026-03-03T09:00:00.001Z", "reason": "r"}, user="qa1", time=t),
        cli.private("qa1"))
    lg = cli.ledger()
    try:
        with pytest.raises(Exception, match="a shelve lasts at most 1 day"):
            act(lg, plant, long, AID, "shelve", reason="r", until="2026-03-03T09:00:00.001Z",
                now=t)
    finally:
        lg.close()


def test_verify_ledger_reports_a_forged_or_altered_statement(cli: Cli) -> None:
    """Whoever holds the plant key and the database records a plant-signed, well-formed
    alert.acknowledged with the viewer's own statement (no supervisor signed it), and one that
    records another comment than the supervisor signed: the ledger takes both (the bytes are
    valid), verify-ledger re-checks the statements against the log and refuses."""
    from linetrace.ledger.system_events import signed_system_event
    from linetrace.ledger.writer import record_system_event

    cli.ok("ack", AID, "--comment", "looked at it", as_="sup")
    assert "verified" in cli.ok("verify-ledger")
    plant, _ = load_or_create_plant_key(cli.data / "keys")
    by_viewer = sign_statement(new_statement("alert.shelve", AID, {
        "until": "2026-03-02T10:00:00.000Z", "reason": "quiet"}, user="v.ng",
        time=RAISED), cli.private("v.ng"))
    honest = sign_statement(new_statement("alert.comment", AID, {"comment": "lot X"},
                                          user="sup"), cli.private("sup"))
    lg = cli.ledger()
    try:
        with lg.transaction() as s:
            record_system_event(s, signed_system_event(
                "alert.shelved", AID, ae.AlertShelved(
                    alert_id=AID, user="v.ng", until="2026-03-02T10:00:00.000Z", reason="quiet",
                    statement=by_viewer),
                time="2026-03-02T08:30:00.000Z", cause_id=str(uuid.uuid4()), plant_key=plant))
            record_system_event(s, signed_system_event(
                "alert.commented", AID, ae.AlertCommented(
                    alert_id=AID, user="sup", comment="nothing to see", statement=honest),
                time="2026-03-02T08:31:00.000Z", cause_id=str(uuid.uuid4()), plant_key=plant))
    finally:
        lg.close()
    code, out = cli("verify-ledger")
    assert code == 1, out
    assert "invalid statements [alert.commented" in out and "alert.shelved" in out
    assert "v.ng signed alert.shelve as viewer; it needs the supervisor or quality or admin" in out
    assert "sup signed {'comment': 'lot X'}, the event records {'comment': 'nothing to see'}" in out
