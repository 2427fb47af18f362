"""Warm latency of trace and recall through the library, each beside a bare-SQL floor.

The floor fetches the same rows with the driver directly (no ORM, no Python assembly): what
the database itself costs, so a slow figure says whether SQL or Python is to blame.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import event

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import history, trace
from linetrace.ledger.recall import recall
from linetrace.ledger.views import HistoryEntry, RecallHit, Trace


@dataclass
class Latency:
    p50_ms: float
    p99_ms: float
    mean_ms: float
    n: int

    def __str__(self) -> str:
        return f"{self.p50_ms:.2f} / {self.p99_ms:.2f}"


def latency(samples: Sequence[float]) -> Latency:
    ms = sorted(s * 1000 for s in samples)
    p99 = ms[min(len(ms) - 1, max(0, round(0.99 * len(ms)) - 1))]
    return Latency(statistics.median(ms), p99, statistics.fmean(ms), len(ms))


def timed(keys: Sequence[str], fn: Callable[[str], Any], warm: bool = True) -> list[float]:
    """Run fn over keys once to warm caches (if asked), then time each call."""
    if warm:
        for k in keys:
            fn(k)
    out = []
    for k in keys:
        t = time.perf_counter()
        fn(k)
        out.append(time.perf_counter() - t)
    return out


def trace_once(ledger: Ledger, serial: str) -> Trace:
    with ledger.reader() as s:
        return trace(s, serial)


def history_once(ledger: Ledger, serial: str) -> list[HistoryEntry]:
    with ledger.reader() as s:
        return history(s, serial)


def recall_once(ledger: Ledger, lot: str) -> list[RecallHit]:
    with ledger.reader() as s:
        return recall(s, lot=lot)


def _q(ledger: Ledger) -> Callable[[str], str]:
    """Driver paramstyle: `?` for sqlite3, `%s` for psycopg."""
    mark = "?" if ledger.dialect == "sqlite" else "%s"
    return lambda sql: sql.replace("?", mark)


TRACE_SQL = (
    'SELECT * FROM units WHERE serial = ?',
    'SELECT * FROM installs WHERE unit = ? AND removed_at IS NULL ORDER BY id',
    'SELECT u.serial FROM installs i JOIN units u ON u.serial = i.serial '
    'WHERE i.unit = ? AND i.removed_at IS NULL',
    'SELECT * FROM operations WHERE serial = ? ORDER BY started, id',
    'SELECT * FROM installs WHERE unit = ? AND removed_at IS NOT NULL ORDER BY removed_at, id',
    'SELECT * FROM tests WHERE serial = ? ORDER BY time, id',
    'SELECT m.* FROM measurements m JOIN tests t ON t.id = m.test_id WHERE t.serial = ? '
    'ORDER BY m.id',
    'SELECT * FROM firmware WHERE serial = ? ORDER BY time, id',
    "SELECT time, type, source, event_id, value FROM events WHERE subject = ? "
    "AND topic != 'line.telemetry' ORDER BY time, seq",
)
RECALL_SQL = (
    'SELECT i.unit, i.serial, i.mpn, i.lot, i.removed_at, u.product, u.state, u."order", '
    'u.carton, u.installed_in FROM installs i JOIN units u ON u.serial = i.unit '
    'WHERE i.lot = ? ORDER BY i.unit, i.id'
)


class Floor:
    """The same rows as trace / recall, fetched with bare driver statements on one connection."""

    def __init__(self, ledger: Ledger) -> None:
        self.raw = ledger.engine.raw_connection()
        self.q = _q(ledger)
        self.sqlite = ledger.dialect == "sqlite"

    def _run(self, sqls: Sequence[str], key: str, sub: bool = False) -> None:
        cur = self.raw.cursor()
        if self.sqlite:
            cur.execute("BEGIN")
        subs: list[str] = []
        for sql in sqls:
            cur.execute(self.q(sql), (key,))
            rows = cur.fetchall()
            if sub and "JOIN units u ON u.serial = i.serial" in sql:
                subs = [r[0] for r in rows]
        for s in subs:  # the sub-assemblies' own parts (the PCBA's reels)
            cur.execute(self.q(TRACE_SQL[1]), (s,))
            cur.fetchall()
        if self.sqlite:
            cur.execute("COMMIT")
        else:
            self.raw.commit()
        cur.close()

    def trace(self, serial: str) -> None:
        self._run(TRACE_SQL, serial, sub=True)

    def recall(self, lot: str) -> None:
        self._run((RECALL_SQL,), lot)

    def close(self) -> None:
        self.raw.close()


@dataclass
class Breakdown:
    statements: float  # SQL statements per trace
    sql_ms: float  # time inside the driver's execute, per trace
    total_ms: float
    history_ms: float  # genealogy.history alone
    history_rows: float


def trace_breakdown(ledger: Ledger, serials: Sequence[str]) -> Breakdown:
    """Where a trace's time goes: statements issued, time in the driver, history's share."""
    count, spent = [0], [0.0]
    started: list[float] = []

    def before(*_: Any) -> None:
        started.append(time.perf_counter())

    def after(*_: Any) -> None:
        spent[0] += time.perf_counter() - started.pop()
        count[0] += 1

    event.listen(ledger.engine, "before_cursor_execute", before)
    event.listen(ledger.engine, "after_cursor_execute", after)
    try:
        total = sum(timed(serials, lambda s: trace_once(ledger, s), warm=False))
    finally:
        event.remove(ledger.engine, "before_cursor_execute", before)
        event.remove(ledger.engine, "after_cursor_execute", after)
    hist = sum(timed(serials, lambda s: history_once(ledger, s), warm=False))
    rows = sum(len(history_once(ledger, s)) for s in serials[:50]) / min(50, len(serials))
    n = len(serials)
    return Breakdown(count[0] / n, spent[0] * 1000 / n, total * 1000 / n, hist * 1000 / n, rows)
