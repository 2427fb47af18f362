"""Commands that run the line: broker, worker, simulate (need the [worker] extra)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import sys
import threading
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.plant_data import GoldenFirmware
from linetrace.schemas import signing

from .client_logs import STATION_LOGGER, quiet_client_logs
from .ledger_cmds import open_ledger, publish_outbox
from .routes_cmds import routes_in_force
from .extras import need_extra
from .settings import ConfigurationError, Settings


def _need_worker_extra() -> None:
    need_extra("worker")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def cmd_broker(args: argparse.Namespace, settings: Settings) -> int:
    _need_worker_extra()
    from linetrace.streams.broker import EmbeddedBroker

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    (settings.data_dir / "logs").mkdir(exist_ok=True)
    broker = EmbeddedBroker(args.port or None, log_file=settings.data_dir / "logs" / "tansu.log")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    broker.start()
    try:
        done = asyncio.run(_ensure_topics_racing_clients(broker.bootstrap))
        write_atomic(settings.broker_file, f"kafka://{broker.bootstrap}\n")
        print(f"embedded broker on kafka://{broker.bootstrap} ({len(done)} topics ready); "
              f"wrote {settings.broker_file}", flush=True)
        while not stop.wait(0.5):
            if broker.proc is not None and broker.proc.poll() is not None:
                print(f"linetrace: embedded broker exited with {broker.proc.returncode}",
                      file=sys.stderr)
                return 1
        return 0
    finally:
        try:
            if settings.broker_file.read_text().strip() == f"kafka://{broker.bootstrap}":
                settings.broker_file.unlink()
        except OSError:
            pass
        broker.stop()


async def _ensure_topics_racing_clients(bootstrap: str, attempts: int = 50) -> dict[str, str]:
    """Create/fix the topics, again while clients keep auto-creating them.

    When the embedded broker restarts under running clients (workers, consumers that ask for
    metadata), they auto-create topics with 4 partitions, possibly between our delete and our
    create; each pass fixes what it finds until a pass finds every count right.
    """
    from aiokafka.errors import KafkaError

    from linetrace.streams.broker import ensure_topics
    from linetrace.streams.errors import BrokerError

    for attempt in range(attempts):
        try:
            done = await ensure_topics(bootstrap, fix_wrong_counts=True)
        except (BrokerError, KafkaError) as e:
            if getattr(e, "code", "") not in ("broker.partitions", "") or attempt == attempts - 1:
                raise
            await asyncio.sleep(0.1)
            continue
        if all(what == "ok" for what in done.values()) or attempt == attempts - 1:
            return done
        # something was created or recreated: check again, a client may have raced us
        await asyncio.sleep(0.2)
    raise AssertionError("unreachable")


def cmd_topics(args: argparse.Namespace, settings: Settings) -> int:
    """Check (or --create) the topics of CONTRACTS.md on the configured broker (own Kafka)."""
    _need_worker_extra()
    from aiokafka.errors import KafkaError

    from linetrace.schemas.topics import ALL_TOPICS
    from linetrace.streams.broker import ensure_topics, partition_counts_of
    from linetrace.streams.errors import BrokerError

    bootstrap = settings.bootstrap()
    try:
        if args.create:
            done = asyncio.run(ensure_topics(bootstrap, fix_wrong_counts=False))
            for name, what in done.items():
                print(f"{name:24} {ALL_TOPICS[name]:3}  {what}")
            return 0
        counts = asyncio.run(partition_counts_of(bootstrap, list(ALL_TOPICS)))
    except KafkaError as e:  # a failed operation, said in one line (exit 1), no traceback
        raise BrokerError(f"cannot reach the broker at {bootstrap} ({type(e).__name__}); start "
                          "it (`linetrace broker` or `linetrace up`) or check LINETRACE_BROKER",
                          code="broker.unreachable", retriable=True) from None
    bad = 0
    for name, want in ALL_TOPICS.items():
        have = counts.get(name)
        ok = have == want
        bad += not ok
        print(f"{name:24} {want:3}  {'ok' if ok else f'MISSING' if have is None else f'has {have}'}")
    if bad:
        print(f"linetrace: {bad} topic(s) missing or with the wrong partition count; "
              "`linetrace topics --create` creates missing ones", file=sys.stderr)
    return 1 if bad else 0


def detector_files_in_force(settings: Settings) -> tuple[GoldenFirmware, Path | None]:
    """The golden firmware list (LINETRACE_GOLDEN_FIRMWARE, else packaged) and the plant's SPC
    file (LINETRACE_SPC), each checked before the worker starts: a bad one is exit 2."""
    from linetrace.ledger.plant_data import PlantDataMalformed, golden_firmware
    from linetrace.streams.detect.spc import SpcConfigError, load_config

    try:
        golden = golden_firmware(settings.golden_firmware)
    except PlantDataMalformed as e:
        raise ConfigurationError(f"LINETRACE_GOLDEN_FIRMWARE: {e.message}") from None
    if settings.spc is not None:
        try:
            load_config(settings.spc)
        except SpcConfigError as e:
            raise ConfigurationError(f"LINETRACE_SPC: {e.message}") from None
    return golden, settings.spc


def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    _need_worker_extra()
    from linetrace.streams.worker import WorkerConfig, run_worker

    from .burnin_cmds import burnin_limits_in_force

    routes = routes_in_force(settings)  # a bad LINETRACE_ROUTES starts nothing (exit 2)
    limits = burnin_limits_in_force(settings)  # nor does a bad LINETRACE_BURNIN_LIMITS
    golden, spc_file = detector_files_in_force(settings)  # nor a bad golden list or SPC file
    bootstrap = settings.bootstrap()
    open_ledger(settings).close()  # creates the SQLite file's folder and schema
    run_worker(WorkerConfig(bootstrap=bootstrap, db_url=settings.db, data_dir=settings.data_dir,
                            group=settings.group, batch_size=settings.batch_size,
                            batch_window=settings.batch_window, log_level=settings.log_level,
                            origin=settings.origin,
                            checkpoint_leaves=settings.checkpoint_leaves,
                            checkpoint_seconds=settings.checkpoint_seconds, routes=routes,
                            clock_bound_s=settings.clock_bound_seconds,
                            line_speed=settings.line_speed,
                            burnin_limits=limits, golden_firmware=golden, spc_file=spc_file,
                            fault=getattr(args, "fault_inject", None)))
    return 0


def station_key(stations_dir: Path, station_id: str) -> Ed25519PrivateKey:
    """The simulated station's own key, generated where it "runs" (its folder), 0600."""
    folder = stations_dir / station_id
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "key.pem"
    if path.exists():
        return signing.load_private_key_pem(path.read_bytes())
    key = signing.generate_key()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(signing.private_key_pem(key))
    return key


def cmd_simulate(args: argparse.Namespace, settings: Settings) -> int:
    _need_worker_extra()
    from datetime import datetime

    from linetrace.stations.errors import StationError
    from linetrace.stations.simulator import (
        LineConfig, LineStatus, generate_line, parse_faults, run_line, station_roster,
    )

    routes = routes_in_force(settings)  # a bad LINETRACE_ROUTES starts nothing (exit 2)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(1, 10**6)
    try:
        start = datetime.fromisoformat(args.start) if args.start else None
    except ValueError:
        print(f"linetrace: --start {args.start!r} is not an RFC 3339 time "
              "(e.g. 2026-01-05T06:00:00Z)", file=sys.stderr)
        return 2
    try:
        config = LineConfig(units=args.units, seed=seed, speed=args.speed, rate=args.rate,
                            product=args.product, faults=parse_faults(args.faults),
                            burnin_seconds=args.burnin_seconds, start=start, routes=routes,
                            conducted=args.conducted)
        plan = generate_line(config)  # refuses a bad config before anything is enrolled
    except StationError as e:
        print(f"linetrace: {e}", file=sys.stderr)
        return 2
    if args.seed is None:
        print(f"seed {seed} (run again with --seed {seed} to reproduce)", flush=True)
    seeds_file = settings.data_dir / "sim" / "seeds.json"
    seeds_file.parent.mkdir(parents=True, exist_ok=True)
    seeds = json.loads(seeds_file.read_text()) if seeds_file.exists() else []
    if seed in seeds:
        print(f"linetrace: seed {seed} was already simulated into {settings.data_dir}; its serials "
              "and event ids would collide. Use another --seed or another --data-dir.",
              file=sys.stderr)
        return 2
    bootstrap = settings.bootstrap()
    plant, _ = load_or_create_plant_key(settings.keys_dir)
    ledger = open_ledger(settings)
    stations_dir = settings.data_dir / "stations"
    # Every station of the line runs in this process: one outage is one line and a summary
    # here too, not two lines per station.
    quiet_client_logs((STATION_LOGGER,))
    keys = {}
    for station_id, station_type in station_roster(config.product, config.routes):
        keys[station_id] = station_key(stations_dir, station_id)
        enroll_station(ledger, plant, station_id, station_type, keys[station_id].public_key())
    publish_outbox(settings, ledger)
    write_atomic(seeds_file, json.dumps(seeds + [seed]))
    status_file = sim_status_file(settings)
    interlock = None
    if config.conducted:  # the stations ask linetrace after each arrival (ValidateUnits)
        from .interlock_hook import LedgerInterlock

        interlock = LedgerInterlock(ledger, routes)
    else:
        ledger.close()

    def on_status(status: LineStatus) -> None:  # read by `up --until-idle`
        write_atomic(status_file, json.dumps({"pid": os.getpid(), "seed": seed,
                                              **status.to_json()}))

    try:
        summary = asyncio.run(run_line(config, keys, bootstrap, stations_dir, plan=plan,
                                       plant_key=plant.public_key(), interlock=interlock,
                                       on_status=on_status))
    finally:
        ledger.close()
    print(f"simulation done: {json.dumps(summary.to_json())}", flush=True)
    return 0


def sim_status_file(settings: Settings) -> Path:
    """Where `linetrace simulate` says whether only units waiting on linetrace or a person
    are left (`LineStatus`, with its pid and seed)."""
    return settings.data_dir / "sim" / "status.json"
