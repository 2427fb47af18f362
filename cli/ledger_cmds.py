"""Commands that only need the ledger DB (base install): units, trace, keys, stations."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import UNIT_STATES, list_units, trace
from linetrace.ledger.keys import SystemEvent, enroll_station, list_stations, load_or_create_plant_key
from linetrace.schemas import signing

from .output import print_json, print_table
from .settings import Settings


def open_ledger(settings: Settings) -> Ledger:
    if settings.db.startswith("sqlite:///"):
        Path(settings.db[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return Ledger(settings.db)


def cmd_units(args: argparse.Namespace, settings: Settings) -> int:
    if args.state and args.state not in UNIT_STATES:
        print(f"linetrace: unknown state {args.state!r}; one of {', '.join(UNIT_STATES)}",
              file=sys.stderr)
        return 2
    ledger = open_ledger(settings)
    with ledger.reader() as s:
        units = list_units(s, kind=args.kind, state=args.state, product=args.product)
    if args.json:
        print_json(units)
    else:
        print_table([[u["serial"], u["product"], u["kind"], u["state"], u["step"], u["updated"]]
                     for u in units], ["SERIAL", "PRODUCT", "KIND", "STATE", "STEP", "UPDATED"])
    return 0


def cmd_trace(args: argparse.Namespace, settings: Settings) -> int:
    ledger = open_ledger(settings)
    with ledger.reader() as s:
        t = trace(s, args.serial)
    if args.json:
        print_json(t)
        return 0
    print(f"{t['serial']}  {t['product']} ({t['kind']})  state {t['state']}  step {t['step']}")
    if t["order"]:
        print(f"order {t['order']}  carton {t['carton']}")
    print(f"\nparts ({len(t['parts'])}):")
    print_table([[p["serial"] or f"qty {p['qty']}", p["category"], p["mpn"], p["lot"], p["parent"],
                  p["slot"] if p["slot"] is not None else p["ref"]] for p in t["parts"]],
                ["SERIAL", "CATEGORY", "MPN", "LOT", "PARENT", "SLOT/REF"])
    print(f"\noperations ({len(t['operations'])}):")
    print_table([[o["step"], o["operation"], o["station"], o["result"], o["started"], o["completed"]]
                 for o in t["operations"]], ["STEP", "OPERATION", "STATION", "RESULT", "STARTED",
                                              "COMPLETED"])
    return 0


def cmd_keys_init(args: argparse.Namespace, settings: Settings) -> int:
    key, created = load_or_create_plant_key(settings.keys_dir)
    path = settings.keys_dir / "plant.key"
    print(f"plant key {'created' if created else 'already present'}: {path}")
    print(f"key id {signing.keyid_of(key.public_key())}  name {settings.origin}")
    return 0


def cmd_stations_keygen(args: argparse.Namespace, settings: Settings) -> int:
    key = signing.generate_key()
    out = Path(args.out)
    if out.exists():
        print(f"linetrace: {out} exists; choose another --out", file=sys.stderr)
        return 2
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signing.private_key_pem(key))
    pub = out.with_suffix(out.suffix + ".pub") if out.suffix != ".pem" else out.with_suffix(".pub")
    pub.write_text(signing.public_key_b64(key.public_key()) + "\n")
    print(f"private key: {out} (keep it on the station)")
    print(f"public key:  {pub}  key id {signing.keyid_of(key.public_key())}")
    print(f"enrol it:    linetrace stations enroll STATION_ID --type TYPE --public-key {pub}")
    return 0


def publish_system_events(settings: Settings, events: list[SystemEvent]) -> bool:
    """Best effort: the ledger already holds them; ingest de-duplicates when they come back."""
    try:
        bootstrap = settings.bootstrap()
    except Exception:
        return False
    try:
        from linetrace.streams.publish import publish
    except ImportError:
        return False
    try:
        asyncio.run(asyncio.wait_for(publish(bootstrap, events), 15))
        return True
    except Exception as e:
        print(f"note: recorded in the ledger but not published to Kafka ({type(e).__name__}: {e})",
              file=sys.stderr)
        return False


def cmd_stations_enroll(args: argparse.Namespace, settings: Settings) -> int:
    try:
        public = signing.load_public_key_file(Path(args.public_key).read_bytes())
    except (OSError, ValueError) as e:
        print(f"linetrace: cannot read public key {args.public_key}: {e}", file=sys.stderr)
        return 2
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    event, new = enroll_station(ledger, plant, args.station_id, args.type, public)
    published = publish_system_events(settings, [event])
    keyid = signing.keyid_of(public)
    print(f"{'enrolled' if new else 'already enrolled'}: {args.station_id} ({args.type}) key {keyid}"
          f"{'' if published else ' (broker not reachable; the worker learns it from the ledger)'}")
    return 0


def cmd_stations_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = list_stations(open_ledger(settings))
    if args.json:
        print_json(rows)
    else:
        print_table([[r["station_id"], r["station_type"], ",".join(
            k["keyid"] + ("(revoked)" if k["revoked"] else "") for k in r["keys"])]  # type: ignore[attr-defined]
            for r in rows], ["STATION", "TYPE", "KEYS"])
    return 0
