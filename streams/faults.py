"""Fault injection points for the recovery tests (`linetrace worker --fault-inject POINT`).

Each `kill-*` point SIGKILLs the worker at one moment that decides whether data survives, the
first time it is reached; `jump-past-ledger` moves the consumer past what the ledger holds
once, without killing anything. Nothing here runs unless a test asks for it.
"""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("linetrace.worker")

FAULT_POINTS = {
    "kill-after-write": "after the ledger committed a batch, before Kafka's offsets are committed",
    "kill-before-write": "after Kafka's offsets of a batch are committed, before the ledger "
                         "commits it",
    "kill-before-publish": "after a message is committed to the outbox, before the relay "
                           "publishes it",
    "kill-after-publish": "after the broker acknowledged an outbox message, before the relay "
                          "marks it sent",
    "jump-past-ledger": "the first batch read is dropped and the consumer moves to the end of "
                        "its partitions, past what the ledger holds (as a seek to Kafka's "
                        "committed offsets ahead of the ledger would)",
}


class Faults:
    def __init__(self, point: str | None) -> None:
        if point is not None and point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; one of {sorted(FAULT_POINTS)}")
        self.point = point
        self._fired: set[str] = set()

    def once(self, point: str) -> bool:
        """True the first time the armed point `point` is reached (points that do not kill)."""
        if self.point != point or point in self._fired:
            return False
        self._fired.add(point)
        log.warning("fault injection: %s (%s)", point, FAULT_POINTS[point])
        return True

    def at(self, point: str) -> None:
        """Die here if this is the armed point."""
        if self.point == point:
            log.warning("fault injection: SIGKILL %s (%s)", point, FAULT_POINTS[point])
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = Faults(None)
