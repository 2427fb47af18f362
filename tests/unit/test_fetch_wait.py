"""The worker's consumers ask the broker to answer an empty fetch within FETCH_MAX_WAIT_MS.

Faust builds its consumer with a fixed 1,500 ms fetch wait and aiokafka defaults to 500; on
the embedded broker a record then waited ~0.6 s (p99 ~1 s) before the worker read it, most of
an alert's latency (docs/benchmarks.md). Building a consumer does not connect, so this needs
no broker.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from linetrace.streams.batch_consumer import FETCH_MAX_WAIT_MS, BatchConsumer
from linetrace.streams.worker import WorkerConfig, build_app


def test_fetch_wait_is_short() -> None:
    assert 0 < FETCH_MAX_WAIT_MS <= 100


def test_faust_and_the_telemetry_consumer_use_the_short_fetch_wait(tmp_path: Path) -> None:
    async def built() -> tuple[int, int]:
        app, processor = build_app(WorkerConfig(bootstrap="127.0.0.1:1",
                                                db_url=f"sqlite:///{tmp_path}/ledger.db",
                                                data_dir=tmp_path))
        faust_side = app.consumer._thread._create_worker_consumer(app.transport)
        telemetry = BatchConsumer(processor, "127.0.0.1:1", "g.telemetry",
                                  ["line.telemetry"])._make_consumer()
        try:
            return faust_side._fetch_max_wait_ms, telemetry._fetch_max_wait_ms
        finally:
            await faust_side.stop()
            await telemetry.stop()
            processor.ledger.close()

    assert asyncio.run(built()) == (FETCH_MAX_WAIT_MS, FETCH_MAX_WAIT_MS)
