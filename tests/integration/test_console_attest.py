"""Console attestations on a real ledger (SQLite and PostgreSQL): the console's key enrolled by a
plant-signed `console.enrolled`, a lot hold placed and released by two quality users through
the console's attestations, `verify-ledger` (the CLI) passing over it, the plant policy
`user-keys` refusing the console for quality releases, and a log without console events
verifying as before.

The line, the people (admin, sup, q1, q2, viewer) and their own keys are those of
tests/integration/test_holds.py.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select, update

from linetrace.ledger.console_key import (
    ConsoleKey,
    ConsoleKeyError,
    attest,
    console_keyid,
    enroll_console_key,
    is_console_attested,
    load_or_create_console_key,
    revoke_console_key,
)
from linetrace.ledger.db import Ledger
from linetrace.ledger.hold_actions import HoldError, place_hold, release_hold
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.models import EventRow
from linetrace.ledger.outbox import OutboxRow
from linetrace.ledger.users import UserError, verify_user_statement
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.topics import HOLDS
from tests.conftest import run_cli

from .test_holds import CAP_LOT, Line, build_line, enrol_people, person

pytestmark = pytest.mark.integration


class Console:
    """The console's side: its key, and the attestations it makes for signed-in users."""

    def __init__(self, line: Line, key: Ed25519PrivateKey, *, quality_by_console: bool = True
                 ) -> None:
        self.line, self.key, self.quality_by_console = line, key, quality_by_console

    def place(self, user: str, scope: str, target: str, reason: str = "suspect lot"
              ) -> dict:  # type: ignore[type-arg]
        st = attest(self.key, "hold.place", target, {"scope": scope, "reason": reason},
                    user=user)
        return place_hold(self.line.ledger, self.line.plant, st, scope=scope, target=target,
                          reason=reason).hold

    def release(self, user: str, hold_id: str, reason: str | None = None):  # type: ignore[no-untyped-def]
        st = attest(self.key, "hold.release", hold_id, {"reason": reason} if reason else {},
                    user=user)
        return release_hold(self.line.ledger, self.line.plant, st, hold_id, reason,
                            console_attested_quality=self.quality_by_console)


@pytest.fixture
def console_line(ledger: Ledger, tmp_path: Path) -> tuple[Line, Console]:
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    line = Line(ledger, plant)
    key, created = load_or_create_console_key(tmp_path / "keys")
    assert created and enroll_console_key(ledger, plant, key)
    return line, Console(line, key)


def test_the_console_key_file_is_private_and_kept(tmp_path: Path) -> None:
    key, created = load_or_create_console_key(tmp_path / "keys")
    path = tmp_path / "keys" / "console.key"
    assert created and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    again, created_again = load_or_create_console_key(tmp_path / "keys")
    assert not created_again
    assert signing.keyid_of(again.public_key()) == signing.keyid_of(key.public_key())
    assert (tmp_path / "keys" / "console.pub").exists()


def test_enrolment_is_a_plant_signed_leaf_once_per_key(console_line: tuple[Line, Console]
                                                        ) -> None:
    line, console = console_line
    keyid = signing.keyid_of(console.key.public_key())
    assert not enroll_console_key(line.ledger, line.plant, console.key)  # idempotent
    with line.ledger.reader() as s:
        assert console_keyid(s) == {keyid}
        rows = s.execute(select(EventRow.subject, EventRow.keyid).where(
            EventRow.type == "console.enrolled")).all()
        assert rows == [("console", signing.keyid_of(line.plant.public_key()))]
        # Queued for the broker like the user.* events, keyed by the console's name.
        queued = [(r.topic, r.key) for r in s.scalars(select(OutboxRow))
                  if r.value is not None and json.loads(r.value).get("type")
                  == "console.enrolled"]
        assert queued == [(HOLDS, b"console")]
    with pytest.raises(ConsoleKeyError, match="enrolled as console 'console'"):
        enroll_console_key(line.ledger, line.plant, console.key, name="console-2")
    with pytest.raises(ConsoleKeyError, match="enrolled for a person or a station"):
        enroll_console_key(line.ledger, line.plant, person("q1"), name="console-2")


def test_a_quality_hold_is_placed_and_released_by_two_users_through_the_console(
        console_line: tuple[Line, Console]) -> None:
    line, console = console_line
    hold = console.place("q1", "lot", CAP_LOT, "ESR drift")
    assert hold["placed_by"] == "q1"
    with line.ledger.reader() as s:
        from linetrace.ledger.models import Hold

        assert s.get(Hold, hold["id"]).category == "quality"  # type: ignore[union-attr]
    first = console.release("q1", hold["id"], "retested")
    assert first.in_force and "second quality user must sign" in first.message
    with pytest.raises(HoldError) as twice:
        console.release("q1", hold["id"], "retested")
    assert twice.value.code == "hold.same_user"
    done = console.release("q2", hold["id"], "supplier 8D accepted")
    assert not done.in_force and done.hold["released_by"] == ["q1", "q2"]


def test_console_and_own_key_signatures_mix_in_a_quality_release(
        console_line: tuple[Line, Console]) -> None:
    line, console = console_line
    hold = line.place("q1", "lot", CAP_LOT)  # q1's own key
    assert console.release("q2", hold["id"]).in_force  # q2 through the console
    assert not line.release("q1", hold["id"]).in_force  # q1's own key completes it


def test_an_attestation_is_accepted_for_the_user_it_names_on_the_same_role_rules(
        console_line: tuple[Line, Console]) -> None:
    line, console = console_line
    with line.ledger.reader() as s:
        st = attest(console.key, "hold.place", CAP_LOT, {"scope": "lot", "reason": "x"},
                    user="q1")
        assert is_console_attested(s, st)
        assert verify_user_statement(s, st, action="hold.place", target=CAP_LOT,
                                     roles=("quality", "admin")).user == "q1"
        sup = attest(console.key, "hold.place", CAP_LOT, {"scope": "lot", "reason": "x"},
                     user="sup")
        with pytest.raises(UserError, match="needs the quality or admin role") as role:
            verify_user_statement(s, sup, action="hold.place", target=CAP_LOT,
                                  roles=("quality", "admin"))
        assert role.value.code == "user.forbidden"
        nobody = attest(console.key, "hold.place", CAP_LOT, {"scope": "lot", "reason": "x"},
                        user="nobody")
        with pytest.raises(UserError, match="not enrolled") as unknown:
            verify_user_statement(s, nobody, action="hold.place", target=CAP_LOT,
                                  roles=("quality", "admin"))
        assert unknown.value.code == "user.unknown"
    with pytest.raises(UserError, match="supervisor"):
        console.place("viewer", "unit", "SRV-H-1")


def test_a_console_key_not_enrolled_or_revoked_is_refused(console_line: tuple[Line, Console],
                                                          tmp_path: Path) -> None:
    line, console = console_line
    stranger, _ = load_or_create_console_key(tmp_path / "other-keys")
    with pytest.raises(UserError) as not_enrolled:
        Console(line, stranger).place("q1", "lot", CAP_LOT)
    assert not_enrolled.value.code == "statement.invalid"
    keyid = signing.keyid_of(console.key.public_key())
    assert revoke_console_key(line.ledger, line.plant, keyid, reason="server replaced")
    assert not revoke_console_key(line.ledger, line.plant, keyid)
    with line.ledger.reader() as s:
        assert console_keyid(s) == set()
    with pytest.raises(UserError, match="was revoked") as revoked:
        console.place("q1", "lot", CAP_LOT)
    assert revoked.value.code == "statement.invalid"
    with pytest.raises(ConsoleKeyError, match="revoked"):
        enroll_console_key(line.ledger, line.plant, console.key)


def test_the_console_cannot_stand_in_for_an_admins_own_key(console_line: tuple[Line, Console]
                                                           ) -> None:
    from linetrace.ledger.users import change_role
    from linetrace.schemas.statements import new_statement, sign_statement

    line, console = console_line
    st = sign_statement(new_statement("user.role", "viewer", {"role": "admin"}, user="admin"),
                        console.key)
    with pytest.raises(UserError, match="own key") as refused:
        change_role(line.ledger, line.plant, st, user="viewer", role="admin")
    assert refused.value.code == "user.forbidden"


def test_user_keys_policy_refuses_the_console_for_quality_releases_only(
        console_line: tuple[Line, Console]) -> None:
    line, console = console_line
    strict = Console(line, console.key, quality_by_console=False)
    quality = strict.place("q1", "lot", CAP_LOT)  # placing is still fine through the console
    with pytest.raises(HoldError, match=r"linetrace hold release .* --reason R") as refused:
        strict.release("q1", quality["id"], "retested")
    assert refused.value.code == "hold.needs_user_keys"
    # An operational hold is released through the console as before.
    unit = strict.place("sup", "unit", "SRV-H-1", "scratch on the lid")
    assert not strict.release("sup", unit["id"]).in_force
    # A console approval made before the plant changed its policy does not count afterwards:
    # q1 (whose approval was the console's) cannot complete it alone with their own key; two
    # quality users' own keys release it.
    assert console.release("q1", quality["id"]).in_force

    def own(user: str):  # type: ignore[no-untyped-def]
        return release_hold(line.ledger, line.plant,
                            line.sign(user, "hold.release", quality["id"], {}), quality["id"],
                            console_attested_quality=False)

    with pytest.raises(HoldError) as alone:
        own("q1")
    assert alone.value.code == "hold.needs_user_keys"
    assert own("q2").in_force  # q1's console approval is not taken as the first signature
    done = own("q1")
    assert not done.in_force and done.hold["released_by"] == ["q2", "q1"]


def test_verify_ledger_passes_over_console_attested_releases_and_refuses_an_edit(
        tmp_path: Path) -> None:
    """On SQLite through the CLI: the console's enrolment and attestations replay; the
    `console_keys` table edited by hand is reported."""
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        plant, _ = load_or_create_plant_key(data / "keys")
        build_line(ledger, plant)
        enrol_people(ledger, plant)
        line = Line(ledger, plant)
        key, _ = load_or_create_console_key(data / "keys")
        assert enroll_console_key(ledger, plant, key)
        console = Console(line, key)
        hold = console.place("q1", "lot", CAP_LOT, "ESR drift")
        assert console.release("q1", hold["id"]).in_force
        assert not console.release("q2", hold["id"], "retested").in_force
    finally:
        ledger.close()
    out = run_cli("verify-ledger", data_dir=data)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified" in out.stdout and "invalid statements" not in out.stdout

    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        with ledger.transaction() as s:  # the database's owner un-revokes nothing but renames
            s.execute(update(ConsoleKey).values(name="someone-else"))
    finally:
        ledger.close()
    out = run_cli("verify-ledger", data_dir=data)
    assert out.returncode == 1 and "edited console_keys" in out.stdout, out.stdout + out.stderr


def test_verify_ledger_refuses_an_attestation_by_a_console_key_the_log_never_enrolled(
        tmp_path: Path) -> None:
    """Whoever holds the plant key records a plant-signed hold.approved carrying an
    attestation by a key the log never enrolled: the ledger took it (the bytes are valid),
    verify-ledger re-checks it against the log and refuses."""
    from linetrace.ledger.system_events import register_plant_key, signed_system_event
    from linetrace.ledger.writer import record_system_event

    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        plant, _ = load_or_create_plant_key(data / "keys")
        build_line(ledger, plant)
        enrol_people(ledger, plant)
        line = Line(ledger, plant)
        hold = line.place("q1", "lot", CAP_LOT)
        rogue = Ed25519PrivateKey.generate()
        st = attest(rogue, "hold.release", hold["id"], {}, user="q2")
        from datetime import UTC, datetime

        with ledger.transaction() as s:
            register_plant_key(s, plant, datetime.now(UTC))
            record_system_event(s, signed_system_event(
                "hold.approved", hold["id"], b.HoldApproved(hold_id=hold["id"], statement=st),
                time=datetime.now(UTC), cause_id="6a0e3c1e-0000-4000-8000-000000000001",
                plant_key=plant))
    finally:
        ledger.close()
    out = run_cli("verify-ledger", data_dir=data)
    assert out.returncode == 1, out.stdout + out.stderr
    assert "invalid statements [hold.approved" in out.stdout
    assert "enrolled neither for q2 nor for a console before it" in out.stdout


def test_a_log_without_console_events_still_verifies(tmp_path: Path) -> None:
    """Compatibility: holds released with people's own keys only, no console ever enrolled,
    verify as they did before console attestations existed."""
    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    try:
        plant, _ = load_or_create_plant_key(data / "keys")
        build_line(ledger, plant)
        enrol_people(ledger, plant)
        line = Line(ledger, plant)
        hold = line.place("q1", "lot", CAP_LOT)
        assert line.release("q1", hold["id"]).in_force
        assert not line.release("q2", hold["id"]).in_force
        with ledger.reader() as s:
            assert console_keyid(s) == set()
            assert s.scalar(select(EventRow.seq).where(EventRow.type.like("console.%"))) is None
    finally:
        ledger.close()
    out = run_cli("verify-ledger", data_dir=data)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "verified" in out.stdout


def test_an_evidence_bundle_carries_the_consoles_enrolment_and_verifies(db_url: str,
                                                                        tmp_path: Path) -> None:
    """`linetrace verify` (verify_bundle) re-checks console attestations offline: the bundle
    carries the `console.enrolled` leaf with the users' enrolments, and the statements check
    names the console key."""
    from linetrace.ledger.evidence import write_evidence
    from linetrace.ledger.genealogy import trace
    from linetrace.ledger.proof.verify import verify_bundle
    from tests.unit.test_log_line import PLANT, SIGNER, VKEY, feed_line
    from tests.unit.test_log_line import line as line_plan

    ledger = Ledger(db_url)
    try:
        fed = feed_line(ledger, line_plan())
        enrol_people(ledger, PLANT)
        line = Line(ledger, PLANT)
        key, _ = load_or_create_console_key(tmp_path / "keys")
        enroll_console_key(ledger, PLANT, key)
        console = Console(line, key)
        with ledger.reader() as s:
            lot = next(p.lot for p in trace(s, fed.server).parts if p.category == "gpu")
        hold = console.place("q1", "lot", lot, "GPU lot recalled by supplier")
        assert console.release("q1", hold["id"]).in_force
        assert not console.release("q2", hold["id"], "supplier withdrew the notice").in_force
        write_evidence(ledger, fed.server, tmp_path / "bundle", SIGNER)
        said: dict[str, str] = {}
        verify_bundle(tmp_path / "bundle", VKEY, report=said.__setitem__)
    finally:
        ledger.close()
    text = said["statements"]
    keyid = signing.keyid_of(key.public_key())
    assert f"attestations by the console key of console (key id {keyid})" in text, text


def test_the_consoles_key_is_nobodys_own(console_line: tuple[Line, Console]) -> None:
    """Enrolled as a person's key, the console's key could sign user administration as that
    person (and an auditor would count it as theirs): refused, as a station's key is."""
    from linetrace.ledger.users import enroll_user
    from linetrace.schemas.statements import new_statement, sign_statement

    line, console = console_line
    key = console.key.public_key()
    details = {"role": "quality", "public_key": signing.public_key_b64(key),
               "keyid": signing.keyid_of(key)}
    st = sign_statement(new_statement("user.add", "mallory", details, user="admin"),
                        person("admin"))
    with pytest.raises(UserError, match="console's key") as refused:
        enroll_user(line.ledger, line.plant, st, user="mallory", role="quality", public_key=key)
    assert refused.value.code == "user.forbidden"
