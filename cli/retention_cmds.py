"""`linetrace telemetry prune`: the retention policy of raw burn-in telemetry (issue 10, goal 7).

Raw telemetry (`line.telemetry`) is kept LINETRACE_TELEMETRY_RETENTION_DAYS (or
`--older-than-days`) by event time; then its bytes are dropped and each event's SHA-256 stays,
so the telemetry commitment of a `burnin.verdict` stays checkable forever (docs/operations.md).
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from .flags_cmds import rfc3339
from .output import fail, print_json
from .settings import ConfigurationError, Settings


def cmd_telemetry_prune(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.retention import prune_telemetry

    from .ledger_cmds import open_ledger

    days = args.older_than_days if args.older_than_days is not None \
        else settings.telemetry_retention_days
    if not 1 <= days < 100_000:
        raise ConfigurationError(f"--older-than-days {days:g}: keep raw telemetry at least 1 day "
                                 "(the burn-in verdict is computed from it)")
    cutoff = datetime.now(UTC) - timedelta(days=days)
    ledger = open_ledger(settings)
    try:
        rep = prune_telemetry(ledger, cutoff)
    finally:
        ledger.close()
    out: dict[str, Any] = {
        "older_than_days": days, "cutoff": rfc3339(cutoff), "pruned": rep.pruned,
        "bytes_dropped": rep.bytes_dropped, "kept_open_failures": rep.kept_open_failures,
        "mismatched": rep.mismatched}
    if args.json:
        print_json(out)
    else:
        print(f"pruned {rep.pruned} telemetry events with event time before {out['cutoff']} "
              f"({rep.bytes_dropped:,} bytes of events); their SHA-256 digests remain")
        if rep.kept_open_failures:
            print(f"kept {rep.kept_open_failures} that a stage still owes a decision for "
                  "(open stage failures); they are pruned once resolved")
    if rep.mismatched:
        shown = ", ".join(rep.mismatched[:5]) + (" ..." if len(rep.mismatched) > 5 else "")
        return fail(f"{len(rep.mismatched)} telemetry rows no longer match their SHA-256 digest "
                    f"and were kept for inspection ({shown}); run `linetrace verify-ledger`")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    t = sub.add_parser("telemetry", help="raw burn-in telemetry: retention").add_subparsers(
        dest="telemetry_cmd", required=True, metavar="COMMAND")
    help_ = ("drop the raw bytes of burn-in telemetry older than the retention period (by event "
             "time), keeping each event's SHA-256 and every other column")
    p = t.add_parser("prune", parents=[common], help=help_, description=help_)
    p.add_argument("--older-than-days", type=float, metavar="N",
                   help="retention in days (default $LINETRACE_TELEMETRY_RETENTION_DAYS, 90)")
    p.add_argument("--json", action="store_true",
                   help="print {older_than_days, cutoff, pruned, bytes_dropped, "
                        "kept_open_failures, mismatched}")
    p.set_defaults(fn=cmd_telemetry_prune)
