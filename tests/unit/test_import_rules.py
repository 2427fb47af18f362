"""The rooms' one-way import rules (DESIGN.md) are import-linter contracts in pyproject.toml.

`make test` runs `lint-imports`; these tests run it too, on the installed tree (every rule
kept) and on a copy of it with forbidden imports added (each reported, naming both modules).
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import linetrace.schemas

from ..conftest import REPO, need

CONFIG = REPO / "pyproject.toml"

#: Runs lint-imports without site's `.pth` files (`-S`), so the `linetrace` it finds is the tree
#: in argv[1], not the strict-editable install of the checkout; argv[3:] are site-packages.
LINT = """
import sys
sys.path[:0] = [sys.argv[1]]
sys.path += sys.argv[3:]
from importlinter.cli import lint_imports_command
sys.argv = ["lint-imports", "--no-cache", sys.argv[2]]
lint_imports_command()
"""


def lint(tree: Path | None) -> subprocess.CompletedProcess[str]:
    need(importlib.util.find_spec("importlinter") is not None,
         "import-linter (pip install import-linter)")
    if tree is None:
        cmd = [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
               "import sys; sys.argv = ['lint-imports', '--no-cache', sys.argv[1]]; "
               "lint_imports_command()", str(CONFIG)]
    else:
        site = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
        cmd = [sys.executable, "-S", "-c", LINT, str(tree), str(CONFIG), *site]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=tree or REPO)


def installed_copy(tmp_path: Path) -> Path:
    """A copy of the installed `linetrace` tree (links stay links: strict-editable files)."""
    source = Path(linetrace.schemas.__file__).parents[1]
    shutil.copytree(source, tmp_path / "linetrace", symlinks=True,
                    ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_rooms_keep_their_import_rules() -> None:
    out = lint(None)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout and " BROKEN" not in out.stdout


def test_a_forbidden_import_is_reported_naming_both_modules(tmp_path: Path) -> None:
    tree = installed_copy(tmp_path)
    (tree / "linetrace/ledger/proof/forbidden_probe.py").write_text(
        "from linetrace.ledger import db\nimport sqlalchemy\n")
    (tree / "linetrace/stations/forbidden_probe.py").write_text(
        "\n\nfrom linetrace.ledger.proof import merkle\n")
    (tree / "linetrace/schemas/forbidden_probe.py").write_text(
        "import linetrace.cli.settings\n")
    out = lint(tree)
    text = out.stdout + out.stderr
    assert out.returncode == 1, text
    assert "ledger.proof imports no database code and no ledger module outside proof BROKEN" in text
    assert "linetrace.ledger.proof.forbidden_probe -> linetrace.ledger.db (l.1)" in text
    assert "linetrace.ledger.proof.forbidden_probe -> sqlalchemy (l.2)" in text
    assert "stations imports schemas only (no Faust, no SQL) BROKEN" in text
    assert "linetrace.stations.forbidden_probe -> linetrace.ledger.proof.merkle (l.3)" in text
    assert "no room imports console or cli BROKEN" in text
    assert "linetrace.schemas.forbidden_probe -> linetrace.cli.settings (l.1)" in text
    # the rules the probes do not touch still hold on the copy
    assert "streams imports schemas and ledger only KEPT" in text
