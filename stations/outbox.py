"""The spool seen from asyncio: one thread owns the SQLite connection; emits are group-committed.

A durable commit costs an fsync (about 3 ms on the reference disk), so `emit` calls that arrive
while one commit is running are numbered, signed and committed together in the next one:
one caller waits one fsync, many concurrent callers share it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from .errors import StationError
from .spool import Draft, Spool, Spooled, TopicPartition

T = TypeVar("T")


class Outbox:
    def __init__(self, spool: Spool) -> None:
        self.spool = spool
        self._thread = ThreadPoolExecutor(max_workers=1,
                                          thread_name_prefix=f"spool-{spool.station_id}")
        self._queue: list[tuple[Draft, asyncio.Future[bytes]]] = []
        self._committer: asyncio.Task[None] | None = None
        self.appended = asyncio.Event()   # set after every commit that stored something

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, fn, *args)

    async def open(self) -> None:
        await self.call(self.spool.open)

    async def close(self) -> None:
        if self._committer is not None:
            await asyncio.gather(self._committer, return_exceptions=True)
        await self.call(self.spool.close)
        self._thread.shutdown(wait=True)

    async def append(self, draft: Draft) -> bytes:
        """Store one event durably (with whatever else is waiting); its value bytes."""
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self._queue.append((draft, fut))
        if self._committer is None or self._committer.done():
            self._committer = asyncio.create_task(self._commit_all())
        return await fut

    async def _commit_all(self) -> None:
        # Never cancelled (close() awaits it): a commit in the thread cannot be undone, so its
        # callers must learn its outcome.
        while self._queue:
            batch, self._queue = self._queue, []
            try:
                results = await self.call(self.spool.append, [d for d, _ in batch])
            except Exception as e:  # the spool thread failed outside SQLite's own errors
                err = StationError(f"spool write failed: {e!r}", code="station.spool_failed",
                                   retriable=True)
                results = [err] * len(batch)
            self._settle(batch, results)
            if any(isinstance(r, bytes) for r in results):
                self.appended.set()

    @staticmethod
    def _settle(batch: list[tuple[Draft, asyncio.Future[bytes]]],
                results: list[bytes | StationError]) -> None:
        for (_, fut), res in zip(batch, results, strict=True):
            if fut.done():
                continue
            if isinstance(res, bytes):
                fut.set_result(res)
            else:
                fut.set_exception(res)

    # --- what the sender uses ----------------------------------------------------------

    async def next_pending(self, max_events: int, max_bytes: int) -> list[Spooled]:
        return await self.call(self.spool.next_pending, max_events, max_bytes)

    async def record_acks(self, acked: list[tuple[int, int]], ends: dict[TopicPartition, int],
                          cluster_id: str | None) -> None:
        await self.call(self.spool.record_acks, acked, ends, cluster_id)

    async def marks(self) -> dict[TopicPartition, int]:
        return await self.call(self.spool.marks)

    async def cluster_id(self) -> str | None:
        return await self.call(self.spool.cluster_id)

    async def value_at(self, tp: TopicPartition, offset: int) -> bytes | None:
        return await self.call(self.spool.value_at, tp, offset)

    async def replay(self, partitions: set[TopicPartition]) -> int:
        return await self.call(self.spool.replay, sorted(partitions))

    async def purge(self) -> int:
        return await self.call(self.spool.purge)

    async def has_pending_through(self, last_id: int) -> bool:
        return await self.call(self.spool.has_pending_through, last_id)

    async def last_id(self) -> int:
        return await self.call(self.spool.last_id)
