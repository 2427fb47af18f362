"""Which extra a command needs: a command whose extra is not installed says which one to install.

The base install (`pip install linetrace`) has the ledger and the auditor's commands; the
others need an extra (CONTRACTS.md, Packaging and imports). The check only looks modules up
(`find_spec`): nothing is imported, so it costs nothing when the extra is there.
"""

from __future__ import annotations

import importlib.util
import sys

#: What each extra brings that the CLI checks for (the top-level module names).
EXTRA_MODULES: dict[str, tuple[str, ...]] = {
    "station": ("aiokafka",),
    "worker": ("faust", "aiokafka"),
    "console": ("fastapi", "uvicorn"),
    "gpu": ("pynvml",),
}

#: Exit status of a command whose extra is missing (a usage/configuration error).
MISSING_EXTRA_EXIT = 2


def missing_modules(modules: tuple[str, ...]) -> list[str]:
    missing = []
    for name in modules:
        if sys.modules.get(name) is not None:  # imported already (faust's module has no spec)
            continue
        try:
            found = importlib.util.find_spec(name) is not None
        except (ImportError, ValueError):
            found = False
        if not found:
            missing.append(name)
    return missing


def need_extra(extra: str, what: str = "this command") -> None:
    """Exit 2, naming the extra to install, unless the modules of `extra` are importable."""
    missing = missing_modules(EXTRA_MODULES[extra])
    if missing:
        print(f"linetrace: {what} needs the [{extra}] extra ({', '.join(missing)} not "
              f"installed): pip install 'linetrace[{extra}]'", file=sys.stderr)
        raise SystemExit(MISSING_EXTRA_EXIT)
