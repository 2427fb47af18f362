"""Several processes on one SQLite ledger at once (issue 8, item 22): nothing lost, no
"database is locked", one plant key.

Real processes: `linetrace stations enroll` run eight at a time on a fresh data dir, and two
writer processes (this module run as `python -m tests.integration.test_sqlite_processes
writer ...`) writing a simulated line, each the partitions a worker would own.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from sqlalchemy import select

from linetrace.ledger import log
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.models import EventRow
from linetrace.ledger.proof import merkle
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event

from ..conftest import linetrace_cmd, run_cli, wait_for

pytestmark = pytest.mark.integration


# --- the writer program ----------------------------------------------------------------------

def half(i: int) -> list:  # type: ignore[type-arg]
    """The candidates of one writer: the partitions a worker would own (test_log's split)."""
    from tests.unit.test_log_line import line, station_candidates

    return [c for c in station_candidates(line(2)) if (c.record.partition % 4 == 3) == (i == 0)]


def writer_main(argv: list[str]) -> int:
    """Write half `argv[1]` of the line into ledger URL `argv[0]` in batches of 5, once the
    file `argv[2]` exists; print what came out as JSON."""
    from linetrace.ledger.writer import write_batch

    url, which, go = argv[0], int(argv[1]), Path(argv[2])
    cands = half(which)
    ledger = Ledger(url)
    wait_for(go.exists, 60, 0.01, what="the start signal")
    stored: list[str] = []
    rejected: list[str] = []
    duplicates = 0
    for k in range(0, len(cands), 5):
        out = write_batch(ledger, cands[k : k + 5])
        stored += [c.event.id for c in out.stored]
        rejected += [r.code for r in out.rejections]
        duplicates += out.duplicates
    ledger.close()
    print(json.dumps({"stored": stored, "rejected": rejected, "duplicates": duplicates}))
    return 0


# --- the tests -------------------------------------------------------------------------------

def test_eight_enrolments_at_once_on_a_fresh_data_dir_all_land(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    keys = []
    for i in range(8):
        key = tmp_path / f"ict-{i}.key"
        assert run_cli("stations", "keygen", "--out", str(key), data_dir=tmp_path / "kg"
                       ).returncode == 0
        keys.append(key)
    procs = [subprocess.Popen(linetrace_cmd("stations", "enroll", f"ict-6{i}", "--type", "ict",
                                            "--public-key", f"{key}.pub",
                                            "--data-dir", str(data)),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i, key in enumerate(keys)]
    results = [(p.wait(120), *p.communicate()) for p in procs]
    assert [r[0] for r in results] == [0] * 8, [r[2] for r in results]
    assert not any("locked" in err for _, _, err in results)
    r = run_cli("stations", "list", "--json", data_dir=data)
    assert r.returncode == 0, r.stderr
    assert sorted(s["station_id"] for s in json.loads(r.stdout)) == [f"ict-6{i}" for i in range(8)]
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    with ledger.reader() as s:
        rows = s.scalars(select(EventRow).where(EventRow.type == "station.enrolled")).all()
        assert sorted(r.subject for r in rows) == [f"ict-6{i}" for i in range(8)]
        plant, _ = load_or_create_plant_key(data / "keys")
        assert {r.keyid for r in rows} == {signing.keyid_of(plant.public_key())}  # one plant key
    ledger.close()
    verify = run_cli("verify-ledger", data_dir=data)
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_the_plant_key_is_created_once_whoever_asks_first(tmp_path: Path) -> None:
    """Twelve first users at the same instant: each gets the one key, none an error (a loser
    of the race used to hit FileExistsError, or read the file half written)."""
    for trial in range(20):
        keys_dir = tmp_path / f"keys-{trial}"
        start = threading.Barrier(12)
        got: list[str] = []
        errors: list[BaseException] = []

        def first_use() -> None:
            start.wait()
            try:
                key, _ = load_or_create_plant_key(keys_dir)  # noqa: B023 - joined below
                got.append(signing.keyid_of(key.public_key()))  # noqa: B023
            except BaseException as e:  # noqa: BLE001
                errors.append(e)  # noqa: B023

        threads = [threading.Thread(target=first_use) for _ in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert errors == [] and len(got) == 12 and len(set(got)) == 1, (trial, errors[:3])
        assert sorted(p.name for p in keys_dir.iterdir()) == ["plant.key", "plant.pub"]


def test_two_writer_processes_share_one_ledger_nothing_lost_nothing_locked(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    Ledger(url).close()  # the schema exists; each writer opens it as a worker would
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-m", "tests.integration.test_sqlite_processes",
                               "writer", url, str(i), str(go)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    go.touch()
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [err[-2000:] for _, err in outs]
    for i, (out, err) in enumerate(outs):
        assert "locked" not in err
        result = json.loads(out)
        assert (result["rejected"], result["duplicates"]) == ([], 0)
        assert result["stored"] == [c.event.id for c in half(i)]  # what went in came out
    ledger = Ledger(url)
    with ledger.reader() as s:
        rows = s.scalars(select(EventRow)).all()
        assert sorted(r.event_id for r in rows) == sorted(c.event.id for i in (0, 1)
                                                          for c in half(i))
        data = list(s.scalars(select(log.LogLeaf.data).order_by(log.LogLeaf.idx)))
        bearing = [r for r in rows if log.is_leaf_bearing(decode_event(r.value))]
        assert log.tree_size(s) == len(data) == len(bearing) > 100
        assert log.root_at(s, len(data)) == merkle.MemoryTree.from_data(data).root()
    ledger.close()


if __name__ == "__main__" and sys.argv[1:2] == ["writer"]:
    sys.exit(writer_main(sys.argv[2:]))
