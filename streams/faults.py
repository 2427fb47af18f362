"""Fault injection points for the recovery tests (`linetrace worker --fault-inject POINT`).

Each point SIGKILLs the worker at one moment that decides whether data survives, the first
time it is reached. Nothing here runs unless a test asks for it.
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
}


class Faults:
    def __init__(self, point: str | None) -> None:
        if point is not None and point not in FAULT_POINTS:
            raise ValueError(f"unknown fault point {point!r}; one of {sorted(FAULT_POINTS)}")
        self.point = point

    def at(self, point: str) -> None:
        """Die here if this is the armed point."""
        if self.point == point:
            log.warning("fault injection: SIGKILL %s (%s)", point, FAULT_POINTS[point])
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)


NO_FAULTS = Faults(None)
