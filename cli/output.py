"""Printing helpers shared by the commands: JSON contract output, plain tables, and the
escaping of control characters in text that came from the ledger."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any


def printable(text: str) -> str:
    """`text` with every control or invisible formatting character (ESC, CR, BEL, bidi
    overrides, ...) written as a Python escape, e.g. `\\x1b`: what a station put in the ledger
    can never drive the terminal that prints it (clear the screen, set the window title)."""
    if text.isprintable():
        return text
    out = []
    for ch in text:
        if ch.isprintable():
            out.append(ch)
        else:
            n = ord(ch)
            out.append(f"\\x{n:02x}" if n < 0x100 else f"\\u{n:04x}" if n < 0x10000
                       else f"\\U{n:08x}")
    return "".join(out)


def say(text: str = "", *, file: Any = None) -> None:
    """Print one line of text built from ledger data, control characters escaped."""
    print(printable(text), file=file)


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, sort_keys=False, default=str)
    sys.stdout.write("\n")


def print_table(rows: Sequence[Sequence[Any]], header: Sequence[str]) -> None:
    cells = [[("" if c is None else printable(str(c))) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(header)]
    print("  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip())
    for r in cells:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def fail(message: str, code: int = 1) -> int:
    print(f"linetrace: {printable(message)}", file=sys.stderr)
    return code
