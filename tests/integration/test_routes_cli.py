"""LINETRACE_ROUTES through the real `linetrace` command: a bad folder starts nothing, `routes
show` names the route in force, and a worker records a plant route on the units it starts."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import Unit
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.schemas.routes import PRODUCTS_DIR, load_route_book

from ..conftest import Proc, linetrace_cmd, run_cli, wait_for

pytestmark = pytest.mark.integration

A_TEXT = (PRODUCTS_DIR / "A.json").read_text(encoding="utf-8")
PLANT_A = A_TEXT.replace('"revision": "R1"', '"revision": "R2-plant"').replace(
    '"max_cycle_s": 1800', '"max_cycle_s": 2400', 1)


def folder_with(tmp_path: Path, name: str, text: str) -> Path:
    folder = tmp_path / "routes"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


@pytest.mark.parametrize("command", [["worker"], ["up", "--units", "1"],
                                     ["simulate", "--units", "1", "--seed", "5"]],
                         ids=lambda c: c[0])
def test_a_bad_routes_folder_starts_nothing(command: list[str], tmp_path: Path) -> None:
    text = A_TEXT.replace('"requires": [60]', '"requires": [90]')
    folder = folder_with(tmp_path, "A.json", text)
    at = text.index('"requires": [90]') + len('"requires": [')
    line, col = text.count("\n", 0, at) + 1, at - text.rfind("\n", 0, at)
    data = tmp_path / "data"
    r = run_cli(*command, data_dir=data, env={"LINETRACE_ROUTES": str(folder),
                                              "LINETRACE_BROKER": "kafka://127.0.0.1:9"},
                timeout=60)
    assert r.returncode == 2, r.stderr
    assert f"\n{folder / 'A.json'}:{line}:{col}: steps[2].requires[0]: " in r.stderr
    assert "nothing was started" in r.stderr
    assert not data.exists() or sorted(p.name for p in data.iterdir()) == []
    missing = run_cli(*command, data_dir=data, env={"LINETRACE_ROUTES": str(tmp_path / "none"),
                                                    "LINETRACE_BROKER": "kafka://127.0.0.1:9"},
                      timeout=60)
    assert missing.returncode == 2 and "is not a folder" in missing.stderr
    assert not data.exists() or sorted(p.name for p in data.iterdir()) == []


def test_routes_show_and_check_name_the_route_in_force(tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "A.json", PLANT_A)
    env = {"LINETRACE_ROUTES": str(folder)}
    plant_sha = load_route_book(folder).route("A").sha256
    r = run_cli("routes", "show", "A", data_dir=tmp_path, env=env)
    assert r.returncode == 0, r.stderr
    header = r.stdout.splitlines()[:2]
    assert header[0].startswith("A  server  revision R2-plant")
    assert header[1] == f"sha256 {plant_sha}  from {folder / 'A.json'} (LINETRACE_ROUTES)"
    packaged = run_cli("routes", "show", "A", data_dir=tmp_path)
    assert "revision R1" in packaged.stdout and "(packaged)" in packaged.stdout
    assert plant_sha not in packaged.stdout
    check = run_cli("routes", "check", data_dir=tmp_path, env=env)
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"{folder / 'A.json'}: ok (9 steps)" in check.stdout.splitlines()
    assert f"{PRODUCTS_DIR / 'A.json'}: ok (9 steps)" not in check.stdout  # replaced
    missing = run_cli("routes", "show", "A", data_dir=tmp_path,
                      env={"LINETRACE_ROUTES": str(tmp_path / "none")})
    assert missing.returncode == 2 and "is not a folder" in missing.stderr


def test_a_worker_records_the_plant_route_on_units_it_starts(broker: str, line_dir: Path,
                                                             tmp_path: Path) -> None:
    folder = folder_with(tmp_path, "A.json", PLANT_A)
    plant_a = load_route_book(folder).route("A")
    key_file = tmp_path / "kit.key"
    assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", "kitting-07", "--type", "kitting", "--public-key",
                str(key_file) + ".pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    key = signing.load_private_key_pem(key_file.read_bytes())
    worker = Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)), line_dir / "worker.out",
                  env={"LINETRACE_ROUTES": str(folder), "LINETRACE_BATCH_WINDOW": "0.02"})
    try:
        value = encode_event(
            event_type="work.started", source="kitting-07", subject="SRV-R-1",
            time="2026-03-01T08:00:00Z", stationseq=1, event_id=str(uuid.uuid4()),
            body=b.WorkStarted(transaction_id=str(uuid.uuid4()), step=50, operation="kitting",
                               work_order="WO-1", product="A"))

        async def send() -> None:
            p = AIOKafkaProducer(bootstrap_servers=broker, acks="all")
            await p.start()
            try:
                await p.send_and_wait("line.events", value, key=b"SRV-R-1",
                                      headers=signing.sign_value(value, key))
            finally:
                await p.stop()

        asyncio.run(send())
        ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
        try:
            def route() -> tuple[str | None, str | None] | None:
                with ledger.reader() as s:
                    u = s.get(Unit, "SRV-R-1")
                    return (u.route_revision, u.route_sha256) if u is not None else None

            assert wait_for(route, timeout=90, what="the unit in the ledger") == (
                "R2-plant", plant_a.sha256), worker.tail()
        finally:
            ledger.close()
        traced = json.loads(run_cli("trace", "SRV-R-1", "--json", data_dir=line_dir).stdout)
        assert traced["route"] == {"product": "A", "revision": "R2-plant",
                                   "sha256": plant_a.sha256}
        text = run_cli("trace", "SRV-R-1", data_dir=line_dir).stdout
        assert f"route A revision R2-plant  sha256 {plant_a.sha256}" in text.splitlines()
    finally:
        worker.stop()
