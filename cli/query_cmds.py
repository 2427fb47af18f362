"""Queries of the ledger (base install, no broker): units, trace, recall, wip, lots show,
stations show, rejected.

They open the ledger read-only: a query never creates a database file or a schema and never
migrates one. A data dir without a ledger, or an empty or out-of-date one, is a configuration
error (exit 2) that says what to run.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime

from linetrace.ledger.db import Ledger, LedgerMissing
from linetrace.ledger.genealogy import UNIT_STATES, list_units, trace, work_in_progress
from linetrace.ledger.lookups import rejected, show_lot, show_station
from linetrace.ledger.recall import recall
from linetrace.ledger.schema import SchemaOutOfDate, SchemaUnknown
from linetrace.ledger.views import to_data

from . import render
from .output import print_json, print_table, say
from .settings import ConfigurationError, Settings


def read_ledger(settings: Settings) -> Ledger:
    """The configured ledger, opened for reading only (never created nor migrated)."""
    try:
        return Ledger(settings.db, read_only=True)
    except (LedgerMissing, SchemaOutOfDate, SchemaUnknown) as e:
        raise ConfigurationError(e.message, code=e.code) from None  # exit 2, its own code


def time_arg(s: str | None) -> datetime | None:
    """An RFC 3339 time from the command line (a time without zone is UTC)."""
    if s is None:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{s!r} is not an RFC 3339 time (e.g. 2026-01-05T06:00:00Z)"
                                 ) from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def cmd_units(args: argparse.Namespace, settings: Settings) -> int:
    if args.state and args.state not in UNIT_STATES:
        raise ConfigurationError(f"unknown state {args.state!r}; one of {', '.join(UNIT_STATES)}")
    with read_ledger(settings).reader() as s:
        units = list_units(s, kind=args.kind, state=args.state, product=args.product)
    if args.json:
        print_json(to_data(units))
    else:
        print_table([[u.serial, u.product, u.kind, u.state, u.step, u.updated] for u in units],
                    ["SERIAL", "PRODUCT", "KIND", "STATE", "STEP", "UPDATED"])
    return 0


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    with read_ledger(settings).reader() as s:
        t = trace(s, args.serial)
    if args.json:
        print_json(to_data(t))
    else:
        render.trace_text(t)
    return 0


def cmd_recall(args: argparse.Namespace, settings: Settings) -> int:
    since, until = time_arg(args.since), time_arg(args.until)
    with read_ledger(settings).reader() as s:
        rows = recall(s, lot=args.lot, part=args.part, mpn=args.mpn, since=since, until=until)
    if args.json:
        print_json(to_data(rows))
    else:
        print_table([[r.serial, r.product, r.state, r.status, r.part, r.lot, r.order, r.carton]
                     for r in rows],
                    ["UNIT", "PRODUCT", "STATE", "STATUS", "PART", "LOT", "ORDER", "CARTON"])
        say(f"{len({r.serial for r in rows})} units")
    return 0


def cmd_wip(args: argparse.Namespace, settings: Settings) -> int:
    with read_ledger(settings).reader() as s:
        rows = work_in_progress(s)
    if args.json:
        print_json(to_data(rows))
    else:
        print_table([[r.kind, r.step, r.state, r.units] for r in rows],
                    ["KIND", "STEP", "STATE", "UNITS"])
    return 0


def cmd_lots_show(args: argparse.Namespace, settings: Settings) -> int:
    with read_ledger(settings).reader() as s:
        lot = show_lot(s, args.lot)
    if args.json:
        print_json(to_data(lot))
    else:
        render.lot_text(lot)
    return 0


def cmd_stations_show(args: argparse.Namespace, settings: Settings) -> int:
    with read_ledger(settings).reader() as s:
        st = show_station(s, args.station_id)
    if args.json:
        print_json(to_data(st))
    else:
        render.station_text(st)
    return 0


def cmd_rejected(args: argparse.Namespace, settings: Settings) -> int:
    since = time_arg(args.since)
    with read_ledger(settings).reader() as s:
        rows = rejected(s, code=args.code, since=since)
    if args.json:
        print_json(to_data(rows))
    else:
        render.rejected_text(rows)
    return 0


def add_rejected(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                 common: argparse.ArgumentParser) -> None:
    help_ = "records ingest refused (dead-lettered or quarantined), with code and reason"
    r = sub.add_parser("rejected", parents=[common], help=help_, description=help_)
    r.add_argument("--code", help="only this rejection code, e.g. event.invalid")
    r.add_argument("--since", metavar="T", help="recorded at or after T (RFC 3339)")
    r.add_argument("--json", action="store_true",
                   help="print a list of {id, recorded, destination, code, message, stage, "
                        "topic, partition, offset, source, event_id, key_b64, value_b64}")
    r.set_defaults(fn=cmd_rejected)
