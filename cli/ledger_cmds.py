"""Commands that change the ledger or its keys (base install): keys, stations, db."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from linetrace.ledger.db import Ledger
from linetrace.ledger.lookups import show_station
from linetrace.ledger.keys import (
    SystemEvent,
    enroll_station,
    list_stations,
    load_or_create_plant_key,
    revoke_station_key,
)
from linetrace.schemas import signing

from .output import print_json, print_table
from .query_cmds import read_ledger
from .settings import Settings


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


def publish_outbox(settings: Settings, ledger: Ledger) -> bool:
    """Publish what this command recorded (it is in the ledger's outbox already).

    A running worker's relay publishes it anyway; this only saves waiting for one. Returns
    False when no broker is configured or reachable, or the worker extra is not installed:
    the messages stay in the outbox, nothing is lost.
    """
    try:
        bootstrap = settings.bootstrap()
        from linetrace.streams.relay import drain
    except Exception:
        return False
    try:
        asyncio.run(drain(ledger, bootstrap, timeout=15))
        return True
    except Exception as e:
        print(f"note: recorded in the ledger; it leaves through the outbox when a worker or "
              f"broker is available ({type(e).__name__}: {e})", file=sys.stderr)
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
    published = publish_outbox(settings, ledger)
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
    event, new = enroll_station(ledger, plant, args.station_id, station.station_type, public)
    events = [event]
    new_id = signing.keyid_of(public)
    if args.revoke_old:
        for k in station.keys:
            if k.keyid != new_id and not k.revoked:
                events.append(revoke_station_key(ledger, plant, args.station_id, k.keyid,
                                                 reason=f"rotated to {new_id}")[0])
    publish_outbox(settings, ledger)
    print(f"{args.station_id}: key {new_id} {'enrolled' if new else 'was already enrolled'}"
          + (f"; revoked {len(events) - 1} old key(s)" if args.revoke_old else ""))
    return 0


def cmd_stations_revoke(args: argparse.Namespace, settings: Settings) -> int:
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    event, new = revoke_station_key(ledger, plant, args.station_id, args.keyid, reason=args.reason)
    publish_outbox(settings, ledger)
    print(f"{args.station_id}: key {args.keyid} {'revoked' if new else 'was already revoked'}")
    return 0


def cmd_stations_list(args: argparse.Namespace, settings: Settings) -> int:
    rows = list_stations(read_ledger(settings))
    if args.json:
        print_json(rows)
    else:
        print_table([[r["station_id"], r["station_type"], ",".join(
            k["keyid"] + ("(revoked)" if k["revoked"] else "") for k in r["keys"])]  # type: ignore[attr-defined]
            for r in rows], ["STATION", "TYPE", "KEYS"])
    return 0
