"""The Faust app: one agent per input topic, batched, concurrency 1 (DESIGN.md).

An event whose handler raises would be acked and skipped by Faust, so the agents never raise
for bad input: the processor dead-letters or quarantines it and keeps going.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import faust
from faust.types import TP

from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.burnin_limits import BurninLimits, default_limits
from linetrace.ledger.plant_data import GoldenFirmware, golden_firmware
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.records import BatchOutcome, SourceRecord
from linetrace.schemas.routes import RouteBook, packaged_routes
from linetrace.schemas.topics import ALL_TOPICS, INPUT_TOPICS, TELEMETRY

from .broker import EMBEDDED_CLUSTER_PREFIX, cluster_id, wait_for_topics
from .faults import Faults
from .relay import Relay
from .telemetry import observe_lag
from .batch_consumer import FETCH_MAX_WAIT_MS, BatchConsumer
from .lane import WriteLane, process_until_done
from .processor import BatchProcessor, CheckpointPolicy
from .restart_guard import BrokerRestartGuard
from .stall import FRESH_S, StallWatch

log = logging.getLogger("linetrace.worker")


@dataclass(frozen=True)
class GroupTiming:
    """How fast the consumer group notices a dead worker and hands its partitions over."""

    session_timeout_s: float
    heartbeat_s: float
    rebalance_timeout_s: float = 3.0


#: The embedded broker runs beside the workers: a worker that sent no heartbeat for 2 s is
#: dead, and a running worker writes its partitions about 4 s after a SIGKILL (session, the
#: broker's 1 s join round, assignment, first batch; docs/benchmarks.md "Recovery"). Tansu's
#: join round is 1 s up to a 2 s session and longer above, so 2 s is the sweet spot.
EMBEDDED_TIMING = GroupTiming(session_timeout_s=2.0, heartbeat_s=0.2)
#: A Kafka of one's own refuses sessions below its group.min.session.timeout.ms (6 s by default).
KAFKA_TIMING = GroupTiming(session_timeout_s=6.0, heartbeat_s=0.5)


def group_timing(incarnation: str | None) -> GroupTiming:
    """The timing for the broker whose cluster id is `incarnation`."""
    embedded = incarnation is not None and incarnation.startswith(EMBEDDED_CLUSTER_PREFIX)
    return EMBEDDED_TIMING if embedded else KAFKA_TIMING


@dataclass(frozen=True)
class WorkerConfig:
    bootstrap: str
    db_url: str
    data_dir: Path
    group: str = "linetrace-worker"
    batch_size: int = 500
    batch_window: float = 0.05
    log_level: str = "info"
    origin: str = "linetrace.local/ledger/v1"
    checkpoint_leaves: int = 1000
    checkpoint_seconds: float = 60.0
    clock_bound_s: float = 604800.0  # LINETRACE_CLOCK_BOUND_SECONDS: flag events this far off
    #: LINETRACE_LINE_SPEED: line seconds a silent partition's clock advances per wall second
    #: (1 for a real line, the simulator's speed factor; 0 = never advance on wall time).
    line_speed: float = 1.0
    #: The routes in force (packaged + LINETRACE_ROUTES); a unit records the one it starts on.
    routes: RouteBook = field(default_factory=packaged_routes)
    #: Per-SKU burn-in limits the verdicts decide by (LINETRACE_BURNIN_LIMITS, else packaged).
    burnin_limits: BurninLimits = field(default_factory=default_limits)
    #: Golden firmware hashes (LINETRACE_GOLDEN_FIRMWARE, else packaged) and the plant's SPC
    #: chart file (LINETRACE_SPC, None: packaged), for the detectors.
    golden_firmware: GoldenFirmware = field(default_factory=golden_firmware)
    spc_file: Path | None = None
    fault: str | None = None  # a fault injection point (tests only): streams/faults.py
    #: Read line.telemetry with the batch consumer (`batch_consumer.py`, group
    #: `<group>.telemetry`) instead of a Faust agent. False: every topic through Faust.
    telemetry_batches: bool = True
    timing: GroupTiming | None = None  # None: `group_timing` of the broker found at start


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def quick_fetches() -> None:
    """Faust's consumer with `FETCH_MAX_WAIT_MS` instead of its fixed 1,500 ms: Faust has no
    setting for it, so the value is set on the consumer Faust builds, before it starts
    (aiokafka hands it to its fetcher at start). Idempotent."""
    from faust.transport.drivers import aiokafka as driver

    thread: Any = driver.AIOKafkaConsumerThread
    build = thread._create_worker_consumer
    if getattr(build, "linetrace_quick", False):
        return

    def create(self: Any, transport: Any) -> Any:
        consumer = build(self, transport)
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer

    create.linetrace_quick = True  # type: ignore[attr-defined]
    thread._create_worker_consumer = create


def build_app(cfg: WorkerConfig) -> tuple[faust.App, BatchProcessor]:
    quick_fetches()
    ledger = Ledger(cfg.db_url)
    plant, _ = load_or_create_plant_key(cfg.data_dir / "keys")
    system = SystemContext(plant_key=plant, routes=cfg.routes, burnin_limits=cfg.burnin_limits,
                           golden_firmware=cfg.golden_firmware, spc_file=cfg.spc_file)
    faults = Faults(cfg.fault)
    processor = BatchProcessor(ledger, cfg.bootstrap, system,
                               checkpoints=CheckpointPolicy(plant_signer(plant, cfg.origin),
                                                            cfg.checkpoint_leaves,
                                                            cfg.checkpoint_seconds),
                               clock_bound=timedelta(seconds=cfg.clock_bound_s),
                               relay=Relay(ledger, cfg.bootstrap, faults=faults),
                               screen_thread=True, line_speed=cfg.line_speed)
    timing = cfg.timing or KAFKA_TIMING
    app = faust.App(
        cfg.group,
        broker=f"kafka://{cfg.bootstrap}",
        store="memory://",
        datadir=str(cfg.data_dir / "worker"),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=timing.session_timeout_s,
        broker_heartbeat_interval=timing.heartbeat_s,
        broker_rebalance_timeout=timing.rebalance_timeout_s,
        broker_commit_interval=0.5,
        stream_buffer_maxsize=4 * cfg.batch_size,
        producer_acks=-1,
    )

    guard = BrokerRestartGuard(app)  # follows the embedded broker through a restart
    input_names = {spec.name for spec in INPUT_TOPICS} - ({TELEMETRY} if cfg.telemetry_batches
                                                          else set())
    seen_rewinds = 0

    async def refresh_incarnation() -> None:
        nonlocal seen_rewinds
        seen_rewinds = guard.rewinds
        processor.forget_positions()
        try:
            processor.incarnation = await cluster_id(cfg.bootstrap)
        except Exception as e:  # keep the last one; the next assignment asks again
            log.warning("could not read the broker's cluster id: %r", e)

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _resume_from_ledger(app_: faust.App, assigned: Any = (), **__: Any) -> None:
        """Start each partition where the ledger says ingest stands (never where Kafka's
        committed offsets say), in the broker incarnation those positions belong to."""
        guard.install()
        await refresh_incarnation()
        tps = [tp for tp in assigned if tp.topic in input_names]
        stored = await asyncio.get_running_loop().run_in_executor(
            None, processor.stored_next, [(tp.topic, tp.partition) for tp in tps])
        guard.start_at({tp: stored[(tp.topic, tp.partition)] for tp in tps})

    lanes: list[WriteLane] = []  # one per agent, and the batch consumer's
    lane_of: dict[str, WriteLane] = {}  # the agents' lanes by topic
    readers: list[BatchConsumer] = []

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _shutdown(app_: faust.App, **_: Any) -> None:
        for reader in readers:
            reader.stop()
        for lane in lanes:  # the batches in the writer are stored before the writer stops
            await lane.drain()
        await processor.stop()
        ledger.close()

    @app.task  # type: ignore[untyped-decorator]
    async def _start_relay() -> None:
        await processor.start()  # messages the CLI recorded leave even before any input

    @app.timer(interval=2.0)  # type: ignore[untyped-decorator]
    async def _tick() -> None:
        try:
            await processor.tick()
        except Exception as e:
            log.error("periodic stage retry failed: %r", e)

    watch = StallWatch()

    async def watch_stalls() -> None:
        """Read again a partition whose records stopped reaching the ledger although the broker
        holds more (streams/stall.py): the position check runs only on records that arrive."""
        tps = sorted(tp for tp in app.consumer.assignment() if tp.topic in input_names)
        if not tps:
            return
        try:
            if processor.db_down:
                raise ConnectionError("the ledger DB is down")
            stored = await asyncio.get_running_loop().run_in_executor(
                None, processor.stored_next, [(tp.topic, tp.partition) for tp in tps])
        except Exception as e:  # nothing is written meanwhile: every wait starts over
            watch.reset()
            log.debug("stall watch skipped: %r", e)
            return
        fetcher: Any = app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
        fresh_ms = (time.time() - FRESH_S) * 1000
        ends: dict[tuple[str, int], int | None] = {}
        for tp in tps:  # as the last fetch answer said, if recent: no request of its own
            try:
                polled = fetcher.last_poll_timestamp(tp)
                hw = app.consumer.highwater(tp)
            except Exception:  # moved away meanwhile
                polled = hw = None
            ends[(tp.topic, tp.partition)] = hw if polled is not None and polled >= fresh_ms \
                else None
        busy = {k for k in stored if k[0] in lane_of and lane_of[k[0]].busy}
        due = watch.observe(time.monotonic(), stored, ends, busy)
        if due:
            # Faust's last offset handed over to the agent, per partition (for the log)
            read_at: Any = app.consumer._read_offset  # type: ignore[attr-defined]
            log.warning("records of %s stopped reaching the ledger for %.0f s although the broker "
                        "holds more; reading them again from the ledger's positions (the "
                        "consumer had handed over up to %s)", ", ".join(
                            f"{t}[{p}]@{o} (end {ends.get((t, p))})"
                            for (t, p), o in sorted(due.items())),
                        watch.after_s, {f"{t}[{p}]": read_at.get(TP(t, p)) for t, p in due})
            guard.start_at({TP(t, p): o for (t, p), o in due.items()}, keep_last=True)

    @app.task  # type: ignore[untyped-decorator]
    async def _watch_stalls() -> None:
        # A loop, not a Faust timer: a slow ledger read must not log "timer overlapping".
        while True:
            await asyncio.sleep(2.0)
            try:
                await watch_stalls()
            except Exception as e:  # e.g. a rebalance under it: the next round looks again
                log.debug("stall watch: %r", e)

    batch_topics = [TELEMETRY] if cfg.telemetry_batches else []
    for spec in INPUT_TOPICS:
        if spec.name in batch_topics:
            continue
        topic = app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw", partitions=spec.partitions, internal=False)
        lane = WriteLane(processor)
        lanes.append(lane)
        lane_of[spec.name] = lane

        async def ingest(stream: Any, lane: WriteLane = lane) -> Any:
            async for events in stream.take_events(cfg.batch_size, within=cfg.batch_window):
                records = [SourceRecord(topic=e.message.topic, partition=e.message.partition,
                                        offset=e.message.offset, key=e.message.key,
                                        value=e.message.value,
                                        headers=_headers(e.message.headers))
                           for e in events]
                if guard.rewinds != seen_rewinds:
                    await lane.drain()
                    await refresh_incarnation()
                if faults.once("jump-past-ledger"):
                    guard.start_at(dict(await app.consumer.highwaters(
                        *{TP(r.topic, r.partition or 0) for r in records})))
                    continue
                if faults.point == "kill-before-write":  # Kafka ahead of the ledger
                    await lane.drain()
                    ends: dict[TP, int] = {}
                    for e in events:
                        e.ack()
                        tp = TP(e.message.topic, e.message.partition)
                        ends[tp] = max(ends.get(tp, 0), e.message.offset + 1)
                    # These offsets, whatever Faust's ack bookkeeping says (the seek to the
                    # ledger's positions may have reset it under this batch). Faust commits
                    # only partitions in its assignment and gives up during a rebalance: die
                    # only once the broker holds them, or the point tests nothing.
                    for _ in range(200):
                        if (set(ends) <= app.consumer.assignment()
                                and await app.consumer._commit(ends)):  # type: ignore[attr-defined]
                            faults.at("kill-before-write")
                        await asyncio.sleep(0.05)
                    log.error("kill-before-write: the offsets %s could not be committed in 10 s; "
                              "not killed", ends)

                def after(outcome: BatchOutcome, records: list[SourceRecord] = records) -> None:
                    if outcome.stored:  # the ledger ahead of Kafka
                        faults.at("kill-after-write")
                    observe_lag(records, lambda t, p: app.consumer.highwater(TP(t, p)))

                behind = await lane.submit(records, after)
                if faults.point == "kill-after-write":  # keep Faust from acking this batch
                    await lane.drain()                  # before the write (and the kill)
                if behind:  # never write past a hole: seek back to where the ledger stands
                    log.warning("records start past the ledger's position in %s; seeking back "
                                "(nothing is written past a hole)", ", ".join(
                                    f"{t}[{p}]@{o}" for (t, p), o in sorted(behind.items())))
                    guard.start_at({TP(t, p): o for (t, p), o in behind.items()})
                    continue
                yield len(records)
            await lane.drain()

        ingest.__name__ = f"ingest_{spec.name.replace('.', '_')}"
        app.agent(topic, name=ingest.__name__, concurrency=1, sink=None)(ingest)

    if batch_topics:
        batches = BatchConsumer(
            processor, cfg.bootstrap, f"{cfg.group}.telemetry", batch_topics,
            batch_size=cfg.batch_size, batch_window=cfg.batch_window,
            session_timeout_s=timing.session_timeout_s, heartbeat_s=timing.heartbeat_s,
            rebalance_timeout_s=timing.rebalance_timeout_s, on_rewind=refresh_incarnation,
            after_write=lambda outcome: faults.at("kill-after-write") if outcome.stored else None)
        readers.append(batches)
        lanes.append(batches.lane)

        @app.task  # type: ignore[untyped-decorator]
        async def _read_batches() -> None:
            await batches.run()

    return app, processor


def run_worker(cfg: WorkerConfig) -> None:
    from faust.worker import Worker

    # Before Faust asks for metadata: a topic it touched first would be auto-created with the
    # wrong partition count by the embedded broker.
    asyncio.run(wait_for_topics(cfg.bootstrap, list(ALL_TOPICS)))
    if cfg.timing is None:
        timing = group_timing(asyncio.run(cluster_id(cfg.bootstrap)))
        cfg = replace(cfg, timing=timing)
        log.info("consumer group timing: session %g s, heartbeat %g s (%s)",
                 timing.session_timeout_s, timing.heartbeat_s,
                 "embedded broker" if timing is EMBEDDED_TIMING else "Kafka")
    app, _ = build_app(cfg)
    level = {"warning": "warn", "error": "error", "debug": "debug"}.get(cfg.log_level, "info")
    Worker(app, loglevel=level, quiet=True).execute_from_commandline()
