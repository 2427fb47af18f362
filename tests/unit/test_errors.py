"""One error base: every error linetrace raises on purpose is a LinetraceError with a stable
`code` and a `retriable` flag, and the CLI turns it into exit 2 (usage, configuration) or 1
(a failed check or operation), printing the message and the code."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from linetrace.cli.main import USAGE_CODES, exit_status, report_error
from linetrace.cli.settings import ConfigurationError
from linetrace.ledger.errors import LedgerError
from linetrace.ledger.proof.errors import NoteBadSignature
from linetrace.ledger.proof.verify import VerificationFailed
from linetrace.schemas.errors import ForgedEvent, LinetraceError, SchemaError
from linetrace.stations.errors import StationError
from linetrace.streams.errors import BrokerError, StreamsError

from ..conftest import REPO

ROOMS = ("schemas", "stations", "ledger", "streams", "console", "cli")
#: Exceptions used for control flow inside one module, never raised to a caller.
PRIVATE = {"stations/sender.py:_Retry", "stations/burnin/nvml.py:_NoAnswer",
           "cli/supervisor.py:Interrupted",
           "ledger/proof/hbom_json.py:_Unsupported"}  # control flow: the library serialises


def test_each_rooms_errors_are_under_the_one_base() -> None:
    for base in (SchemaError, StationError, LedgerError, StreamsError, ConfigurationError):
        assert issubclass(base, LinetraceError)
    for cls in (ForgedEvent, NoteBadSignature, VerificationFailed, BrokerError):
        assert issubclass(cls, LinetraceError)


def test_no_other_error_class_derives_from_exception_directly() -> None:
    """The only `class X(Exception)` in the package is LinetraceError (and private ones)."""
    direct = []
    for room in ROOMS:
        for path in sorted((REPO / room).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ClassDef) and any(
                        isinstance(b, ast.Name) and b.id in ("Exception", "BaseException")
                        for b in node.bases):
                    direct.append(f"{path.relative_to(REPO).as_posix()}:{node.name}")
    assert sorted(set(direct) - PRIVATE) == ["schemas/errors.py:LinetraceError"]


def test_code_retriable_and_message_are_carried() -> None:
    e = StationError("the spool is full", code="station.spool_full", retriable=True)
    assert (e.code, e.retriable, e.message) == ("station.spool_full", True, "the spool is full")
    assert str(e) == "[station.spool_full] the spool is full"  # stations' own format, kept
    plain = LedgerError("no such lot")
    assert (plain.code, plain.retriable, str(plain)) == ("ledger.error", False, "no such lot")
    failed = VerificationFailed("history", "history/x.txt: bad")
    assert failed.code == "verify.history" and failed.check == "history"
    assert VerificationFailed.code == "verify.failed"  # the instance's code did not leak


@pytest.mark.parametrize("error,status", [
    (ConfigurationError("LINETRACE_BATCH_SIZE must be >= 1"), 2),
    (StationError("unknown fault 'x'", code="simulator.unknown_fault"), 2),
    (LedgerError("a query names no such lot", code="recall.query"), 2),
    (LedgerError("no events of unit 'X'", code="unit.unknown"), 1),
    (VerificationFailed("inclusion", "leaf 3"), 1),
    (BrokerError("no broker", code="broker.start", retriable=True), 1),
])
def test_the_cli_maps_errors_to_exit_codes_printing_code_and_message(
        error: LinetraceError, status: int, capsys: pytest.CaptureFixture[str]) -> None:
    assert exit_status(error) == report_error(error) == status
    err = capsys.readouterr().err
    assert err.startswith(f"linetrace: {error.message} [{error.code}]")
    assert ("retriable" in err) == error.retriable


def test_usage_codes_are_documented() -> None:
    text = (REPO / "docs" / "errors.md").read_text()
    for code in USAGE_CODES:
        assert f"`{code}`" in text, code


def run(*args: str, env: dict[str, str] | None = None, data: Path
        ) -> subprocess.CompletedProcess[str]:
    import os

    return subprocess.run([sys.executable, "-m", "linetrace.cli.main", *args, "--data-dir",
                           str(data)], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_a_bad_setting_exits_2_and_a_failed_operation_exits_1(tmp_path: Path) -> None:
    done = run("config", data=tmp_path, env={"LINETRACE_BATCH_SIZE": "many"})
    assert done.returncode == 2
    assert done.stderr.startswith("linetrace: a numeric LINETRACE_* setting is not a number")
    assert done.stderr.rstrip().endswith("[config.invalid]")
    assert run("db", "upgrade", data=tmp_path).returncode == 0
    done = run("hbom", "NO-SUCH-UNIT", data=tmp_path)
    assert done.returncode == 1
    assert "NO-SUCH-UNIT" in done.stderr and "[unit.unknown]" in done.stderr
