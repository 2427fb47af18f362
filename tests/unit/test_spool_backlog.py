"""What a station's spool still owes the line (`stations.backlog`), read from outside."""

from __future__ import annotations

import uuid
from pathlib import Path

from linetrace.stations.backlog import spool_backlog, station_backlogs
from linetrace.stations.spool import Draft, Spool


def _spool(state: Path, n: int) -> tuple[Spool, list[str]]:
    spool = Spool(state, state.name)
    spool.open()
    ids = [str(uuid.uuid4()) for _ in range(n)]
    out = spool.append([Draft("line.events", 0, b"k", eid,
                              lambda seq: (f"v{seq}".encode(), [])) for eid in ids])
    assert all(isinstance(v, bytes) for v in out)
    return spool, ids


def test_pending_events_are_work_whoever_the_broker_is(tmp_path: Path) -> None:
    spool, _ = _spool(tmp_path / "ict-01", 3)
    spool.record_acks([(1, 0)], {("line.events", 0): 1}, "linetrace-a")
    spool.close()
    for incarnation in ("linetrace-a", "linetrace-b", None):
        b = spool_backlog(tmp_path / "ict-01", incarnation)
        assert b.pending == 2 and not b.empty
        assert "2 event(s) not yet acknowledged" in b.describe()


def test_events_acknowledged_by_another_incarnation_are_work_until_resent(tmp_path: Path) -> None:
    spool, ids = _spool(tmp_path / "ict-02", 3)
    spool.record_acks([(1, 0), (2, 1), (3, 2)], {("line.events", 0): 3}, "linetrace-a")
    b = spool_backlog(tmp_path / "ict-02", "linetrace-a")
    assert b.pending == 0 and b.acked_elsewhere == () and b.empty
    b = spool_backlog(tmp_path / "ict-02", "linetrace-b")  # the broker restarted empty
    assert b.acked_elsewhere == tuple(ids) and not b.empty and b.acked_by == "linetrace-a"
    assert spool_backlog(tmp_path / "ict-02", None).empty  # unknown broker: pending only
    assert spool.replay([("line.events", 0)]) == 3  # what the sender does on seeing it
    spool.record_acks([(1, 0), (2, 1), (3, 2)], {("line.events", 0): 3}, "linetrace-b")
    spool.close()
    assert spool_backlog(tmp_path / "ict-02", "linetrace-b").empty


def test_station_backlogs_lists_only_spools_holding_work(tmp_path: Path) -> None:
    stations = tmp_path / "stations"
    done, _ = _spool(stations / "aoi-01", 1)
    done.record_acks([(1, 0)], {("line.events", 0): 1}, "linetrace-a")
    done.close()
    late, _ = _spool(stations / "ict-03", 2)
    late.close()
    (stations / "keys-only").mkdir()
    assert [b.station_id for b in station_backlogs(stations, "linetrace-a")] == ["ict-03"]
    assert [b.station_id for b in station_backlogs(stations, "linetrace-b")] == ["aoi-01",
                                                                                 "ict-03"]
    assert station_backlogs(tmp_path / "absent", "linetrace-a") == []


def test_an_unreadable_spool_counts_as_holding_work(tmp_path: Path) -> None:
    state = tmp_path / "ict-04"
    state.mkdir()
    (state / "spool.db").write_bytes(b"not a database" * 100)
    b = spool_backlog(state, "linetrace-a")
    assert b.unreadable is not None and not b.empty and "unreadable" in b.describe()
