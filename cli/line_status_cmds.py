"""`linetrace line [--json]`: the line at a glance: each station's state, WIP per route step,
throughput, first-pass yield, holds in force and alerts (`ledger/line_status.py` documents
the JSON; `GET /api/v1/line` answers the same document)."""

from __future__ import annotations

import argparse
from typing import Any

from .output import print_json, print_table, say
from .settings import Settings


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:.1f}%"


def print_status(doc: dict[str, Any]) -> None:
    say(f"line clock {doc['clock']}")
    say()
    print_table([[s["id"], s["type"], s["state"].upper(), s["since"] or "-",
                  s["unit"] or "-", "" if s["step"] is None else s["step"],
                  len(s["faults_open"]) or "-", f"locked ({s['hold']})" if s["locked"] else "-"]
                 for s in doc["stations"]],
                ["STATION", "TYPE", "STATE", "SINCE", "UNIT", "STEP", "FAULTS", "HOLD"])
    say()
    if doc["wip"]:
        print_table([[w["product"], w["kind"], "-" if w["step"] is None else w["step"],
                      w["operation"] or "-", w["state"], w["units"]] for w in doc["wip"]],
                    ["PRODUCT", "KIND", "STEP", "OPERATION", "STATE", "UNITS"])
    say(f"work in progress: {doc['wip_total']} units")
    say()
    windows = doc["throughput"]["windows"]
    print_table([[name, w["completed"], w["shipped"], w["operations"]]
                 for name, w in windows.items()],
                ["LAST", "COMPLETED", "SHIPPED", "OPERATIONS"])
    say()
    if doc["first_pass_yield"]:
        print_table([[f["station"], f["type"], f["first_passes"], f["failed"], _pct(f["yield"])]
                     for f in doc["first_pass_yield"]],
                    ["STATION", "TYPE", "FIRST PASSES", "FAILED", "FIRST-PASS YIELD"])
        say()
    holds = doc["holds"]
    scopes = ", ".join(f"{n} {s}" for s, n in holds["by_scope"].items())
    say(f"holds in force: {holds['count']}" + (f" ({scopes})" if scopes else ""))
    for h in holds["list"]:
        say(f"  {h['id']}  {h['scope']} {h['target']}: {h['reason']}")
    a = doc["alerts"]
    say(f"alerts not normal: {a['total']} (" + ", ".join(
        f"{n} {p}" for p, n in a["by_priority"].items()) + ")")


def cmd_line(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.line_status import line_status

    from .query_cmds import read_ledger
    from .routes_cmds import routes_in_force

    routes = routes_in_force(settings)
    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            doc = line_status(s, routes)
    finally:
        ledger.close()
    if args.json:
        print_json(doc)
    else:
        print_status(doc)
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = ("the line at a glance: station states, WIP per step, throughput, first-pass "
             "yield, holds in force, alerts")
    p = sub.add_parser("line", parents=[common], help=help_, description=help_)
    p.add_argument("--json", action="store_true",
                   help="print {clock, stations, wip, wip_total, throughput, first_pass_yield, "
                        "holds, alerts} (ledger/line_status.py documents it)")
    p.set_defaults(fn=cmd_line)
