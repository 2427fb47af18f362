"""Publishing linetrace's own system events (already recorded in the ledger)."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaProducer

from linetrace.ledger.keys import SystemEvent

from .broker import wait_for_topics


async def publish(bootstrap: str, events: Sequence[SystemEvent]) -> None:
    await wait_for_topics(bootstrap, sorted({e.topic for e in events}))
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for e in events:
            await producer.send_and_wait(e.topic, e.value, key=e.key.encode(), headers=e.headers)
    finally:
        await producer.stop()
