"""The Faust app: one agent per input topic, batched, concurrency 1 (DESIGN.md).

An event whose handler raises would be acked and skipped by Faust, so the agents never raise
for bad input: the processor dead-letters or quarantines it and keeps going.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import faust

from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.records import SourceRecord
from linetrace.schemas.topics import ALL_TOPICS, INPUT_TOPICS

from .broker import wait_for_topics
from .processor import BatchProcessor, CheckpointPolicy
from .restart_guard import BrokerRestartGuard

log = logging.getLogger("linetrace.worker")


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


def _headers(raw: Any) -> list[tuple[str, bytes]]:
    if not raw:
        return []
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), bytes(v) if v is not None else b"") for k, v in items]


def build_app(cfg: WorkerConfig) -> tuple[faust.App, BatchProcessor]:
    ledger = Ledger(cfg.db_url)
    plant, _ = load_or_create_plant_key(cfg.data_dir / "keys")
    processor = BatchProcessor(ledger, cfg.bootstrap, SystemContext(plant_key=plant),
                               checkpoints=CheckpointPolicy(plant_signer(plant, cfg.origin),
                                                            cfg.checkpoint_leaves,
                                                            cfg.checkpoint_seconds))
    app = faust.App(
        cfg.group,
        broker=f"kafka://{cfg.bootstrap}",
        store="memory://",
        datadir=str(cfg.data_dir / "worker"),
        web_enabled=False,
        topic_allow_declare=False,
        topic_disable_leader=True,
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6.0,
        broker_heartbeat_interval=0.5,
        broker_rebalance_timeout=3.0,
        broker_commit_interval=0.5,
        stream_buffer_maxsize=4 * cfg.batch_size,
        producer_acks=-1,
    )

    guard = BrokerRestartGuard(app)  # follows the embedded broker through a restart

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]
    async def _guard_fetches(app_: faust.App, *_: Any, **__: Any) -> None:
        guard.install()

    @app.on_before_shutdown.connect  # type: ignore[arg-type]
    async def _shutdown(app_: faust.App, **_: Any) -> None:
        await processor.stop()
        ledger.close()

    for spec in INPUT_TOPICS:
        topic = app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw", partitions=spec.partitions, internal=False)

        async def ingest(stream: Any) -> Any:
            async for events in stream.take_events(cfg.batch_size, within=cfg.batch_window):
                records = [SourceRecord(topic=e.message.topic, partition=e.message.partition,
                                        offset=e.message.offset, key=e.message.key,
                                        value=e.message.value,
                                        headers=_headers(e.message.headers))
                           for e in events]
                try:
                    await processor.process(records)
                except asyncio.CancelledError:
                    raise
                except Exception:  # a bug, not bad input: crash loudly rather than skip
                    log.exception("batch of %d records failed; the worker stops",
                                  len(records))
                    raise
                yield len(records)

        ingest.__name__ = f"ingest_{spec.name.replace('.', '_')}"
        app.agent(topic, name=ingest.__name__, concurrency=1, sink=None)(ingest)
    return app, processor


def run_worker(cfg: WorkerConfig) -> None:
    from faust.worker import Worker

    # Before Faust asks for metadata: a topic it touched first would be auto-created with the
    # wrong partition count by the embedded broker.
    asyncio.run(wait_for_topics(cfg.bootstrap, list(ALL_TOPICS)))
    app, _ = build_app(cfg)
    level = {"warning": "warn", "error": "error", "debug": "debug"}.get(cfg.log_level, "info")
    Worker(app, loglevel=level, quiet=True).execute_from_commandline()
