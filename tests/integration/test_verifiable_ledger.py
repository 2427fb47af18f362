"""The verifiable ledger end to end on real SQLite and PostgreSQL, and through the CLI.

A simulated server is fed through the batch writer (no broker needed), sealed, exported as
evidence and verified; then rows and leaves are edited directly in the database and
`verify-ledger` must name them, on both databases.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select, update

from linetrace.ledger import log
from linetrace.ledger.proof import merkle
from linetrace.ledger.audit import AuditReport, audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.evidence import write_evidence
from linetrace.ledger.log import LogLeaf
from linetrace.ledger.models import EventRow, Install, Operation, Unit
from linetrace.ledger.proof.verify import verify_bundle
from linetrace.ledger.records import BatchOutcome
from linetrace.ledger.writer import write_batch
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event
from tests.conftest import REPO
from tests.unit.test_log_line import (
    ORIGIN,
    PLANT,
    SIGNER,
    VKEY,
    Fed,
    feed_line,
    line,
    station_candidates,
)

pytestmark = pytest.mark.integration
PLANT_KEYID = signing.keyid_of(PLANT.public_key())


@pytest.fixture(params=["sqlite", "postgresql"])
def fed(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Fed]:
    url = (f"sqlite:///{tmp_path / 'ledger.db'}" if request.param == "sqlite"
           else request.getfixturevalue("pg_url"))
    ledger = Ledger(url)
    yield feed_line(ledger, line())
    ledger.close()


def audit(fed: Fed, held: Path | None = None) -> AuditReport:
    return audit_ledger(fed.ledger, SIGNER.verifier, PLANT_KEYID, held)


def named(report: AuditReport) -> list[str]:
    return [str(f) for f in report.findings]


def test_sealed_server_evidence_verifies_and_the_ledger_audits_clean(fed: Fed, tmp_path: Path
                                                                     ) -> None:
    write_evidence(fed.ledger, fed.server, tmp_path / "bundle", SIGNER)
    verify_bundle(tmp_path / "bundle", VKEY)
    report = audit(fed)
    assert report.findings == []
    assert report.tree_size > 100 and report.rows_compared > 200 and report.checkpoints == 1


def test_one_edited_genealogy_row_is_named_by_table_and_key(fed: Fed) -> None:
    gpu = fed.plan.servers[0].gpus[3][0]
    with fed.ledger.transaction() as s:
        row = s.scalars(select(Install).where(Install.serial == gpu)).one()
        row.lot = "LOT-COUNTERFEIT"
        event_id = row.installed_event
        siblings = s.scalars(select(Install.id).where(Install.installed_event == event_id)
                             .order_by(Install.id)).all()
        nth = siblings.index(row.id)  # rows of one event are told apart by their order
    findings = named(audit(fed))
    assert len(findings) == 1
    assert findings[0].startswith(f"edited installs [{event_id} #{nth}]")
    assert "LOT-COUNTERFEIT" in findings[0]


def test_deleted_and_inserted_rows_are_reported(fed: Fed) -> None:
    with fed.ledger.transaction() as s:
        op = s.scalars(select(Operation).order_by(Operation.id).limit(1)).one()
        s.delete(op)
        s.add(Unit(serial="SRV-GHOST", product="A", kind="server", state="shipped", step=120,
                   created=op.started, updated=op.started))
        key = f"{op.serial}, {op.transaction_id}"
    findings = named(audit(fed))
    assert any(f.startswith(f"deleted operations [{key}]") for f in findings)
    assert any(f.startswith("inserted units [SRV-GHOST]") for f in findings)


def test_one_edited_leaf_is_named_and_breaks_the_signed_root(fed: Fed) -> None:
    assert log.maybe_checkpoint(fed.ledger, SIGNER, 1, 0) is not None
    with fed.ledger.transaction() as s:
        leaf = s.get(LogLeaf, 17)
        assert leaf is not None
        s.execute(update(LogLeaf).where(LogLeaf.idx == 17)
                  .values(data=leaf.data.replace(b'"v":1', b'"v":1 ')))
    findings = named(audit(fed))
    assert any(f.startswith("edited log_leaves [idx=17]") for f in findings)
    assert any(f.startswith("invalid log_checkpoints") for f in findings)


def test_concurrent_batch_writers_share_one_log_without_gaps(fed: Fed) -> None:
    # The fixture's stations already sent numbers 1..len(fed.candidates) on their partitions:
    # the second line's events go on from there (restarting at 1 would reuse numbers, which
    # the writer rightly quarantines as seq.reordered).
    more = station_candidates(line(units=2, seed=9), first_seq=len(fed.candidates))
    other = Ledger(fed.ledger.url)
    # One unit is written by one worker (its partition's); the log is shared by both.
    second = [c for c in more if c.event.subject.endswith("000002")]
    halves = [[c for c in more if c not in second], second]
    assert {(c.record.topic, c.record.partition) for c in halves[0]}.isdisjoint(
        (c.record.topic, c.record.partition) for c in halves[1])  # one partition, one writer
    outcomes: list[BatchOutcome] = []
    errors: list[BaseException] = []

    def run(ledger: Ledger, cands: list) -> None:  # type: ignore[type-arg]
        try:
            for k in range(0, len(cands), 7):
                outcomes.append(write_batch(ledger, cands[k : k + 7]))
        except BaseException as e:  # noqa: BLE001
            errors.append(e)

    threads = [threading.Thread(target=run, args=(lg, h))
               for lg, h in zip((fed.ledger, other), halves, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    other.close()
    assert not errors
    # What went in came out: every event stored once, none rejected, none taken for a duplicate.
    assert [r.code for o in outcomes for r in o.rejections] == []
    assert sum(o.duplicates for o in outcomes) == 0
    assert sorted(c.event.id for o in outcomes for c in o.stored) == sorted(
        c.event.id for c in more)
    with fed.ledger.reader() as s:
        ids = set(s.scalars(select(EventRow.event_id)))
        assert {c.event.id for c in more} <= ids
        data = list(s.scalars(select(LogLeaf.data).order_by(LogLeaf.idx)))
        size = log.tree_size(s)
        assert size == len(data) == len([e for e in s.scalars(select(EventRow))
                                         if log.is_leaf_bearing(decode_event(e.value))])
        assert log.root_at(s, size) == merkle.MemoryTree.from_data(data).root()
    assert audit(fed).findings == []


# --- CLI --------------------------------------------------------------------------------------


class Cli:
    """`linetrace` in this process (a subprocess costs a second of imports per command)."""

    def __init__(self, data: Path, capsys: pytest.CaptureFixture[str]) -> None:
        self.data, self.capsys = data, capsys

    def __call__(self, *args: str) -> tuple[int, str]:
        from linetrace.cli import main as cli_main

        self.capsys.readouterr()
        code = cli_main.main([*args, "--data-dir", str(self.data)])
        out = self.capsys.readouterr()
        return code, out.out + out.err


def test_linetrace_registers_the_proof_commands() -> None:
    from linetrace.cli.main import build_parser

    commands = {name for action in build_parser()._actions
                if isinstance(action, argparse._SubParsersAction) for name in action.choices}
    missing = [c for c in ("checkpoint", "hbom", "evidence", "verify", "verify-ledger")
               if c not in commands]
    assert not missing, f"add 'proof_cmds' to cli/main.py COMMAND_MODULES (missing {missing})"


@pytest.fixture
def cli(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
        ) -> Iterator[tuple[Cli, Fed]]:
    from linetrace.cli import main as cli_main

    modules = getattr(cli_main, "COMMAND_MODULES", ())
    if "proof_cmds" not in modules:  # until cli/main.py lists it (checked above)
        monkeypatch.setattr(cli_main, "COMMAND_MODULES", (*modules, "proof_cmds"), raising=False)
    monkeypatch.setenv("LINETRACE_ORIGIN", ORIGIN)
    for var in ("LINETRACE_DB", "LINETRACE_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    data = tmp_path / "data"
    (data / "keys").mkdir(parents=True)
    (data / "keys" / "plant.key").write_bytes(signing.private_key_pem(PLANT))
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    fed = feed_line(ledger, line())
    yield Cli(data, capsys), fed
    ledger.close()


def test_cli_checkpoint_hbom_evidence_verify_and_verify_ledger(
        cli: tuple[Cli, Fed], tmp_path: Path) -> None:
    run, fed = cli
    code, out = run("checkpoint", "--json", "--export", str(tmp_path / "held"))
    assert code == 0, out
    doc = json.JSONDecoder().raw_decode(out[out.index("{"):])[0]  # stdout, then stderr
    assert doc["verifier_key"] == VKEY and doc["checkpoint"].startswith(f"{ORIGIN}\n")
    assert (tmp_path / "held" / "checkpoints").is_dir()

    assert run("hbom", fed.server, "-o", str(tmp_path / "h.json"))[0] == 0
    code, out = run("evidence", fed.server, "-o", str(tmp_path / "bundle"))
    assert code == 0, out
    assert (tmp_path / "h.json").read_bytes() == (tmp_path / "bundle" / "hbom.cdx.json"
                                                  ).read_bytes()

    code, out = run("verify", str(tmp_path / "bundle"), "--key", VKEY, "--checkpoints",
                    str(tmp_path / "held"))
    assert code == 0, out
    assert [line.split()[1] for line in out.splitlines() if line.startswith("ok")] == [
        "bundle", "checkpoint", "history", "inclusion", "manifest", "leaves", "signatures",
        "statements", "unit-chain", "hbom-seal", "hbom-parts", "materials", "telemetry",
        "consistency"]

    hbom = tmp_path / "bundle" / "hbom.cdx.json"
    hbom.write_bytes(hbom.read_bytes().replace(b'"1.6"', b'"1.5"'))
    code, out = run("verify", str(tmp_path / "bundle"), "--key", VKEY)
    assert code == 1 and "FAIL  hbom-seal" in out

    code, out = run("verify-ledger", "--checkpoints", str(tmp_path / "held"))
    assert code == 0, out
    with fed.ledger.transaction() as s:
        s.execute(update(Unit).where(Unit.serial == fed.server).values(state="in_progress"))
    code, out = run("verify-ledger")
    assert code == 1
    assert f"edited units [{fed.server}]: state: 'in_progress' in the table" in out


def test_verify_is_a_standalone_command_that_needs_no_database(
        cli: tuple[Cli, Fed], tmp_path: Path) -> None:
    run, fed = cli
    assert run("evidence", fed.server, "-o", str(tmp_path / "bundle"))[0] == 0
    (tmp_path / "key.txt").write_text(VKEY + "\n")
    boot = ("import sys; from linetrace.cli import main as m; "
            "m.COMMAND_MODULES = tuple(dict.fromkeys((*getattr(m, 'COMMAND_MODULES', ()), "
            "'proof_cmds'))); sys.exit(m.main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LINETRACE_")}
    done = subprocess.run([sys.executable, "-c", boot, "verify", str(tmp_path / "bundle"),
                           "--key", str(tmp_path / "key.txt"), "--data-dir",
                           str(tmp_path / "nowhere")], capture_output=True, text=True,
                          timeout=120, cwd=REPO, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "verified: every check passed" in done.stdout
    assert not (tmp_path / "nowhere").exists()


def test_a_log_rewritten_and_resigned_with_the_plant_key_is_caught_by_held_checkpoints(
        cli: tuple[Cli, Fed], tmp_path: Path) -> None:
    run, fed = cli
    assert run("checkpoint", "--export", str(tmp_path / "held"))[0] == 0
    # An insider replays history minus one inconvenient test result into a fresh database,
    # adds later history on top and signs new checkpoints with the same plant key...
    fed.ledger.close()
    for name in ("ledger.db", "ledger.db-wal", "ledger.db-shm"):
        (run.data / name).unlink(missing_ok=True)
    forged = Ledger(f"sqlite:///{run.data / 'ledger.db'}")
    failed = next(c.event.id for c in station_candidates(line())
                  if c.event.type == "unit.tested" and c.event.subject == fed.server)
    feed_line(forged, line(), keep=lambda c: c.event.id != failed)
    feed_line(forged, line(units=1, seed=11), first_seq=10_000)
    forged.close()
    # ...so the rewritten log is consistent with itself,
    assert run("checkpoint")[0] == 0
    code, out = run("verify-ledger")
    assert code == 0, out
    # but not with the checkpoints a customer exported before.
    code, out = run("verify-ledger", "--checkpoints", str(tmp_path / "held"))
    assert code == 1
    assert "invalid held-checkpoints [size=" in out
