"""`linetrace hold place|release`, `linetrace holds`, `linetrace disposition`: holds signed by
the person who runs the command (LINETRACE_USER_KEY).

Each action is a statement signed with the person's own key and recorded in the ledger as
plant-signed system events with the commands it sends to the stations
(`linetrace.ledger.hold_actions`); docs/holds.md says who may do what. Exit 0 done, 1 refused
(a role that may not, a forged or unknown signature, a quality release that still needs a
second quality user's signature), 2 usage.
"""

from __future__ import annotations

import argparse
from typing import Any

from linetrace.ledger.dispositions import (
    DECISIONS,
    dispose,
    disposition_hold,
    no_disposition,
)
from linetrace.ledger.hold_actions import HoldOutcome, place_hold, release_hold
from linetrace.ledger.hold_views import list_holds
from linetrace.ledger.keys import load_or_create_plant_key

from .ledger_cmds import open_ledger, publish_outbox
from .output import print_json, print_table, say
from .query_cmds import read_ledger
from .routes_cmds import routes_in_force
from .settings import ConfigurationError, Settings
from .user_key import sign_as

#: --flag -> hold scope.
_SCOPE_FLAGS = {"unit": "unit", "lot": "lot", "mpn": "mpn", "work_order": "work_order",
                "station": "station"}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    hold = subparsers.add_parser("hold", help="place or release a hold (signed by you)"
                                 ).add_subparsers(dest="hold_cmd", required=True)
    place = hold.add_parser(
        "place", parents=[common], help="hold a unit, lot, MPN, work order or station",
        description="Place a hold, signed with LINETRACE_USER_KEY. A lot or MPN hold stops "
        "every unshipped unit that contains it (through sub-assemblies) and lists the shipped "
        "ones; a station hold locks the station. Supervisors hold units, work orders and "
        "stations; quality and admin users anything (docs/holds.md).")
    what = place.add_mutually_exclusive_group(required=True)
    what.add_argument("--unit", metavar="SERIAL")
    what.add_argument("--lot", metavar="LOT")
    what.add_argument("--mpn", metavar="MPN")
    what.add_argument("--work-order", dest="work_order", metavar="WO")
    what.add_argument("--station", metavar="STATION")
    place.add_argument("--reason", required=True)
    place.add_argument("--json", action="store_true", help="print the hold as `holds` does, "
                       "with recorded, new and message")
    place.set_defaults(fn=cmd_place)
    rel = hold.add_parser(
        "release", parents=[common], help="release a hold (quality holds: two quality users)",
        description="Sign the release of a hold with LINETRACE_USER_KEY. An operational hold "
        "is released by one supervisor, quality or admin user; a quality hold needs two "
        "different quality users: the first signature is recorded and the command exits 1 "
        "saying a second quality user must sign.")
    rel.add_argument("hold_id", metavar="HOLD_ID")
    rel.add_argument("--reason")
    rel.add_argument("--json", action="store_true")
    rel.set_defaults(fn=cmd_release)

    ls = subparsers.add_parser("holds", parents=[common], help="holds in force (--all: every "
                               "hold)", description="List the holds in force, or every hold.")
    ls.add_argument("--all", action="store_true", dest="all_", help="released and disposed too")
    ls.add_argument("--json", action="store_true",
                    help="print a list of {id, scope, target, reason, placed_by, placed, state, "
                         "approvals, affected_units, category, code, released, released_by, "
                         "release_reason, decision, shipped, step, station}")
    ls.set_defaults(fn=cmd_holds)

    d = subparsers.add_parser(
        "disposition", parents=[common], help="decide on a unit held for a disposition",
        description="Decide, as a quality user (LINETRACE_USER_KEY), what happens to a unit "
        "held for a disposition (after its route's last repair loop, or a repair that could "
        "not repair it): scrap, use-as-is or repair, always with a reason. The hold ends and "
        "the unit's station is told where to send it.")
    d.add_argument("serial", metavar="SERIAL")
    d.add_argument("--decision", required=True, choices=DECISIONS)
    d.add_argument("--reason", required=True)
    d.add_argument("--json", action="store_true")
    d.set_defaults(fn=cmd_disposition)


def _reason(text: str | None, what: str) -> str:
    if text is None or not text.strip():
        raise ConfigurationError(f"{what} needs a reason: --reason TEXT")
    return text


def _report(args: argparse.Namespace, settings: Settings, outcome: HoldOutcome,
            published: bool) -> None:
    if args.json:
        print_json(outcome.to_json())
        return
    say(outcome.message + ("" if published else
                           " (broker not reachable; the outbox publishes it later)"))
    shipped = outcome.hold.get("shipped") or []
    if shipped and outcome.new:
        say(f"shipped units containing {outcome.hold['target']} (for the quality team): "
            + ", ".join(shipped))


def cmd_place(args: argparse.Namespace, settings: Settings) -> int:
    scope, target = next((s, getattr(args, f)) for f, s in _SCOPE_FLAGS.items()
                         if getattr(args, f) is not None)
    reason = _reason(args.reason, "a hold")
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, "hold.place", target,
                         {"scope": scope, "reason": reason})
        outcome = place_hold(ledger, plant, signed, scope=scope, target=target, reason=reason)
        _report(args, settings, outcome, publish_outbox(settings, ledger) if outcome.new else True)
        return 0
    finally:
        ledger.close()


def cmd_release(args: argparse.Namespace, settings: Settings) -> int:
    if args.reason is not None and not args.reason.strip():
        raise ConfigurationError("--reason is empty; give a reason or leave it out")
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        signed = sign_as(settings, ledger, "hold.release", args.hold_id,
                         {"reason": args.reason} if args.reason else {})
        outcome = release_hold(ledger, plant, signed, args.hold_id, args.reason)
        _report(args, settings, outcome, publish_outbox(settings, ledger) if outcome.new else True)
        return 1 if outcome.in_force else 0  # one quality signature so far: not released
    finally:
        ledger.close()


def cmd_holds(args: argparse.Namespace, settings: Settings) -> int:
    with read_ledger(settings).reader() as s:
        holds = list_holds(s, all_=args.all_)
    if args.json:
        print_json(holds)
        return 0
    print_table([[h["id"], h["scope"], h["target"], h["category"], h["state"], h["placed_by"],
                  h["placed"], _approvals(h), len(h["affected_units"]), len(h["shipped"]),
                  h["reason"]] for h in holds],
                ["HOLD", "SCOPE", "TARGET", "CATEGORY", "STATE", "PLACED BY", "PLACED",
                 "APPROVALS", "UNITS", "SHIPPED", "REASON"])
    return 0


def _approvals(h: dict[str, Any]) -> str:
    return ",".join(a["user"] for a in h["approvals"]) or "-"


def cmd_disposition(args: argparse.Namespace, settings: Settings) -> int:
    reason = _reason(args.reason, "a disposition")
    routes = routes_in_force(settings)
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    try:
        with ledger.reader() as s:
            hold = disposition_hold(s, args.serial)
            if hold is None:
                raise no_disposition(s, args.serial)
            hold_id = hold.hold_id
        signed = sign_as(settings, ledger, "hold.disposition", args.serial,
                         {"decision": args.decision, "reason": reason, "hold_id": hold_id})
        outcome = dispose(ledger, plant, signed, args.serial, args.decision, reason,
                          routes=routes)
        _report(args, settings, outcome, publish_outbox(settings, ledger) if outcome.new else True)
        return 0
    finally:
        ledger.close()
