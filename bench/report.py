"""The figures table and its section of docs/benchmarks.md (other sections are kept)."""

from __future__ import annotations

import os
import platform
import sqlite3
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SECTION = "## Ledger at plant scale: trace, recall, writer"


def heading(servers: int) -> str:
    """One section per scale, so a smoke run never overwrites the plant-scale figures."""
    return f"{SECTION} ({servers:,} servers)"


def machine() -> str:
    mem_kb = 0
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} CPU ({model}), {mem_kb / 1024 / 1024:.0f} GiB RAM, "
            f"Python {platform.python_version()}, SQLite {sqlite3.sqlite_version}")


def table(rows: list[tuple[str, ...]]) -> str:
    """A Markdown table; the first row is the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]

    def fmt(r: tuple[str, ...]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"

    return "\n".join([fmt(rows[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(fmt, rows[1:])])


def write_section(path: Path, body: str) -> None:
    """Replace the section with body's heading (up to the next `## `), or append it."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    title = body.split("\n", 1)[0]
    start = text.find(title + "\n")
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + body.rstrip("\n") + "\n"
    else:
        end = text.find("\n## ", start + len(title))
        end = len(text) if end < 0 else end + 1
        text = text[:start] + body.rstrip("\n") + "\n" + ("\n" + text[end:] if end < len(text)
                                                          else "")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def tree() -> str:
    """Which code was measured: HEAD, and the ledger files changed on top of it (read-only git)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "ledger", "schemas"],
                               capture_output=True, text=True, check=True).stdout.split("\n")
    except (OSError, subprocess.CalledProcessError):
        return "unknown tree"
    changed = sorted(line[3:] for line in dirty if line.strip())
    return f"commit {head}" + (f" + uncommitted {', '.join(changed)}" if changed else "")


def today() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(args: Any, seeded: dict[str, Any], results: dict[str, dict[str, Any]],
           elapsed: float, argv: list[str]) -> str:
    """This bench's section: figures beside their floors / ceilings, machine, date, command."""
    cmd = ".venv/bin/python -m bench.bench_ledger" + "".join(f" {a}" for a in argv)
    head = ("figure", *(x for db in results for x in (db, f"{db} baseline")),
            "goal / baseline is")
    rows: list[tuple[str, ...]] = [head]

    def line(label: str, key: str, base: str, goal: str) -> None:
        rows.append((label, *(x for r in results.values() for x in (str(r[key]), str(r[base]))),
                     goal))

    line(f"trace p50 / p99 ms ({args.units} servers)", "trace", "trace_floor",
         "p99 < 10 ms / bare SQL, same rows")
    line(f"recall --lot p50 / p99 ms ({args.lots} GPU lots)", "recall", "recall_floor",
         "p99 < 100 ms / one bare JOIN")
    rows.append((f"writer events/s (batch {args.batch})",
                 *(x for r in results.values() for x in (
                     f"{r['writer'].per_s:,.0f} ({r['writer'].per_s / r['ceiling'].per_s:.1%})",
                     f"{r['ceiling'].per_s:,.0f}")),
                 "- / bare executemany of the rows"))
    bd = [(f"trace breakdown ({min(200, args.units)} servers)", *results)]
    for label, attr, digits in (("SQL statements per trace", "statements", 0),
                                ("ms in the driver per trace", "sql_ms", 2),
                                ("ms per trace (instrumented)", "total_ms", 2),
                                ("ms of it in `history` alone", "history_ms", 2),
                                ("history rows per server", "history_rows", 0)):
        bd.append((label, *(f"{getattr(r['breakdown'], attr):.{digits}f}"
                            for r in results.values())))
    sizes = [("scale", *results),
             ("install rows", *(f"{r['installs']:,}" for r in results.values())),
             ("recall rows / units per GPU lot",
              *(f"{r['recall_rows']:,.0f} / {r['recall_units']:,.0f}" for r in results.values())),
             ("GPU lots", *(f"{r['gpu_lots']:,}" for r in results.values())),
             ("database size GB", *(f"{r['size_gb']:.1f}" for r in results.values())),
             ("seed s: generate + load (in parallel)",
              *(f"{d['generate_s']:.0f} + {d['load_s']:.0f}" for d in
                (seeded[("sqlite" if db == "SQLite" else "postgresql")] for db in results))),
             ("load average (1 min) while measuring", *(r["loadavg"] for r in results.values()))]
    pg = results.get("PostgreSQL", {}).get("server", "")
    return "\n".join([
        heading(args.servers), "",
        f"Measured {today()} on {machine()}{'; ' + pg if pg else ''}. "
        f"Code: {tree()}. "
        f"{args.servers:,} servers seeded in {seeded['wall_s'] / 60:.1f} min, whole run "
        f"{elapsed / 60:.1f} min. Reproduce with:", "",
        f"    {cmd}", "",
        "Warm: every query runs once before the timed pass. Each call opens a `Ledger` session "
        "(`ledger.reader()`), as a CLI command or console request does. Baselines: for trace "
        "and recall, the same rows fetched with bare driver statements on one connection (the "
        "database's share); for the writer, a bare `executemany` INSERT of the same event rows "
        "into the same database, one transaction per batch (the ceiling).", "",
        table(rows), "", table(bd), "", table(sizes), "",
    ])
