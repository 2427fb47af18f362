"""The console's handles, on `app.state.console`, and the dependency that gets them."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi import Request
from sqlalchemy.orm import Session

from linetrace.ledger.console_key import enroll_console_key
from linetrace.ledger.db import Ledger

from .config import ConsoleConfig


class ConsoleState:
    """`ledger`: the writable handle (sign-in tables, actions through ledger functions);
    `reader()`: a read-only session for every query (on SQLite it never takes the write
    lock, so the console never slows the worker's batches)."""

    def __init__(self, config: ConsoleConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.db_url, create=False)
        self._read: Ledger | None = None
        self._enrolled = False
        self._enrol_lock = threading.Lock()
        self._read_lock = threading.Lock()

    def enrol_console_key(self) -> None:
        """Enrol the console's key in the log (a plant-signed `console.enrolled`, once per key
        id) so its attestations verify: at start-up, and before the first attested action (a
        blocking call: run it in a thread from async code)."""
        with self._enrol_lock:
            if not self._enrolled:
                enroll_console_key(self.ledger, self.plant_key, self.console_key)
                self._enrolled = True

    @property
    def plant_key(self) -> Ed25519PrivateKey:
        return self.config.plant_key

    @property
    def console_key(self) -> Ed25519PrivateKey:
        return self.config.console_key

    @contextmanager
    def reader(self) -> Iterator[Session]:
        if self._read is None:
            with self._read_lock:  # requests run in a thread pool: open the handle once
                if self._read is None:
                    self._read = Ledger(self.config.db_url, read_only=True)
        with self._read.reader() as session:
            yield session

    def close(self) -> None:
        self.ledger.close()
        if self._read is not None:
            self._read.close()


def get_state(request: Request) -> ConsoleState:
    state: ConsoleState = request.app.state.console
    return state
