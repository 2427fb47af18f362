"""`linetrace console`, `linetrace users password` and `linetrace tokens`: real processes, a
real SQLite ledger, real HTTP to the console that `linetrace console` serves (docs/console.md).
"""

from __future__ import annotations

import itertools
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ..conftest import linetrace_cmd, run_cli

pytestmark = pytest.mark.integration

_LOGS = itertools.count()
_URL = re.compile(r"linetrace console: (http://127\.0\.0\.1:\d+/)")


class ConsoleProc:
    """`linetrace console --port 0` in its own session; its URL read from what it prints."""

    def __init__(self, data: Path, env: dict[str, str] | None = None) -> None:
        self.log = data.parent / f"{data.name}-console-{next(_LOGS)}.log"
        self.proc = subprocess.Popen(
            linetrace_cmd("console", "--port", "0", "--data-dir", str(data)),
            stdout=self.log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True,
            env={**os.environ, **(env or {})})
        self.url = self._wait_url()

    def _wait_url(self, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = _URL.search(self.log.read_text())
            if found:
                url = found.group(1)
                for _ in range(200):  # printed just before uvicorn serves: wait for it
                    try:
                        if httpx.get(url + "openapi.json", timeout=2).status_code == 200:
                            return url
                    except httpx.TransportError:
                        time.sleep(0.1)
            if self.proc.poll() is not None:
                break
            time.sleep(0.1)
        self.stop()
        raise AssertionError(f"the console did not start:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode


def _enrol(data: Path, tmp: Path) -> dict[str, Path]:
    """`admin` (the first admin, self-signed), `sam` (supervisor) and `ivy` (viewer: a
    machine user, e.g. the stations' interlock calls) through the CLI; their key files."""
    keys = {}
    for name in ("admin", "sam", "ivy"):
        keys[name] = tmp / f"{name}.key"
        r = run_cli("users", "keygen", "--out", str(keys[name]), data_dir=data)
        assert r.returncode == 0, r.stderr
    for name, role in (("admin", "admin"), ("sam", "supervisor"), ("ivy", "viewer")):
        r = run_cli("users", "add", name, "--role", role, "--public-key", f"{keys[name]}.pub",
                    data_dir=data, env={"LINETRACE_USER_KEY": str(keys["admin"])})
        assert r.returncode == 0, r.stdout + r.stderr
    return keys


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, dict[str, Path], str]]:
    """A data dir with admin and sam enrolled, and `linetrace console` serving it."""
    tmp = tmp_path_factory.mktemp("console-cli")
    data = tmp / "data"
    keys = _enrol(data, tmp)
    console = ConsoleProc(data)
    try:
        yield data, keys, console.url
    finally:
        console.stop()


def test_console_serves_openapi_and_signin_then_stops_on_sigterm(tmp_path: Path) -> None:
    console = ConsoleProc(tmp_path / "data")
    try:
        doc = httpx.get(console.url + "openapi.json", timeout=10)
        assert doc.status_code == 200 and "/api/v1/session" in doc.json()["paths"]
        page = httpx.get(console.url + "signin", timeout=10)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert "script-src 'self'" in page.headers["content-security-policy"]
        assert httpx.get(console.url + "api/v1/alerts", timeout=10).status_code == 401
    finally:
        rc = console.stop()
    assert rc == 0, console.log.read_text()
    assert "stopped" in console.log.read_text()
    # the console enrolled its own key in the log on the way
    assert (tmp_path / "data" / "keys" / "console.key").stat().st_mode & 0o077 == 0


def test_a_port_in_use_exits_2_naming_it(tmp_path: Path) -> None:
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        r = run_cli("console", "--port", str(port), data_dir=tmp_path / "data", timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"port {port} on 127.0.0.1 is in use" in r.stderr and "--port" in r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.parametrize("env", [{"LINETRACE_QUALITY_RELEASE": "bogus"},
                                 {"LINETRACE_CONSOLE_PORT": "99999"},
                                 {"LINETRACE_CONSOLE_HTTPS": "maybe"}])
def test_a_bad_setting_exits_2_naming_it(tmp_path: Path, env: dict[str, str]) -> None:
    r = run_cli("console", data_dir=tmp_path / "data", env=env, timeout=60)
    assert r.returncode == 2, r.stdout + r.stderr
    (name, value), = env.items()
    assert f"{name}={value!r}" in r.stderr and "Traceback" not in r.stderr


def test_quality_release_user_keys_is_announced(tmp_path: Path) -> None:
    console = ConsoleProc(tmp_path / "data", env={"LINETRACE_QUALITY_RELEASE": "user-keys"})
    try:
        assert "quality release: user-keys" in console.log.read_text()
    finally:
        console.stop()


def test_users_password_gives_a_one_time_password_that_signs_in(
        plant: tuple[Path, dict[str, Path], str]) -> None:
    data, keys, url = plant
    r = run_cli("users", "password", "sam", "--json", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["admin"])})
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert doc["user"] == "sam" and doc["must_change"] is True and doc["set_by"] == "admin"
    with httpx.Client(base_url=url, timeout=10) as c:
        s = c.post("/api/v1/session", json={"user": "sam", "password": doc["password"]})
        assert s.status_code == 200, s.text
        assert s.json()["must_change"] is True and s.json()["role"] == "supervisor"
        assert c.get("/api/v1/session").json()["user"] == "sam"
    # a new one-time password ends the old one
    r2 = run_cli("users", "password", "sam", data_dir=data,
                 env={"LINETRACE_USER_KEY": str(keys["admin"])})
    assert r2.returncode == 0 and "one-time console password" in r2.stdout
    bad = httpx.post(url + "api/v1/session", json={"user": "sam", "password": doc["password"]},
                     timeout=10)
    assert bad.status_code == 401


def test_users_password_refuses_others_and_the_unknown(
        plant: tuple[Path, dict[str, Path], str]) -> None:
    data, keys, _ = plant
    r = run_cli("users", "password", "admin", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["sam"])})
    assert r.returncode == 1 and "needs an admin's key" in r.stderr, r.stderr
    r = run_cli("users", "password", "nobody", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["admin"])})
    assert r.returncode == 1 and "nobody is not an enrolled, active user" in r.stderr
    r = run_cli("users", "password", "sam", data_dir=data,
                env={"LINETRACE_USER_KEY": ""})
    assert r.returncode == 2 and "LINETRACE_USER_KEY is not set" in r.stderr


def test_tokens_create_list_revoke_round_trip(
        plant: tuple[Path, dict[str, Path], str]) -> None:
    data, keys, url = plant
    admin = {"LINETRACE_USER_KEY": str(keys["admin"])}
    r = run_cli("tokens", "create", "ivy", "--name", "ict-31 interlock", "--json",
                data_dir=data, env=admin)
    assert r.returncode == 0, r.stderr
    made = json.loads(r.stdout)
    assert made["user"] == "ivy" and made["created_by"] == "admin" and made["revoked"] is None
    bearer = {"Authorization": f"Bearer {made['token']}"}
    me = httpx.get(url + "api/v1/session", headers=bearer, timeout=10)
    assert me.status_code == 200 and me.json()["user"] == "ivy", me.text
    assert me.json()["via"] == f"token:{made['id']}"

    listed = json.loads(run_cli("tokens", "list", "--json", data_dir=data).stdout)
    mine = [t for t in listed if t["id"] == made["id"]]
    assert mine and mine[0]["name"] == "ict-31 interlock" and "token" not in mine[0]
    assert made["token"] not in run_cli("tokens", "list", data_dir=data).stdout

    r = run_cli("tokens", "revoke", made["id"], data_dir=data, env=admin)
    assert r.returncode == 0 and "revoked" in r.stdout, r.stderr
    gone = httpx.get(url + "api/v1/session", headers=bearer, timeout=10)
    assert gone.status_code == 401 and gone.json()["code"] == "auth.required"
    listed = json.loads(run_cli("tokens", "list", "--json", data_dir=data).stdout)
    assert next(t for t in listed if t["id"] == made["id"])["revoked"] is not None


def test_tokens_for_someone_else_need_an_admin(
        plant: tuple[Path, dict[str, Path], str]) -> None:
    data, keys, _ = plant
    r = run_cli("tokens", "create", "admin", "--name", "x", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["sam"])})
    assert r.returncode == 1 and "needs an admin's key" in r.stderr
    r = run_cli("tokens", "create", "sam", "--name", "own", "--json", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["sam"])})
    assert r.returncode == 0 and json.loads(r.stdout)["created_by"] == "sam"
    # Not even an admin makes a token that acts (and is attested) as another person who may
    # act: with two quality users' tokens one admin could release a quality hold alone.
    r = run_cli("tokens", "create", "sam", "--name", "x", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["admin"])})
    assert r.returncode == 1 and "token.forbidden" in r.stderr, r.stderr
    r = run_cli("tokens", "revoke", "000000000000", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["admin"])})
    assert r.returncode == 1 and "no token 000000000000" in r.stderr


def test_console_https_marks_the_session_cookie_secure(
        plant: tuple[Path, dict[str, Path], str]) -> None:
    data, keys, url = plant
    r = run_cli("users", "password", "sam", "--json", data_dir=data,
                env={"LINETRACE_USER_KEY": str(keys["admin"])})
    password = json.loads(r.stdout)["password"]
    plain = httpx.post(url + "api/v1/session", json={"user": "sam", "password": password},
                       timeout=10)
    assert plain.status_code == 200 and "secure" not in plain.headers["set-cookie"].lower()
    behind_tls = ConsoleProc(data, env={"LINETRACE_CONSOLE_HTTPS": "1"})
    try:
        r = httpx.post(behind_tls.url + "api/v1/session",
                       json={"user": "sam", "password": password}, timeout=10)
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie and "samesite=strict" in cookie
    finally:
        behind_tls.stop()
