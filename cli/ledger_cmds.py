"""Commands that only need the ledger DB (base install): units, trace, keys, stations."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import UNIT_STATES, list_units, trace, work_in_progress
from linetrace.ledger.lookups import show_lot, show_station
from linetrace.ledger.recall import recall
from linetrace.ledger.keys import (
    SystemEvent,
    enroll_station,
    list_stations,
    load_or_create_plant_key,
    revoke_station_key,
)
from linetrace.schemas import signing

from .output import print_json, print_table
from .settings import ConfigurationError, Settings


def open_ledger(settings: Settings) -> Ledger:
    if settings.db.startswith("sqlite:///"):
        Path(settings.db[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    return Ledger(settings.db)


def cmd_db_upgrade(args: argparse.Namespace, settings: Settings) -> int:
    from sqlalchemy import inspect

    from linetrace.ledger.db import make_engine
    from linetrace.ledger.schema import SchemaUnknown, current, head, upgrade

    if settings.db.startswith("sqlite:///"):
        Path(settings.db[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.db)
    try:
        if current(engine) is None and inspect(engine).get_table_names():
            raise SchemaUnknown("the database has tables but no linetrace schema revision; "
                                "refusing to migrate it")
        before, after = upgrade(engine, args.revision)
    finally:
        engine.dispose()
    print(f"ledger schema: {before or 'empty'} -> {after}" if before != after
          else f"ledger schema already at {after} (head {head()})")
    return 0


def cmd_db_status(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.db import make_engine
    from linetrace.ledger.schema import current, head

    if settings.db.startswith("sqlite:///") and not Path(settings.db[10:]).exists():
        print(f"no ledger database at {settings.db[10:]}; `linetrace db upgrade` creates it")
        return 1
    engine = make_engine(settings.db)
    try:
        rev = current(engine)
    finally:
        engine.dispose()
    ok = rev == head()
    print(f"ledger schema at {rev or 'none'}; this linetrace needs {head()}"
          + ("" if ok else " -> run `linetrace db upgrade`"))
    return 0 if ok else 1


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


def cmd_stations_rotate(args: argparse.Namespace, settings: Settings) -> int:
    """Enrol a new key for a station already enrolled; optionally revoke the old ones."""
    try:
        public = signing.load_public_key_file(Path(args.public_key).read_bytes())
    except (OSError, ValueError) as e:
        print(f"linetrace: cannot read public key {args.public_key}: {e}", file=sys.stderr)
        return 2
    ledger = open_ledger(settings)
    with ledger.reader() as s:
        station = show_station(s, args.station_id)
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    event, new = enroll_station(ledger, plant, args.station_id, str(station["station_type"]), public)
    events = [event]
    new_id = signing.keyid_of(public)
    if args.revoke_old:
        for k in station["keys"]:
            if k["keyid"] != new_id and not k["revoked"]:
                events.append(revoke_station_key(ledger, plant, args.station_id, k["keyid"],
                                                 reason=f"rotated to {new_id}")[0])
    publish_system_events(settings, events)
    print(f"{args.station_id}: key {new_id} {'enrolled' if new else 'was already enrolled'}"
          + (f"; revoked {len(events) - 1} old key(s)" if args.revoke_old else ""))
    return 0


def cmd_stations_revoke(args: argparse.Namespace, settings: Settings) -> int:
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    event, new = revoke_station_key(ledger, plant, args.station_id, args.keyid, reason=args.reason)
    publish_system_events(settings, [event])
    print(f"{args.station_id}: key {args.keyid} {'revoked' if new else 'was already revoked'}")
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


def _time_arg(s: str | None) -> datetime | None:
    if s is None:
        return None
    try:
        t = datetime.fromisoformat(s.replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{s!r} is not an RFC 3339 time (e.g. 2026-01-05T06:00:00Z)") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def cmd_recall(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings).reader() as s:
        rows = recall(s, lot=args.lot, part=args.part, mpn=args.mpn,
                      since=_time_arg(args.since), until=_time_arg(args.until))
    if args.json:
        print_json(rows)
    else:
        print_table([[r["serial"], r["product"], r["state"], r["status"], r["part"], r["lot"],
                      r["order"], r["carton"]] for r in rows],
                    ["UNIT", "PRODUCT", "STATE", "STATUS", "PART", "LOT", "ORDER", "CARTON"])
        print(f"{len({r['serial'] for r in rows})} units")
    return 0


def cmd_wip(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings).reader() as s:
        rows = work_in_progress(s)
    if args.json:
        print_json(rows)
    else:
        print_table([[r["kind"], r["step"], r["state"], r["units"]] for r in rows],
                    ["KIND", "STEP", "STATE", "UNITS"])
    return 0


def cmd_lots_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings).reader() as s:
        lot = show_lot(s, args.lot)
    if args.json:
        print_json(lot)
        return 0
    print(f"lot {lot['lot']}  {lot['mpn']}  supplier {lot['supplier']}  date code "
          f"{lot['date_code']}  qty {lot['qty']}")
    print(f"received {lot['received']} at {lot['station']}; {len(lot['serials'])} serials; "
          f"installed {lot['installs']} times in {lot['units']} units")
    for d in lot["documents"]:
        print(f"  document {d['kind']}: sha256 {d['sha256']}")
    for e in lot["events"]:
        print(f"  {e['time']}  {e['type']}  {e['source']}")
    return 0


def cmd_stations_show(args: argparse.Namespace, settings: Settings) -> int:
    with open_ledger(settings).reader() as s:
        st = show_station(s, args.station_id)
    if args.json:
        print_json(st)
        return 0
    print(f"{st['station_id']} ({st['station_type']})  enrolled {st['enrolled']}  "
          f"state {st['state']}")
    for k in st["keys"]:
        print(f"  key {k['keyid']}  enrolled {k['enrolled']}"
              + (f"  revoked {k['revoked']}" if k["revoked"] else ""))
    for f in st["open_faults"]:
        print(f"  open fault {f['data']['fault_id']}: {f['data']['severity']} {f['data']['cause']}")
    print("  events: " + ", ".join(f"{t} {n}" for t, n in sorted(st["events_by_type"].items())))
    for e in st["events"][-20:]:
        print(f"  {e['time']}  {e['type']}  {json.dumps(e['data'], sort_keys=True)[:100]}")
    return 0
