"""An evidence bundle carries the people's `alert.*` leaves on the alerts about its unit, with
the `user.*` leaves of those who signed them, and `linetrace verify` re-checks those
statements offline (the `statements` check): a bundle whose acknowledgement records another
comment or another user than signed fails by name, even re-signed with the plant key.

The bundle: the sealed server of the simulated line; an alert about it, acknowledged by s1
(supervisor, with a comment) and shelved by q1 (quality). People: admin (self-signed), s1, q1.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from linetrace.ledger.alerts.actions import act, shelve_until
from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import apply_conditions
from linetrace.ledger.db import Ledger
from linetrace.ledger.evidence import write_evidence
from linetrace.ledger.proof.bundle import MANIFEST, README, REQUIRES, readme
from linetrace.ledger.proof.verify import verify_bundle
from linetrace.ledger.users import enroll_user
from linetrace.schemas import alert_events as ae
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event

from .test_log_line import PLANT, SIGNER, VKEY, feed_line, line
from .test_verify_statements import event_of, failure, forge, leaves_of, person, sign

PEOPLE = {"admin": "admin", "s1": "supervisor", "q1": "quality"}


def make_bundle(root: Path) -> tuple[Path, str]:
    ledger = Ledger(f"sqlite:///{root / 'ledger.db'}")
    try:
        fed = feed_line(ledger, line())
        for name, role in PEOPLE.items():
            pub = person(name).public_key()
            enroll_user(ledger, PLANT, sign("admin", "user.add", name, {
                "role": role, "public_key": signing.public_key_b64(pub),
                "keyid": signing.keyid_of(pub)}), user=name, role=role, public_key=pub)
        aid = alert_id("burnin.peer_deviation", f"{fed.server}/gpu3")
        with ledger.transaction() as s:
            apply_conditions(s, [Condition("burnin.peer_deviation", f"{fed.server}/gpu3", True,
                                           datetime(2026, 3, 2, 8, 0, tzinfo=UTC),
                                           str(uuid.uuid4()), unit=fed.server)])
        act(ledger, PLANT, sign("s1", "alert.acknowledge", aid, {"comment": "fan checked"}),
            aid, "acknowledge", comment="fan checked")
        until = shelve_until(timedelta(hours=2))
        act(ledger, PLANT, sign("q1", "alert.shelve", aid, {"until": until, "reason": "door"}),
            aid, "shelve", reason="door", until=until)
        write_evidence(ledger, fed.server, root / "bundle", SIGNER)
    finally:
        ledger.close()
    return root / "bundle", aid


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_bundle(tmp_path_factory.mktemp("alerted"))


@pytest.fixture
def bundle(made: tuple[Path, str], tmp_path: Path) -> Path:
    shutil.copytree(made[0], tmp_path / "bundle")
    return tmp_path / "bundle"


def test_the_bundle_carries_the_alert_actions_and_their_signers_and_verifies(
        made: tuple[Path, str]) -> None:
    bundle, aid = made
    events = [event_of(d) for d in leaves_of(bundle)]
    assert [e.type for e in events if e.subject == aid] == ["alert.acknowledged",
                                                            "alert.shelved"]
    assert {e.subject for e in events if e.type == "user.enrolled"} == {"admin", "s1", "q1"}
    seen: dict[str, str] = {}
    verify_bundle(bundle, VKEY, report=lambda check, msg: seen.__setitem__(check, msg))
    assert seen["statements"].startswith("5 statements by 3 people in 5 hold, alert and user "
                                         "events verify")


def test_an_acknowledgement_recording_another_comment_or_user_fails_statements(
        bundle: Path) -> None:
    def comment(ev: Event) -> b.Body:
        body = ev.body
        if not isinstance(body, ae.AlertAcknowledged):
            return body
        return ae.AlertAcknowledged(alert_id=body.alert_id, user=body.user,
                                    comment="nothing wrong", statement=body.statement)

    forge(bundle, comment)
    e = failure(bundle)
    assert e.check == "statements" and "alert.acknowledged" in str(e)
    assert "the event records {'comment': 'nothing wrong'}" in str(e)


def test_a_shelve_credited_to_another_user_fails_statements(bundle: Path) -> None:
    def credit(ev: Event) -> b.Body:
        body = ev.body
        if not isinstance(body, ae.AlertShelved):
            return body
        return ae.AlertShelved(alert_id=body.alert_id, user="s1", until=body.until,
                               reason=body.reason, statement=body.statement)

    forge(bundle, credit)
    e = failure(bundle)
    assert e.check == "statements" and "user says s1, the statement is q1's" in str(e)


def test_a_format_3_bundle_carrying_alert_leaves_is_refused(bundle: Path) -> None:
    """Alert leaves came with format 4: relabelling the bundle as format 3 (manifest and
    README as that writer made them) cannot skip the check of their statements."""
    doc = json.loads((bundle / MANIFEST).read_text())
    doc.update({"format": "linetrace-evidence/3", "requires": REQUIRES[3]})
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    (bundle / README).write_text(readme(doc["unit"], doc["tree_size"], len(doc["leaves"]),
                                        doc["verifier_key"], 3))
    e = failure(bundle)
    assert e.check == "statements"
    assert "a linetrace-evidence/3 bundle carries no alert leaves" in str(e)
    assert "alert.acknowledged" in str(e)
