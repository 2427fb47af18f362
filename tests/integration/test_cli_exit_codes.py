"""The `linetrace` exit codes across commands (issue 8, item 22; docs/errors.md): 2 for a usage
or configuration error, 1 for a failed check or operation, 0 when done; either way one
`linetrace: <message> [<code>]` line, never a traceback.

Each case runs the real command in a process of its own, on a small fixed ledger
(`cli_ledger.build_ledger`) or on none.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from ..conftest import run_cli
from .cli_ledger import PCBA, SERVER, build_ledger

pytestmark = pytest.mark.integration

NO_BROKER = {"LINETRACE_BROKER": "kafka://127.0.0.1:1"}  # nothing listens there
BAD_DB = {"LINETRACE_DB": "mysql://db.example/ledger"}

#: (id, args, env, exit code, what stderr must say). "{data}" is the fixed ledger's data dir,
#: "{tmp}" a fresh folder of the test's own.
CASES: list[tuple[str, tuple[str, ...], dict[str, str], int, str]] = [
    # usage and configuration: exit 2
    ("config: a bad number", ("config",), {"LINETRACE_BATCH_SIZE": "many"}, 2,
     "[config.invalid]"),
    ("units: a bad log level", ("units",), {"LINETRACE_LOG_LEVEL": "loud"}, 2, "[config.invalid]"),
    ("units: a database URL of no use", ("units",), BAD_DB, 2, "[db.config]"),
    ("db upgrade: a database URL of no use", ("db", "upgrade"), BAD_DB, 2, "[db.config]"),
    ("wip: no ledger", ("wip", "--data-dir", "{tmp}/none"), {}, 2, "[db.missing]"),
    ("units: an out-of-date ledger", ("units", "--data-dir", "{tmp}/old"), {}, 2,
     "[db.schema_out_of_date]"),
    ("rejected: --since not RFC 3339", ("rejected", "--since", "yesterday"), {}, 2,
     "[config.invalid]"),
    ("recall: no selector", ("recall",), {}, 2, "one of the arguments --lot --part --mpn"),
    ("units: an unknown option", ("units", "--bogus"), {}, 2, "unrecognized arguments"),
    ("routes show: an unknown product", ("routes", "show", "Z"), {}, 2, "no route for product"),
    ("routes check: a missing file", ("routes", "check", "{tmp}/none.json"), {}, 2,
     "cannot read"),
    ("stations enroll: an unreadable key", ("stations", "enroll", "ict-09", "--type", "ict",
                                            "--public-key", "{tmp}/none.pub"), {}, 2,
     "cannot read public key"),
    ("simulate: an unknown fault", ("simulate", "--faults", "nosuch", "--units", "1"), {}, 2,
     "[simulator.unknown_fault]"),
    ("worker: no broker configured", ("worker", "--data-dir", "{tmp}/nobroker"), {}, 2,
     "[config.invalid]"),
    ("worker: LINETRACE_ROUTES not a folder", ("worker",),
     {**NO_BROKER, "LINETRACE_ROUTES": "{tmp}/none"}, 2, "[config.invalid]"),
    ("up: LINETRACE_ROUTES not a folder", ("up", "--units", "1"),
     {"LINETRACE_ROUTES": "{tmp}/none"}, 2, "[config.invalid]"),
    ("burnin: an unknown SKU", ("burnin", "--unit", "SRV-X", "--sku", "NOPE"), {}, 2,
     "invalid choice"),
    ("evidence: into a folder that is not empty", ("evidence", SERVER, "-o", "{tmp}/full"), {},
     2, "[evidence.exists]"),
    ("telemetry prune: a retention under a day", ("telemetry", "prune", "--older-than-days",
                                                  "0"), {}, 2, "[config.invalid]"),
    ("telemetry prune: a bad LINETRACE_TELEMETRY_RETENTION_DAYS", ("telemetry", "prune"),
     {"LINETRACE_TELEMETRY_RETENTION_DAYS": "soon"}, 2, "[config.invalid]"),
    # a failed check or operation: exit 1
    ("trace: an unknown unit", ("trace", "SRV-NONE-1"), {}, 1, "[unit.unknown]"),
    ("hbom: an unknown unit", ("hbom", "SRV-NONE-1"), {}, 1, "[unit.unknown]"),
    ("recall: a lot never seen", ("recall", "--lot", "LOT-NONE"), {}, 1, "[recall.unknown]"),
    ("lots show: a lot never received", ("lots", "show", "LOT-NONE"), {}, 1, "never received"),
    ("stations show: a station not enrolled", ("stations", "show", "nope-01"), {}, 1,
     "is not enrolled"),
    ("stations enroll: a key enrolled already", (
        "stations", "enroll", "ict-09", "--type", "ict", "--public-key", "{data}/keys/plant.pub"),
     {}, 1, "already enrolled"),
    ("evidence: a unit never sealed", ("evidence", PCBA + "-NONE", "-o", "{tmp}/ev"), {}, 1,
     "no unit.sealed"),
    ("verify: not a bundle", ("verify", "{tmp}/none", "--key", "k"), {}, 1, "[verify."),
    ("verify-ledger: an edited row", ("verify-ledger", "--data-dir", "{tmp}/edited"), {}, 1,
     "[ledger.tampered]"),
    ("topics: the broker cannot be reached", ("topics",), NO_BROKER, 1, "[broker.unreachable]"),
    # done
    ("units", ("units",), {}, 0, ""),
    ("verify-ledger", ("verify-ledger",), {}, 0, ""),
    ("telemetry prune", ("telemetry", "prune", "--data-dir", "{tmp}/edited"), {}, 0, ""),
]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("fixed") / "data"
    build_ledger(d).close()
    return d


@pytest.fixture
def tmp(tmp_path: Path, data: Path) -> Path:
    """Folders some cases need: a non-empty one, an out-of-date ledger, an edited one."""
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    for name in ("old", "edited"):
        shutil.copytree(data, tmp_path / name)
    with sqlite3.connect(tmp_path / "old" / "ledger.db") as db:
        db.execute("UPDATE alembic_version SET version_num = 'a0c970f6a6d7'")
    with sqlite3.connect(tmp_path / "edited" / "ledger.db") as db:
        db.execute("UPDATE installs SET lot = 'LOT-FAKE' WHERE id = (SELECT min(id) FROM installs)")
    return tmp_path


@pytest.mark.parametrize("args,env,code,says", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_each_command_exits_2_for_usage_1_for_a_failed_operation_0_when_done(
        data: Path, tmp: Path, args: tuple[str, ...], env: dict[str, str], code: int,
        says: str) -> None:
    def fill(s: str) -> str:
        return s.replace("{data}", str(data)).replace("{tmp}", str(tmp))

    argv = [fill(a) for a in args]
    if "--data-dir" in argv:  # the case's own data dir; run_cli's comes last and would win
        at = argv.index("--data-dir")
        data_dir, argv = Path(argv[at + 1]), argv[:at] + argv[at + 2:]
    else:
        data_dir = data
    r = run_cli(*argv, data_dir=data_dir, env={k: fill(v) for k, v in env.items()}, timeout=60)
    assert "Traceback" not in r.stderr, r.stderr
    assert r.returncode == code, (r.stdout[-1000:], r.stderr[-2000:])
    assert says in r.stderr, r.stderr
    if code:
        last = [ln for ln in r.stderr.splitlines() if ln.startswith("linetrace")][-1:]
        assert last, r.stderr  # one line naming the problem, from linetrace itself
