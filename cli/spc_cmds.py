"""`linetrace spc`: the SPC charts, their frozen limits and state (issue 12, DOMAIN.md §5).

One individuals / moving-range chart per (station type, measurement) of the station types
`ledger/data/spc.json` (or LINETRACE_SPC) charts; docs/detection.md explains the rules and
when a chart is out of control.
"""

from __future__ import annotations

import argparse
import os

from linetrace.ledger.spc_views import FIELDS

from .output import print_json, print_table
from .settings import Settings


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.6g}"


def cmd_spc(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.spc_rules import load_config
    from linetrace.ledger.spc_views import spc_document

    from .query_cmds import read_ledger

    config = load_config(os.environ.get("LINETRACE_SPC") or None)
    ledger = read_ledger(settings)
    try:
        with ledger.reader() as s:
            rows = spc_document(s, config)
    finally:
        ledger.close()
    if args.json:
        print_json(rows)
        return 0
    if not rows:
        print("no SPC charts yet (charted station types: "
              f"{', '.join(sorted(config.station_types)) or 'none'})")
        return 0
    print_table([[f"{r['station_type']}/{r['measurement']}", r["test"] or "-", r["unit"] or "-",
                  _num(r["centre"]), f"{_num(r['lcl'])}..{_num(r['ucl'])}", r["points"],
                  r["state"], (f"{','.join(r['last_violation']['rules'])} "
                               f"{r['last_violation']['unit']} {r['last_violation']['time']}")
                  if r["last_violation"] else "-"] for r in rows],
                ["CHART", "TEST", "UNIT", "CENTRE", "LIMITS", "POINTS", "STATE",
                 "LAST VIOLATION"])
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    help_ = ("SPC charts per (station type, measurement): frozen limits, points, state and "
             "the last rule violation")
    p = sub.add_parser("spc", parents=[common], help=help_, description=help_)
    p.add_argument("--json", action="store_true",
                   help="print a list of {" + ", ".join(FIELDS) + "}")
    p.set_defaults(fn=cmd_spc)
