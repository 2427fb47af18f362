"""What a station's spool still owes the line, read from outside the station (read-only).

`linetrace up --until-idle` must not call the line idle while a station still holds work. A
spool holds work when it has

- *pending* events: spooled and not yet acknowledged by any broker; or
- events *acknowledged by another broker incarnation*: the broker that acknowledged them (its
  cluster id, kept in the spool) is not the one running now. The embedded broker keeps its log
  in memory and takes a new cluster id at every start, so such events may be lost; the
  station resends them once it runs and sees the new broker (`sender.py`). Whether they are
  really missing is for the caller to decide (e.g. by looking them up in the ledger: an event
  the worker stored before the restart is not work), so their event ids are returned.

Real Kafka keeps its cluster id and never loses acknowledged records: there only pending
events count.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path

from .spool import SPOOL_FILE


@dataclass(frozen=True)
class SpoolBacklog:
    """One station's spool, as far as it concerns "is the line idle"."""

    station_id: str
    path: Path
    pending: int = 0
    #: The cluster id of the broker that last acknowledged this station's events.
    acked_by: str | None = None
    #: Event ids acknowledged by a broker other than the current one, still retained.
    acked_elsewhere: tuple[str, ...] = field(default=())
    #: Why the spool could not be read (then it counts as holding work).
    unreadable: str | None = None

    @property
    def empty(self) -> bool:
        return not self.pending and not self.acked_elsewhere and self.unreadable is None

    def describe(self) -> str:
        if self.unreadable is not None:
            return f"station {self.station_id}: spool {self.path} unreadable ({self.unreadable})"
        parts = []
        if self.pending:
            parts.append(f"{self.pending} event(s) not yet acknowledged by the broker")
        if self.acked_elsewhere:
            parts.append(f"{len(self.acked_elsewhere)} event(s) acknowledged by an earlier "
                         f"broker ({self.acked_by}) that the station has not resent yet")
        return f"station {self.station_id}: " + ", ".join(parts or ["nothing"])


def spool_backlog(state_dir: Path, incarnation: str | None) -> SpoolBacklog:
    """The backlog of the spool in `state_dir` (a station's directory), compared with the
    broker incarnation (cluster id) running now; None: unknown, only pending events count."""
    path = state_dir / SPOOL_FILE
    station = state_dir.name
    try:
        db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
    except sqlite3.Error as e:
        return SpoolBacklog(station, path, unreadable=str(e))
    try:
        meta = dict(db.execute("SELECT name, value FROM meta").fetchall())
        station = str(meta.get("station_id", station))
        acked_by = meta.get("cluster_id")
        pending = db.execute("SELECT count(*) FROM events WHERE acked IS NULL").fetchone()[0]
        elsewhere: tuple[str, ...] = ()
        if incarnation is not None and acked_by is not None and acked_by != incarnation:
            elsewhere = tuple(r[0] for r in db.execute(
                "SELECT event_id FROM events WHERE acked IS NOT NULL ORDER BY id"))
    except sqlite3.Error as e:
        return SpoolBacklog(station, path, unreadable=str(e))
    finally:
        db.close()
    return SpoolBacklog(station, path, int(pending), acked_by, elsewhere)


def station_backlogs(stations_dir: Path, incarnation: str | None) -> list[SpoolBacklog]:
    """Every spool under `stations_dir` (`<dir>/<station id>/spool.db`) that holds work."""
    if not stations_dir.is_dir():
        return []
    found = (spool_backlog(d, incarnation) for d in sorted(stations_dir.iterdir())
             if (d / SPOOL_FILE).is_file())
    return [b for b in found if not b.empty]
