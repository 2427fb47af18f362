"""`linetrace flags`: accepted events flagged for a person to look at (issue 8, item 5).

The first flags come from the line clock: an event whose time is more than
LINETRACE_CLOCK_BOUND_SECONDS from its partition's clock (`time.far_from_clock`), and the event
that reset a clock after several such events agreed (`time.clock_reset`). Flagged events are
stored like any other; a flag never refuses anything.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from .output import print_json, print_table
from .settings import Settings

FIELDS = ("id", "kind", "recorded", "topic", "partition", "source", "event_id", "type",
          "subject", "event_time", "clock", "message")


def rfc3339(t: datetime | None) -> str | None:
    """RFC 3339 UTC with milliseconds; four-digit years also before 1000 (0001-01-01...)."""
    if t is None:
        return None
    t = (t if t.tzinfo else t.replace(tzinfo=UTC)).astimezone(UTC)
    return (f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:"
            f"{t.second:02d}.{t.microsecond // 1000:03d}Z")


def cmd_flags(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.flags import list_flags

    from .query_cmds import read_ledger

    ledger = read_ledger(settings)
    try:
        flags = list_flags(ledger, kind=args.kind, limit=args.limit)
    finally:
        ledger.close()
    rows: list[dict[str, Any]] = [{
        "id": f.id, "kind": f.kind, "recorded": rfc3339(f.recorded), "topic": f.topic,
        "partition": f.partition, "source": f.source, "event_id": f.event_id, "type": f.type,
        "subject": f.subject, "event_time": rfc3339(f.event_time), "clock": rfc3339(f.clock),
        "message": f.message} for f in flags]
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no flags")
        return 0
    print_table([[r["id"], r["kind"], r["event_time"], r["clock"] or "-",
                  f"{r['topic']}[{r['partition']}]", r["source"], r["type"], r["subject"]]
                 for r in rows],
                ["ID", "KIND", "EVENT TIME", "LINE CLOCK", "PARTITION", "STATION", "TYPE", "SUBJECT"])
    print(f"{len(rows)} flag{'s' if len(rows) != 1 else ''}")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = ("accepted events flagged for a person (an event time far from its partition's line "
             "clock); oldest first")
    p = sub.add_parser("flags", parents=[common], help=help_, description=help_)
    p.add_argument("--kind", help="only this kind, e.g. time.far_from_clock or time.clock_reset")
    p.add_argument("--limit", type=int, help="at most this many")
    p.add_argument("--json", action="store_true",
                   help="print a list of {" + ", ".join(FIELDS) + "}")
    p.set_defaults(fn=cmd_flags)
