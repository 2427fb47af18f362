"""The station's durable outbox: one SQLite file per station (WAL, `synchronous=FULL`).

`emit` returns once its event is committed here, so nothing it returned for is lost to a
crash or a power cut. The file holds, per station:

- `events`: every signed event in spool order (the order it is sent in). A row is *pending*
  until the broker acknowledged it, then *acknowledged* (with its offset) and kept for the
  retention window, so that it can be replayed if the broker loses it (the embedded broker
  keeps topics in memory and restarts empty).
- `seqs`: the last `stationseq` used per topic, updated in the same transaction as the row
  that used it, so numbering survives restarts exactly (no reservations, no gaps from them).
- `marks`: per topic-partition, the end offset the broker reported when it last acknowledged
  one of our events: what the sender compares with the broker after a reconnection.

The class is synchronous and not thread-safe: `SpoolThread` runs every call on one thread.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import StationError

SPOOL_FILE = "spool.db"
LEGACY_SEQ_FILE = "stationseq.json"  # written by the first StationClient version
MAX_SEQ = 10**16 - 1
_FORMAT = "1"

Headers = list[tuple[str, bytes]]
TopicPartition = tuple[str, int]
#: Builds the value bytes and headers of an event once it has its `stationseq`.
Builder = Callable[[int], tuple[bytes, Headers]]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seqs (topic TEXT PRIMARY KEY, last INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    topic TEXT NOT NULL, partition INTEGER NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL,
    key BLOB NOT NULL, value BLOB NOT NULL, headers TEXT NOT NULL, size INTEGER NOT NULL,
    spooled INTEGER NOT NULL,         -- ms since the epoch, also the record timestamp
    acked INTEGER, "offset" INTEGER   -- set when the broker acknowledged the row
);
CREATE UNIQUE INDEX IF NOT EXISTS events_event_id ON events (event_id);
CREATE INDEX IF NOT EXISTS events_pending ON events (id) WHERE acked IS NULL;
CREATE INDEX IF NOT EXISTS events_retained ON events (topic, partition, "offset")
    WHERE acked IS NOT NULL;
CREATE TABLE IF NOT EXISTS marks (
    topic TEXT NOT NULL, partition INTEGER NOT NULL, end_offset INTEGER NOT NULL,
    updated INTEGER NOT NULL, PRIMARY KEY (topic, partition)
);
"""


@dataclass(frozen=True, slots=True)
class Draft:
    """An event to spool: where it goes, and how to build its bytes once it is numbered.

    `reuse`: the caller chose `event_id`; if the spool already holds that id, the spooled
    bytes are the answer and nothing new is stored (an emit retried after a crash).
    """

    topic: str
    partition: int
    key: bytes
    event_id: str
    build: Builder
    reuse: bool = False


@dataclass(frozen=True, slots=True)
class Spooled:
    """One spooled event, exactly as it is (re)sent."""

    id: int
    topic: str
    partition: int
    seq: int
    key: bytes
    value: bytes
    headers: Headers
    spooled_ms: int


@dataclass(frozen=True, slots=True)
class SpoolLimits:
    """How much the spool may hold. Acknowledged rows are evicted (oldest first) before an
    emit is refused, so retention shrinks under pressure; pending rows are never dropped."""

    max_events: int = 1_000_000
    max_bytes: int = 512 * 1024 * 1024
    retention_s: float = 6 * 3600.0
    max_event_bytes: int = 900 * 1024  # below Kafka's default 1 MB message limit


def _now_ms() -> int:
    return int(time.time() * 1000)


def _encode_headers(headers: Headers) -> str:
    return json.dumps([[k, v.decode("latin-1")] for k, v in headers], separators=(",", ":"))


def _decode_headers(text: str) -> Headers:
    return [(str(k), str(v).encode("latin-1")) for k, v in json.loads(text)]


class Spool:
    def __init__(self, state_dir: Path, station_id: str, limits: SpoolLimits | None = None) -> None:
        self.state_dir = state_dir
        self.path = state_dir / SPOOL_FILE
        self.station_id = station_id
        self.limits = limits or SpoolLimits()
        self._db: sqlite3.Connection | None = None
        self._seqs: dict[str, int] = {}
        self.count = 0          # rows held (pending + retained)
        self.bytes = 0          # their size
        self.pending = 0        # rows not yet acknowledged

    # --- opening ------------------------------------------------------------------------

    def open(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        try:
            db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.executescript(_SCHEMA)
            meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise StationError(
                f"{self.path} is not a readable station spool ({e}); restore it from backup. "
                "Moving it away loses unsent events and restarts numbering (re-enrol the key)",
                code="station.state_corrupt",
            ) from None
        owner = meta.get("station_id")
        if owner is not None and owner != self.station_id:
            db.close()
            raise StationError(
                f"{self.path} belongs to station {owner!r}, not {self.station_id!r}; "
                "give each station its own state directory", code="station.state_mismatch")
        self._db = db
        if owner is None:
            with self._transaction():
                db.executemany("INSERT INTO meta VALUES (?, ?)",
                               [("station_id", self.station_id), ("format", _FORMAT)])
                self._import_legacy_seqs(db)
        self._seqs = {t: int(n) for t, n in db.execute("SELECT topic, last FROM seqs")}
        self.count, self.bytes, self.pending = db.execute(
            "SELECT count(*), coalesce(sum(size), 0), count(*) - count(acked) FROM events"
        ).fetchone()

    def _import_legacy_seqs(self, db: sqlite3.Connection) -> None:
        """Carry over the numbering of the first client version (`stationseq.json`)."""
        legacy = self.state_dir / LEGACY_SEQ_FILE
        if not legacy.exists():
            return
        try:
            doc = json.loads(legacy.read_bytes())
            if doc["station_id"] != self.station_id:
                raise ValueError(f"it belongs to {doc['station_id']!r}")
            reserved = {str(t): int(n) for t, n in doc["reserved"].items()}
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise StationError(f"{legacy} cannot be carried over ({e}); numbering is never "
                               "guessed", code="station.state_corrupt") from None
        db.executemany("INSERT INTO seqs VALUES (?, ?)", sorted(reserved.items()))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise StationError(f"the spool of {self.station_id} is not open",
                               code="station.not_started")
        return self._db

    def _transaction(self, *, durable: bool = True) -> _Transaction:
        return _Transaction(self.db, durable)

    def last_seq(self, topic: str) -> int:
        return self._seqs.get(topic, 0)

    # --- appending (what emit waits for) -------------------------------------------------

    def append(self, drafts: Sequence[Draft]) -> list[bytes | StationError]:
        """Number, build and store `drafts` in one durable transaction (a group commit).

        Returns each draft's value bytes, or the StationError that refused it (nothing stored
        and no number used for that one). If the commit itself fails every draft is refused.
        """
        out: list[bytes | StationError] = []
        seqs = dict(self._seqs)
        count, size_total, pending = self.count, self.bytes, self.pending
        db = self.db
        try:
            with self._transaction():
                for d in drafts:
                    if d.reuse and (held := db.execute(
                            "SELECT value FROM events WHERE event_id = ?",
                            (d.event_id,)).fetchone()) is not None:
                        out.append(bytes(held[0]))
                        continue
                    seq = seqs.get(d.topic, 0) + 1
                    if seq > MAX_SEQ:
                        out.append(StationError(f"stationseq for {d.topic} is exhausted; enrol "
                                                "a new station id", code="station.seq_exhausted"))
                        continue
                    try:
                        value, headers = d.build(seq)
                    except StationError as e:
                        out.append(e)
                        continue
                    htext = _encode_headers(headers)
                    size = len(d.key) + len(value) + len(htext)
                    if size > self.limits.max_event_bytes:
                        out.append(StationError(
                            f"event of {size} bytes exceeds the {self.limits.max_event_bytes}-byte "
                            "limit of one record", code="station.invalid_event"))
                        continue
                    freed = self._make_room(db, count + 1, size_total + size)
                    if freed is None:
                        out.append(StationError(
                            f"station {self.station_id}: the spool is full ({pending} events not "
                            f"yet acknowledged, limits {self.limits.max_events} events / "
                            f"{self.limits.max_bytes} bytes); is the broker reachable? The event "
                            "was not stored", code="station.spool_full", retriable=True))
                        continue
                    count, size_total = count - freed[0], size_total - freed[1]
                    db.execute(
                        "INSERT INTO events (topic, partition, seq, event_id, key, value, "
                        "headers, size, spooled) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (d.topic, d.partition, seq, d.event_id, d.key, value, htext, size,
                         _now_ms()))
                    db.execute("INSERT INTO seqs VALUES (?, ?) ON CONFLICT (topic) DO UPDATE "
                               "SET last = excluded.last", (d.topic, seq))
                    seqs[d.topic] = seq
                    count, size_total, pending = count + 1, size_total + size, pending + 1
                    out.append(value)
        except sqlite3.Error as e:
            err = StationError(f"station {self.station_id}: could not write the spool "
                               f"{self.path} ({e}); nothing was stored",
                               code="station.spool_failed", retriable=True)
            return [err for _ in drafts]
        self._seqs, self.count, self.bytes, self.pending = seqs, count, size_total, pending
        return out

    def _make_room(self, db: sqlite3.Connection, count: int, size: int) -> tuple[int, int] | None:
        """Evict the oldest acknowledged rows until `count`/`size` fit; None if they cannot."""
        over_n = count - self.limits.max_events
        over_b = size - self.limits.max_bytes
        if over_n <= 0 and over_b <= 0:
            return (0, 0)
        n = b = 0
        rows = db.execute("SELECT id, size FROM events WHERE acked IS NOT NULL ORDER BY id")
        victims: list[int] = []
        for rid, rsize in rows:
            if n >= over_n and b >= over_b:
                break
            victims.append(rid)
            n, b = n + 1, b + rsize
        rows.close()
        if n < over_n or b < over_b:
            return None
        db.executemany("DELETE FROM events WHERE id = ?", [(v,) for v in victims])
        return (n, b)

    # --- sending ------------------------------------------------------------------------

    def next_pending(self, max_events: int, max_bytes: int) -> list[Spooled]:
        """The oldest pending rows in spool order (at least one, then up to the limits)."""
        rows = self.db.execute(
            'SELECT id, topic, partition, seq, key, value, headers, spooled, size FROM events '
            'WHERE acked IS NULL ORDER BY id LIMIT ?', (max_events,)).fetchall()
        out: list[Spooled] = []
        total = 0
        for rid, topic, part, seq, key, value, headers, spooled, size in rows:
            if out and total + size > max_bytes:
                break
            total += size
            out.append(Spooled(rid, topic, part, seq, key, value, _decode_headers(headers),
                               spooled))
        return out

    def record_acks(self, acked: Iterable[tuple[int, int]], ends: dict[TopicPartition, int],
                    cluster_id: str | None) -> None:
        """Mark rows (id, offset) acknowledged and remember each partition's end offset.

        Not fsync'd on its own (`synchronous=NORMAL`): losing the latest acks to a power cut
        only resends them, which ingest de-duplicates; the next durable commit covers them.
        """
        now = _now_ms()
        rows = [(now, off, rid) for rid, off in acked]
        with self._transaction(durable=False):
            self.db.executemany('UPDATE events SET acked = ?, "offset" = ? WHERE id = ? '
                                'AND acked IS NULL', rows)
            self.db.executemany(
                "INSERT INTO marks VALUES (?, ?, ?, ?) ON CONFLICT (topic, partition) DO UPDATE "
                "SET end_offset = excluded.end_offset, updated = excluded.updated",
                [(t, p, end, now) for (t, p), end in ends.items()])
            if cluster_id is not None:
                self.db.execute("INSERT INTO meta VALUES ('cluster_id', ?) ON CONFLICT (name) "
                                "DO UPDATE SET value = excluded.value", (cluster_id,))
        self.pending -= len(rows)

    # --- confirming and replaying ----------------------------------------------------------

    def marks(self) -> dict[TopicPartition, int]:
        return {(t, p): end for t, p, end in
                self.db.execute("SELECT topic, partition, end_offset FROM marks")}

    def cluster_id(self) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE name = 'cluster_id'").fetchone()
        return None if row is None else str(row[0])

    def value_at(self, tp: TopicPartition, offset: int) -> bytes | None:
        """Our retained value at `offset` of `tp`, if we still hold it."""
        row = self.db.execute('SELECT value FROM events WHERE acked IS NOT NULL AND topic = ? '
                              'AND partition = ? AND "offset" = ?', (*tp, offset)).fetchone()
        return None if row is None else bytes(row[0])

    def replay(self, partitions: Iterable[TopicPartition]) -> int:
        """Make the retained rows of `partitions` pending again (durably); they keep their
        place in spool order, so they are resent before anything newer on their partition."""
        n = 0
        with self._transaction():
            for t, p in partitions:
                cur = self.db.execute('UPDATE events SET acked = NULL, "offset" = NULL '
                                      'WHERE acked IS NOT NULL AND topic = ? AND partition = ?',
                                      (t, p))
                n += cur.rowcount
                self.db.execute("DELETE FROM marks WHERE topic = ? AND partition = ?", (t, p))
        self.pending += n
        return n

    def purge(self, now_ms: int | None = None, batch: int = 5000) -> int:
        """Drop acknowledged rows (and marks) older than the retention window."""
        cutoff = (now_ms or _now_ms()) - int(self.limits.retention_s * 1000)
        with self._transaction(durable=False):
            rows = self.db.execute("SELECT id, size FROM events WHERE acked IS NOT NULL AND "
                                   "acked < ? ORDER BY id LIMIT ?", (cutoff, batch)).fetchall()
            self.db.executemany("DELETE FROM events WHERE id = ?", [(r[0],) for r in rows])
            self.db.execute("DELETE FROM marks WHERE updated < ?", (cutoff,))
        self.count -= len(rows)
        self.bytes -= sum(r[1] for r in rows)
        return len(rows)

    def has_pending_through(self, last_id: int) -> bool:
        return self.db.execute("SELECT 1 FROM events WHERE acked IS NULL AND id <= ? LIMIT 1",
                               (last_id,)).fetchone() is not None

    def last_id(self) -> int:
        row = self.db.execute("SELECT max(id) FROM events").fetchone()
        return int(row[0] or 0)


class _Transaction:
    """BEGIN IMMEDIATE ... COMMIT, optionally without the fsync of `synchronous=FULL`."""

    def __init__(self, db: sqlite3.Connection, durable: bool) -> None:
        self.db = db
        self.durable = durable

    def __enter__(self) -> sqlite3.Connection:
        if not self.durable:
            self.db.execute("PRAGMA synchronous=NORMAL")
        self.db.execute("BEGIN IMMEDIATE")
        return self.db

    def __exit__(self, exc_type: object, *_: object) -> None:
        try:
            if exc_type is None:
                try:
                    self.db.execute("COMMIT")
                except sqlite3.Error:
                    if self.db.in_transaction:
                        self.db.execute("ROLLBACK")
                    raise
            else:
                self.db.execute("ROLLBACK")
        finally:
            if not self.durable:
                self.db.execute("PRAGMA synchronous=FULL")
