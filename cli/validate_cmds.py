"""`linetrace validate SERIAL --step N --station X [--lot LOT]... [--part SERIAL]... [--json]`:
the synchronous interlock (IPC-CFX ValidateUnits / BlockMaterials).

"May unit SERIAL start step N at station X (installing parts of these lots, these part
serials)?", answered from the ledger and the holds in force by the same judgement the worker's
route stage applies to every unit event (`linetrace.ledger.interlock`). `--json` prints
`{"allowed": bool, "reasons": [{"code", "message"}]}` (a contract). Exit 0 allowed, 1 refused,
2 the question cannot be asked (a station that is not enrolled, bad arguments, no ledger).
"""

from __future__ import annotations

import argparse

from linetrace.ledger.interlock import InterlockError, validate

from .output import print_json, say
from .query_cmds import read_ledger
from .routes_cmds import routes_in_force
from .settings import ConfigurationError, Settings


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    v = subparsers.add_parser(
        "validate", parents=[common], help="may a unit start a step at a station? (interlock)",
        description="Ask the interlock whether unit SERIAL may start step N at station X: "
        "every reason it may not (on hold, station locked, required steps not completed, "
        "quality gate not passed, unknown unit, wrong station type, parts from held or "
        "never-received lots, part serials installed in another unit). Exit 0 allowed, 1 "
        "refused, 2 the question cannot be asked (unknown station, bad arguments).")
    v.add_argument("serial", metavar="SERIAL")
    v.add_argument("--step", type=int, required=True, metavar="N")
    v.add_argument("--station", required=True, metavar="X", help="the station's id")
    v.add_argument("--lot", action="append", default=[], metavar="LOT",
                   help="a lot whose parts the step would install (repeatable)")
    v.add_argument("--part", action="append", default=[], metavar="SERIAL",
                   help="a part or sub-assembly serial the step would install (repeatable)")
    v.add_argument("--json", action="store_true")
    v.set_defaults(fn=cmd_validate)


def cmd_validate(args: argparse.Namespace, settings: Settings) -> int:
    routes = routes_in_force(settings)
    ledger = read_ledger(settings)
    try:
        with ledger.reader() as session:
            verdict = validate(session, args.serial, args.step, args.station, routes=routes,
                               lots=args.lot, parts=args.part)
    except InterlockError as e:
        raise ConfigurationError(e.message, code=e.code) from None  # exit 2, its own code
    finally:
        ledger.close()
    if args.json:
        print_json(verdict.to_json())
    elif verdict.allowed:
        say(f"{args.serial} may start step {args.step} at {args.station}")
    else:
        say(f"{args.serial} may not start step {args.step} at {args.station}:")
        for r in verdict.reasons:
            say(f"  {r.code}: {r.message}")
    return 0 if verdict.allowed else 1
