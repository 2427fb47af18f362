"""People enrolled like stations, through `linetrace users`, on SQLite and PostgreSQL: the first
admin signs their own enrolment, every later change needs an admin's own signature, revoked
keys, removed users and forged signatures are refused, and the user.* events are leaves that
`verify-ledger` re-checks (a role edited in the table is caught)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import select, update

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.models import EventRow, User
from linetrace.ledger.users import (
    UserError,
    change_role,
    enroll_user,
    list_users,
    user_role,
    verify_user_statement,
)
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_stored_event
from linetrace.schemas.statements import new_statement, sign_statement

pytestmark = pytest.mark.integration

PLACERS = ("supervisor", "quality", "admin")


class Cli:
    """`linetrace` in this process, as the person whose key LINETRACE_USER_KEY names."""

    def __init__(self, data: Path, capsys: pytest.CaptureFixture[str],
                 monkeypatch: pytest.MonkeyPatch) -> None:
        self.data, self.capsys, self.monkeypatch = data, capsys, monkeypatch

    def key(self, name: str) -> Path:
        return self.data.parent / f"{name}.key"

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

    def add(self, name: str, role: str, *, as_: str | None = None) -> tuple[int, str]:
        return self("users", "add", name, "--role", role, "--public-key",
                    f"{self.key(name)}.pub", as_=as_)


@pytest.fixture
def cli(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> Iterator[Cli]:
    monkeypatch.setenv("LINETRACE_DB", db_url)
    for var in ("LINETRACE_DATA_DIR", "LINETRACE_BROKER", "LINETRACE_USER_KEY"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    data.mkdir()
    c = Cli(data, capsys, monkeypatch)
    for name in ("root", "admin2", "qa1", "v.ng", "mallory"):
        out = c.ok("users", "keygen", "--out", str(c.key(name)))
        assert c.key(name).stat().st_mode & 0o777 == 0o600
        assert signing.keyid_of(public(c, name)) in out
    yield c


def public(c: Cli, name: str) -> Ed25519PublicKey:
    return signing.load_public_key_file(Path(f"{c.key(name)}.pub").read_bytes())


def private(c: Cli, name: str) -> Ed25519PrivateKey:
    return signing.load_private_key_pem(c.key(name).read_bytes())


def enrolled(c: Cli) -> None:
    """root (the first admin, self-signed), then qa1 (quality) and v.ng (viewer) by root."""
    assert "the first admin, self-signed" in c.add("root", "admin", as_="root")[1]
    assert c.add("qa1", "quality", as_="root")[0] == 0
    assert c.add("v.ng", "viewer", as_="root")[0] == 0


def ledger_of(db_url: str) -> Ledger:
    return Ledger(db_url)


def test_the_first_admin_signs_their_own_enrolment_then_only_an_admin_enrols(
        cli: Cli, db_url: str) -> None:
    code, out = cli.add("qa1", "quality", as_="qa1")
    assert code == 1 and "no admin is enrolled yet" in out and "[user.forbidden]" in out
    code, out = cli.add("root", "admin", as_="mallory")  # someone else's key: not the first admin
    assert code == 1 and "signs their own enrolment" in out
    code, out = cli.add("root", "admin")
    assert code == 2 and "LINETRACE_USER_KEY is not set" in out
    enrolled(cli)
    code, out = cli.add("mallory", "admin", as_="mallory")  # self-signed, now that root exists
    assert code == 1 and "not enrolled for any user" in out
    code, out = cli.add("mallory", "quality", as_="v.ng")
    assert code == 1
    assert "enrolling a user needs the admin role; viewer v.ng has viewer [user.forbidden]" in out

    lg = ledger_of(db_url)
    try:
        with lg.reader() as s:
            assert (user_role(s, "root"), user_role(s, "qa1"), user_role(s, "v.ng"),
                    user_role(s, "mallory")) == ("admin", "quality", "viewer", None)
            bodies = [decode_stored_event(v).body for v in s.scalars(
                select(EventRow.value).where(EventRow.type == "user.enrolled")
                .order_by(EventRow.seq))]
        assert [(x.user, x.statement.user) for x in bodies  # type: ignore[attr-defined]
                ] == [("root", "root"), ("qa1", "root"), ("v.ng", "root")]
    finally:
        lg.close()


def test_users_list_json_keeps_its_shape(cli: Cli) -> None:
    enrolled(cli)
    rows = json.loads(cli.ok("users", "list", "--json"))
    assert [list(r) for r in rows] == [
        ["user", "role", "state", "keyids", "enrolled", "revoked_keyids"]] * 3
    assert [(r["user"], r["role"], r["state"]) for r in rows] == [
        ("qa1", "quality", "active"), ("root", "admin", "active"), ("v.ng", "viewer", "active")]
    assert rows[0]["keyids"] == [signing.keyid_of(public(cli, "qa1"))]
    assert rows[0]["enrolled"].endswith("Z") and rows[0]["revoked_keyids"] == []
    text = cli.ok("users", "list")
    assert text.splitlines()[0].split() == ["USER", "ROLE", "STATE", "KEYS", "ENROLLED"]


def test_the_same_request_again_returns_the_recorded_event(cli: Cli, db_url: str) -> None:
    enrolled(cli)
    plant, _ = load_or_create_plant_key(cli.data / "keys")
    signed = sign_statement(new_statement("user.role", "qa1", {"role": "supervisor"},
                                          user="root"), private(cli, "root"))
    lg = ledger_of(db_url)
    try:
        first = change_role(lg, plant, signed, user="qa1", role="supervisor")
        again = change_role(lg, plant, signed, user="qa1", role="supervisor")
        assert first.new and not again.new and first.event_id == again.event_id
        with lg.reader() as s:
            assert s.scalar(select(EventRow.cause).where(
                EventRow.event_id == first.event_id)) == signed_request(signed)
            assert len(s.scalars(select(EventRow.seq).where(
                EventRow.type == "user.changed")).all()) == 1
        # the request's statement decides: another change under the same request is refused
        with pytest.raises(UserError, match="already recorded"):
            other = sign_statement(new_statement("user.role", "qa1", {"role": "viewer"},
                                                 user="root", request=signed_request(signed)),
                                   private(cli, "root"))
            change_role(lg, plant, other, user="qa1", role="viewer")
    finally:
        lg.close()


def signed_request(signed: b.SignedStatement) -> str:
    return str(json.loads(base64.b64decode(signed.statement))["request"])


def test_a_role_change_takes_effect_for_the_next_statement(cli: Cli, db_url: str) -> None:
    enrolled(cli)
    lg = ledger_of(db_url)
    try:
        hold = sign_statement(new_statement("hold.place", "SRV-1", {"reason": "x"},
                                            user="v.ng"), private(cli, "v.ng"))
        with lg.reader() as s, pytest.raises(UserError) as refused:
            verify_user_statement(s, hold, action="hold.place", target="SRV-1", roles=PLACERS)
        assert refused.value.code == "user.forbidden"
        assert refused.value.message == ("placing a hold needs the supervisor, quality or admin "
                                         "role; viewer v.ng has viewer")
        assert "role is now supervisor" in cli.ok("users", "role", "v.ng", "--role",
                                                  "supervisor", as_="root")
        with lg.reader() as s:
            st = verify_user_statement(s, hold, action="hold.place", target="SRV-1",
                                       roles=PLACERS)
            assert (st.user, user_role(s, "v.ng")) == ("v.ng", "supervisor")
    finally:
        lg.close()
    code, out = cli("users", "role", "root", "--role", "quality", as_="root")
    assert code == 1 and "last admin with a valid key" in out


def test_a_revoked_key_and_a_removed_user_are_refused(cli: Cli, db_url: str) -> None:
    enrolled(cli)
    assert cli.add("admin2", "admin", as_="root")[0] == 0
    kid = signing.keyid_of(public(cli, "admin2"))
    assert "revoked" in cli.ok("users", "revoke", "admin2", "--keyid", kid, as_="root")
    code, out = cli.add("mallory", "viewer", as_="admin2")
    assert code == 1 and f"key {kid} of admin2 was revoked" in out
    assert "[statement.invalid]" in out

    qa_key = private(cli, "qa1")
    assert "removed" in cli.ok("users", "remove", "qa1", "--json", as_="root")
    lg = ledger_of(db_url)
    try:
        with lg.reader() as s, pytest.raises(UserError) as refused:
            verify_user_statement(s, sign_statement(new_statement(
                "hold.place", "SRV-1", {"reason": "x"}, user="qa1"), qa_key),
                action="hold.place", target="SRV-1", roles=PLACERS)
        assert refused.value.code == "user.forbidden" and "qa1 was removed" in refused.value.message
        with lg.reader() as s:
            rows = {r["user"]: r for r in list_users(s)}
    finally:
        lg.close()
    assert rows["qa1"]["state"] == "removed" and rows["qa1"]["keyids"] == []
    assert rows["admin2"]["revoked_keyids"] == [kid]
    code, out = cli("users", "remove", "root", as_="root")
    assert code == 1 and "last admin with a valid key" in out


def test_a_forged_admin_signature_is_refused_with_exit_1(
        cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    """A tampered client signs as root with mallory's key under root's key id."""
    enrolled(cli)
    from linetrace.cli import users_cmds

    root_kid = signing.keyid_of(public(cli, "root"))

    def forge(settings: object, ledger: object, action: str, target: str,
              details: dict[str, str], request: str | None = None) -> b.SignedStatement:
        genuine = sign_statement(new_statement(action, target, details, user="root"),
                                 private(cli, "mallory"))
        return b.SignedStatement(user="root", keyid=root_kid, statement=genuine.statement,
                                 signature=genuine.signature)

    monkeypatch.setattr(users_cmds, "sign_as", forge)
    code, out = cli("users", "role", "v.ng", "--role", "admin", as_="mallory")
    assert code == 1, out
    assert (f"does not verify against root's enrolled key {root_kid}" in out
            and "forged" in out and "[statement.invalid]" in out)


def test_an_altered_statement_is_refused(cli: Cli, db_url: str) -> None:
    enrolled(cli)
    plant, _ = load_or_create_plant_key(cli.data / "keys")
    pub = public(cli, "mallory")
    details = {"role": "viewer", "public_key": signing.public_key_b64(pub),
               "keyid": signing.keyid_of(pub)}
    signed = sign_statement(new_statement("user.add", "mallory", details, user="root"),
                            private(cli, "root"))
    data = json.loads(base64.b64decode(signed.statement))
    data["details"]["role"] = "admin"
    altered = b.SignedStatement(
        user="root", keyid=signed.keyid, signature=signed.signature,
        statement=base64.b64encode(json.dumps(data, sort_keys=True, separators=(",", ":"))
                                   .encode()).decode())
    lg = ledger_of(db_url)
    try:
        with pytest.raises(UserError, match="forged") as refused:
            enroll_user(lg, plant, altered, user="mallory", role="admin", public_key=pub)
        assert refused.value.code == "statement.invalid"
        with pytest.raises(UserError, match="sign the change being recorded"):
            enroll_user(lg, plant, signed, user="mallory", role="admin", public_key=pub)
    finally:
        lg.close()


def test_user_events_are_leaves_that_verify_ledger_checks(cli: Cli, db_url: str) -> None:
    enrolled(cli)
    cli.ok("users", "role", "qa1", "--role", "supervisor", as_="root")
    assert cli.add("admin2", "admin", as_="root")[0] == 0
    cli.ok("users", "revoke", "admin2", "--keyid", signing.keyid_of(public(cli, "admin2")),
           as_="root")
    cli.ok("users", "remove", "v.ng", as_="root")
    out = cli.ok("verify-ledger")
    assert "tree: 7 leaves" in out, out  # 4 enrolments, a role change, a revocation, a removal
    assert "verified" in out

    lg = ledger_of(db_url)
    try:
        with lg.transaction() as s:  # the database's owner promotes the viewer by hand
            s.execute(update(User).where(User.user_id == "v.ng")
                      .values(role="admin", state="active"))
    finally:
        lg.close()
    code, out = cli("verify-ledger")
    assert code == 1 and "edited users [v.ng]" in out, out


def test_the_plant_key_and_the_database_cannot_forge_an_admins_approval(
        cli: Cli, db_url: str) -> None:
    """Whoever holds both writes a plant-signed, well-formed user.changed promoting the viewer,
    with the viewer's own statement (no admin would sign it): the ledger takes it, as the
    bytes are valid, but verify-ledger re-checks the statement against the log and refuses."""
    from linetrace.ledger.system_events import signed_system_event
    from linetrace.ledger.writer import record_system_event

    enrolled(cli)
    plant, _ = load_or_create_plant_key(cli.data / "keys")
    own = sign_statement(new_statement("user.role", "v.ng", {"role": "admin"}, user="v.ng"),
                         private(cli, "v.ng"))
    lg = ledger_of(db_url)
    try:
        with lg.transaction() as s:
            record_system_event(s, signed_system_event(
                "user.changed", "v.ng", b.UserRoleChanged(user="v.ng", role="admin",
                                                          statement=own),
                time="2026-03-02T08:00:00.000Z", cause_id=signed_request(own), plant_key=plant))
        with lg.reader() as s:
            assert user_role(s, "v.ng") == "admin"  # the table follows the (plant-signed) event
    finally:
        lg.close()
    code, out = cli("verify-ledger")
    assert code == 1, out
    assert "invalid statements [user.changed v.ng" in out
    assert "v.ng signed user.role as viewer, not admin" in out
