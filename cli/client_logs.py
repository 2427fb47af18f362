"""Broker client libraries log a state change once, then a summary.

While the broker is away for three seconds, aiokafka logs an ERROR for every connection
attempt, metadata refresh, heartbeat and fetch of every client in the process: hundreds of
lines that say one thing. `quiet_client_logs` puts a `Burst` handler on those libraries'
loggers: the first WARNING-or-worse record of a burst is logged (marked as the start of one);
the rest are counted by message template; once none has come for `quiet_s`, one summary line
says how many there were, over how long, and which. Records below WARNING pass unchanged.

The handler sits on the library's top logger with `propagate` off and hands what it lets
through to the root logger's handlers at that moment, so it survives Faust replacing the root
handlers when the worker starts.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter

#: The loggers folded (every record of their children passes through them).
CLIENT_LOGGERS = ("aiokafka",)
SUMMARY_LOGGER = "linetrace.client_logs"
#: The StationClient's logger (`linetrace simulate` runs a whole line's stations in one process).
STATION_LOGGER = "linetrace.stations.client"


class Burst(logging.Handler):
    def __init__(self, name: str, quiet_s: float = 2.0) -> None:
        super().__init__()
        self.library = name
        self.quiet_s = quiet_s
        self._guard = threading.Lock()
        self._start = 0.0
        self._last = 0.0
        self._counts: Counter[str] = Counter()
        self._timer: threading.Timer | None = None
        self.bursts = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno >= logging.WARNING:
            with self._guard:
                now = time.monotonic()
                self._last = now
                if self._timer is not None:  # in a burst: count it
                    self._counts[f"{record.levelname} {record.msg}"] += 1
                    return
                self._start = now
                self.bursts += 1
                self._timer = threading.Timer(self.quiet_s, self._settle)
                self._timer.daemon = True
                self._timer.start()
            record = logging.makeLogRecord({
                **record.__dict__, "args": (),
                "msg": f"{record.getMessage()} [{self.library}: further warnings and errors are "
                       f"counted and summarized once they stop for {self.quiet_s:g} s]"})
        _forward(record)

    def _settle(self) -> None:
        with self._guard:
            idle = time.monotonic() - self._last
            if idle < self.quiet_s:  # still coming: look again when it may have stopped
                self._timer = threading.Timer(self.quiet_s - idle, self._settle)
                self._timer.daemon = True
                self._timer.start()
                return
            counts, self._counts, self._timer = self._counts, Counter(), None
            span = self._last - self._start
        if not counts:
            return
        top = ", ".join(f"{n} x {msg[:90]!r}" for msg, n in counts.most_common(4))
        more = len(counts) - 4
        logging.getLogger(SUMMARY_LOGGER).warning(
            "%s: %d more warning(s)/error(s) in %.1f s, then quiet for %g s: %s%s",
            self.library, sum(counts.values()), span, self.quiet_s, top,
            f" and {more} other kind(s)" if more > 0 else "")


def _forward(record: logging.LogRecord) -> None:
    root = logging.getLogger()
    if record.levelno >= root.getEffectiveLevel():
        root.handle(record)


def quiet_client_logs(names: tuple[str, ...] = CLIENT_LOGGERS, quiet_s: float = 2.0) -> None:
    """Install a `Burst` handler on each of `names` (idempotent)."""
    for name in names:
        logger = logging.getLogger(name)
        # Off again even if the handler is there: a logging configuration applied since (a
        # library's dictConfig) may have turned it on, and every record would then reach the
        # root twice, once folded and once as it came.
        logger.propagate = False
        if not any(isinstance(h, Burst) for h in logger.handlers):
            logger.addHandler(Burst(name, quiet_s))
