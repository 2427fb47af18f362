"""A Faust app that consumes every input topic and does nothing: bench_pipeline's (c).

Same settings as the worker (streams/worker.py): batches via take_events, concurrency 1,
memory store. Prints `rate R` (records/s from the first record to the N-th) and exits.

    python -m bench.faust_noop BOOTSTRAP N WORKDIR
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import faust

from linetrace.schemas.topics import INPUT_TOPICS


def main(bootstrap: str, n: int, workdir: str) -> None:
    app = faust.App(f"bench-noop-{os.getpid()}", broker=f"kafka://{bootstrap}", store="memory://",
                    datadir=workdir, web_enabled=False, topic_allow_declare=False,
                    topic_disable_leader=True, consumer_auto_offset_reset="earliest",
                    broker_session_timeout=6.0, broker_heartbeat_interval=0.5,
                    broker_rebalance_timeout=3.0, broker_commit_interval=0.5,
                    stream_buffer_maxsize=2000)
    state = {"got": 0, "first": 0.0}

    for spec in INPUT_TOPICS:
        topic = app.topic(spec.name, key_type=bytes, value_type=bytes, key_serializer="raw",
                          value_serializer="raw", partitions=spec.partitions, internal=False)

        async def noop(stream: Any) -> Any:
            async for events in stream.take_events(500, within=0.05):
                if not state["first"]:
                    state["first"] = time.perf_counter()
                    print("noop-first-record", flush=True)  # bench_pipeline's profiler starts
                state["got"] += len(events)
                if state["got"] >= n:
                    rate = n / (time.perf_counter() - state["first"])
                    print(f"rate {rate:.1f}", flush=True)
                    os._exit(0)
                yield len(events)

        noop.__name__ = f"noop_{spec.name.replace('.', '_')}"
        app.agent(topic, name=noop.__name__, concurrency=1, sink=None)(noop)

    from faust.worker import Worker

    Worker(app, loglevel="warn", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3])
