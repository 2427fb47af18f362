"""StationClient for station code that is not async (a test rig's Python, a vendor's script).

It runs a `StationClient` on an event loop of its own, in a background thread; every method
blocks until the loop has done the work. `emit` returns once the event is in the spool, exactly
as the async `emit` does.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.schemas.bodies import Body

from .client import StationClient
from .interlock import InterlockVerdict
from .sender import SenderStats

T = TypeVar("T")


class SyncStationClient:
    def __init__(self, station_id: str, private_key: Ed25519PrivateKey, bootstrap_servers: str,
                 state_dir: Path, **options: Any) -> None:
        """Same arguments as `StationClient`."""
        self._client = StationClient(station_id, private_key, bootstrap_servers, state_dir,
                                     **options)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    def _run(self, coro: Coroutine[Any, Any, T]) -> T:
        if self._loop is None:
            coro.close()
            raise RuntimeError("call start() first")
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, daemon=True,
                                  name=f"station-{self._client.station_id}")
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._run(self._client.start())
        except BaseException:
            self._close_loop()
            raise

    def stop(self, timeout_s: float | None = None) -> None:
        if self._loop is None:
            return
        try:
            self._run(self._client.stop(timeout_s))
        finally:
            self._close_loop()

    def _close_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None and thread is not None:
            loop.call_soon_threadsafe(loop.stop)
            thread.join()
            loop.close()

    def __enter__(self) -> SyncStationClient:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def emit(self, event_type: str, subject: str, body: Body, *, time: datetime | str,
             event_id: str | None = None, traceparent: str | None = None) -> bytes:
        """See `StationClient.emit`."""
        return self._run(self._client.emit(event_type, subject, body, time=time,
                                           event_id=event_id, traceparent=traceparent))

    def validate(self, serial: str, step: int, lots: Iterable[str] = (),
                 parts: Iterable[str] = ()) -> InterlockVerdict:
        """See `StationClient.validate` (blocks at most about `validate_timeout_s`)."""
        return self._run(self._client.validate(serial, step, lots, parts))

    def flush(self, timeout_s: float | None = None) -> None:
        """See `StationClient.flush`."""
        self._run(self._client.flush(timeout_s))

    @property
    def pending(self) -> int:
        return self._client.pending

    @property
    def stats(self) -> SenderStats:
        return self._client.stats

    def last_seq(self, topic: str) -> int:
        return self._client.last_seq(topic)
