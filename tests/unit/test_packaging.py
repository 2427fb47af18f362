"""pyproject.toml and requirements.lock agree, and every folder of the rooms is declared.

- Every requirement of the base install and of every extra has a pin in the lock that
  satisfies it, with hashes: a dependency added to pyproject.toml without `make relock` fails
  here (and `make venv` would install without it).
- Every folder under a room that holds files is in `packages`, and every data file in it
  matches a `package-data` pattern: a new folder cannot be silently left out of the wheel (or
  print setuptools' "Package would be ignored" warnings).
"""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path
from typing import Any

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "requirements.lock"
NOT_SHIPPED = {"README.md"}  # documentation beside the code, read on GitHub


def pyproject() -> dict[str, Any]:
    return tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))


def lock_pins() -> dict[str, tuple[Version, int]]:
    """name -> (pinned version, number of hashes) of requirements.lock."""
    pins: dict[str, tuple[Version, int]] = {}
    text = LOCK.read_text(encoding="utf-8")
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        m = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if m:
            pins[canonicalize_name(m[1])] = (Version(m[2]), block.count("--hash=sha256:"))
    return pins


def requirements() -> list[tuple[str, Requirement]]:
    project = pyproject()["project"]
    out = [("base", Requirement(r)) for r in project["dependencies"]]
    for extra, reqs in project["optional-dependencies"].items():
        out += [(extra, Requirement(r)) for r in reqs]
    return out


def test_every_requirement_of_every_extra_is_pinned_with_hashes() -> None:
    pins = lock_pins()
    problems = []
    for where, req in requirements():
        name = canonicalize_name(req.name)
        if name == "linetrace":  # an extra made of other extras
            continue
        if name not in pins:
            problems.append(f"{where}: {req} is not in requirements.lock")
            continue
        version, hashes = pins[name]
        if not req.specifier.contains(version, prereleases=True):
            problems.append(f"{where}: {req} but the lock pins {version}")
        if hashes == 0:
            problems.append(f"{where}: {name} has no hash in requirements.lock")
    assert not problems, "run `make relock`:\n" + "\n".join(problems)


def test_the_lock_names_no_index_and_not_the_project_itself() -> None:
    text = LOCK.read_text(encoding="utf-8")
    live = [line for line in text.splitlines() if line and not line.lstrip().startswith("#")]
    assert not [line for line in live if line.startswith("-")], "index options in the lock"
    assert not [line for line in live if line.startswith("linetrace")]
    for name, (_, hashes) in lock_pins().items():
        assert hashes > 0, name
    # what `make venv` installs the project with (--no-build-isolation) is in the lock
    assert {"setuptools", "wheel", "pip"} <= set(lock_pins())


def test_the_all_extra_holds_every_other_extra() -> None:
    extras = pyproject()["project"]["optional-dependencies"]
    (all_req,) = [Requirement(r) for r in extras["all"]]
    assert all_req.name == "linetrace"
    assert all_req.extras == set(extras) - {"all"}


def test_every_folder_of_the_rooms_is_a_declared_package_with_its_data() -> None:
    tool = pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = tool["package-dir"]
    packages = set(tool["packages"])
    package_data: dict[str, list[str]] = tool["package-data"]
    problems = []
    for package, folder in package_dir.items():
        for d in sorted(p for p in (REPO / folder).rglob("*") if p.is_dir()):
            if d.name == "__pycache__" or not any(f.is_file() for f in d.iterdir()):
                continue
            rel = d.relative_to(REPO / folder)
            name = ".".join([package, *rel.parts])
            if name not in packages:
                problems.append(f"{d.relative_to(REPO)}: {name} is not in `packages`")
        for d in [REPO / folder, *(p for p in (REPO / folder).rglob("*") if p.is_dir())]:
            if d.name == "__pycache__":
                continue
            rel = d.relative_to(REPO / folder)
            name = ".".join([package, *rel.parts])
            for f in d.iterdir():
                if not f.is_file() or f.suffix in (".py", ".pyc") or f.name in NOT_SHIPPED:
                    continue
                if not any(fnmatch.fnmatch(f.name, pat) for pat in package_data.get(name, [])):
                    problems.append(f"{f.relative_to(REPO)}: no package-data pattern of {name} "
                                    "ships it")
    assert not problems, "\n".join(problems)
