"""The detectors' plant files come from settings, checked before the worker starts.

LINETRACE_GOLDEN_FIRMWARE and LINETRACE_SPC are read by the CLI's settings (rooms never read
the environment) and handed to the worker; a file that is missing or malformed starts nothing
and says which setting to fix (exit 2), and `linetrace config` lists both.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ..conftest import run_cli

pytestmark = pytest.mark.integration

NO_BROKER = {"LINETRACE_BROKER": "kafka://127.0.0.1:1"}


@pytest.mark.parametrize("setting, content", [
    ("LINETRACE_GOLDEN_FIRMWARE", '{"golden": [{"image": "bmc"}]}'),
    ("LINETRACE_GOLDEN_FIRMWARE", None),
    ("LINETRACE_SPC", "[1, 2]"),
    ("LINETRACE_SPC", None),
])
def test_a_bad_detector_file_starts_no_worker(tmp_path: Path, setting: str,
                                              content: str | None) -> None:
    path = tmp_path / "plant.json"
    if content is not None:
        path.write_text(content)
    done = run_cli("worker", data_dir=tmp_path / "data", env={**NO_BROKER, setting: str(path)})
    assert done.returncode == 2, done.stderr
    assert setting in done.stderr and str(path) in done.stderr
    assert "Traceback" not in done.stderr


def test_config_lists_the_detector_files(tmp_path: Path) -> None:
    own = tmp_path / "golden.json"
    own.write_text('{"golden": []}')
    done = run_cli("config", "--json", data_dir=tmp_path / "data",
                   env={"LINETRACE_GOLDEN_FIRMWARE": str(own)})
    assert done.returncode == 0, done.stderr
    shown = json.loads(done.stdout)
    assert shown["LINETRACE_GOLDEN_FIRMWARE"]["value"] == str(own.resolve())
    assert "LINETRACE_SPC" in shown
