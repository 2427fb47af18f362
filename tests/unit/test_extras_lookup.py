"""The CLI's check for an extra's modules (cli/extras.py) once they are imported already."""

from __future__ import annotations

import subprocess
import sys

from linetrace.cli.extras import missing_modules


def test_a_module_already_imported_is_not_reported_missing() -> None:
    """Faust replaces its module object with one whose __spec__ is None, on which find_spec
    raises: a process that imported it before the check (an embedding program, a wrapper
    that tunes the worker) was told to install the [worker] extra it has."""
    code = ("import faust, sys\n"
            "from linetrace.cli.extras import missing_modules\n"
            "print(missing_modules(('faust', 'aiokafka')))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip() == "[]"


def test_a_module_that_is_not_installed_is_reported() -> None:
    assert missing_modules(("linetrace_no_such_module", "json")) == ["linetrace_no_such_module"]
