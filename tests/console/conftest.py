"""The console under test: a real ledger (SQLite file; PostgreSQL where a test asks for
`db_url`), enrolled users with passwords, the FastAPI app in-process (Starlette's TestClient
speaks real HTTP semantics to the real app; browser tests run a real server instead)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from linetrace.console.app import create_app
from linetrace.console.config import ConsoleConfig
from linetrace.ledger.console_auth import set_password
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.users import admins_with_valid_key, enroll_user
from linetrace.schemas import signing
from linetrace.schemas.routes import load_route_book
from linetrace.schemas.statements import new_statement, sign_statement

#: The people of every console test: name -> role.
PEOPLE = {"ada": "admin", "sam": "supervisor", "quinn": "quality", "rae": "quality",
          "vic": "viewer"}


def password_of(user: str) -> str:
    return f"{user}-correct-horse-1"


def enrol_people(ledger: Ledger, plant: Ed25519PrivateKey, people: dict[str, str] = PEOPLE,
                 *, approver: tuple[str, Ed25519PrivateKey] | None = None
                 ) -> dict[str, Ed25519PrivateKey]:
    """Enrol `people` and give each a console password; returns their own keys. Without an
    `approver` (an enrolled admin and their key) the first admin of `people` signs their own
    enrolment and approves the others; with one (e.g. the first admin `linetrace up` made),
    that admin approves everyone."""
    keys = {name: Ed25519PrivateKey.generate() for name in people}
    first = next(n for n, r in people.items() if r == "admin")
    signer, signer_key = approver if approver is not None else (first, keys[first])
    for name, role in sorted(people.items(), key=lambda p: p[0] != first):
        public = keys[name].public_key()
        details = {"role": role, "public_key": signing.public_key_b64(public),
                   "keyid": signing.keyid_of(public)}
        st = new_statement("user.add", name, details, user=signer)
        enroll_user(ledger, plant, sign_statement(st, signer_key), user=name, role=role,
                    public_key=public)
        set_password(ledger, name, password_of(name), by=signer, one_time=False)
    return keys


def up_admin(ledger: Ledger, keys_dir: Path) -> tuple[str, Ed25519PrivateKey] | None:
    """The first admin `linetrace up` enrolled (`admin`, keys/admin.key), if it did."""
    key_file = keys_dir / "admin.key"
    with ledger.reader() as s:
        admins = admins_with_valid_key(s)
    if "admin" not in admins or not key_file.exists():
        return None
    return "admin", signing.load_private_key_pem(key_file.read_bytes())


@dataclass
class Console:
    """The app with its people. `as_(user)` is a client signed in as `user` (its CSRF token
    sent on every request); `anon()` has no credentials; `token(user)` makes an API token."""

    app: Any
    ledger: Ledger
    plant: Ed25519PrivateKey
    console_key: Ed25519PrivateKey
    keys: dict[str, Ed25519PrivateKey]
    data_dir: Path
    _clients: list[TestClient] = field(default_factory=list)

    def anon(self) -> TestClient:
        c = TestClient(self.app, base_url="http://testserver")
        self._clients.append(c)
        return c

    def as_(self, user: str, *, csrf: bool = True) -> TestClient:
        c = self.anon()
        r = c.post("/api/v1/session", json={"user": user, "password": password_of(user)})
        assert r.status_code == 200, r.text
        if csrf:
            c.headers["X-CSRF-Token"] = r.json()["csrf"]
        return c

    def token(self, user: str, name: str = "test") -> str:
        r = self.as_(user).post("/api/v1/tokens", json={"name": name})
        assert r.status_code == 201, r.text
        token: str = r.json()["token"]
        return token

    def close(self) -> None:
        for c in self._clients:
            c.close()


def make_console(db_url: str, data_dir: Path, **config: Any) -> Console:
    ledger = Ledger(db_url)
    keys_dir = data_dir / "keys"
    plant, _ = load_or_create_plant_key(keys_dir)
    console_key = Ed25519PrivateKey.generate()
    people = enrol_people(ledger, plant, approver=up_admin(ledger, keys_dir))
    cfg = ConsoleConfig(db_url=db_url, data_dir=data_dir, keys_dir=keys_dir,
                        routes=load_route_book(None), plant_key=plant, console_key=console_key,
                        **config)
    return Console(create_app(cfg), ledger, plant, console_key, people, data_dir)


@pytest.fixture
def console(tmp_path: Path) -> Iterator[Console]:
    """The console on a SQLite ledger with PEOPLE enrolled."""
    c = make_console(f"sqlite:///{tmp_path / 'ledger.db'}", tmp_path)
    yield c
    c.close()
    c.ledger.close()
