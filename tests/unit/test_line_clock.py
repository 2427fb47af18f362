"""The line clock and the time flags (issue 8, item 5): pure rules, then the stage on SQLite.

An event is never refused for its time. One far from its partition's clock is flagged and
does not move the clock; a run of agreeing far events resets it. The stage rebuilds the clock
from the ledger on every batch, so restarts and batch boundaries change nothing.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.flags import EventFlag, list_flags
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import partition_of
from linetrace.streams.line_clock import FAR, RESET, PartitionClock, observe
from linetrace.streams.stages import Pipeline
from linetrace.streams.time_flags import LineClockStage, partition_clock

DAY = timedelta(days=1)
T0 = datetime(2026, 1, 5, 6, 0, tzinfo=UTC)
BOUND = timedelta(days=7)


def at(days: float) -> datetime:
    return T0 + timedelta(days=days)


def run(times: list[datetime], bound: timedelta = BOUND, reset_after: int = 5,
        ) -> tuple[PartitionClock, list[str | None]]:
    clock, kinds = PartitionClock(), []
    for t in times:
        clock, kind = observe(clock, t, bound, reset_after)
        kinds.append(kind)
    return clock, kinds


# --- the rule ------------------------------------------------------------------------------

def test_the_clock_is_the_highest_event_time_seen() -> None:
    clock, kinds = run([at(0), at(1), at(0.5), at(2)])
    assert clock.time == at(2) and kinds == [None] * 4


@pytest.mark.parametrize("absurd", [datetime(1, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC),
                                    datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)])
def test_an_absurd_time_is_flagged_and_does_not_drag_the_clock(absurd: datetime) -> None:
    clock, kinds = run([at(0), at(1), absurd, at(1.5)])
    assert kinds == [None, None, FAR, None]
    assert clock.time == at(1.5)


def test_within_the_bound_is_never_flagged_either_way() -> None:
    _, kinds = run([at(0), at(7), at(0.01), at(14)])
    assert kinds == [None, None, None, None]
    _, kinds = run([at(0), at(7.01)])
    assert kinds == [None, FAR]


def test_agreeing_far_events_in_a_row_reset_the_clock_forwards_and_backwards() -> None:
    jump = [at(60 + i / 24) for i in range(5)]  # the plant restarts two months later
    clock, kinds = run([at(0), *jump, at(60.5)])
    assert kinds == [None, FAR, FAR, FAR, FAR, RESET, None]
    assert clock.time == at(60.5)
    poisoned = [datetime(9999, 1, 1, tzinfo=UTC)]  # a first event from a broken clock...
    clock, kinds = run([*poisoned, *[at(i / 24) for i in range(6)]])
    assert kinds == [None, FAR, FAR, FAR, FAR, RESET, None]  # ...is outvoted
    assert clock.time == at(5 / 24)


def test_far_events_that_disagree_or_are_interrupted_by_a_moving_clock_do_not_reset() -> None:
    wild = [datetime(1900, 1, 1, tzinfo=UTC), datetime(9999, 1, 1, tzinfo=UTC)] * 4
    clock, kinds = run([at(0), *wild])
    assert kinds == [None] + [FAR] * 8 and clock.time == at(0)
    broken = datetime(1900, 1, 1, tzinfo=UTC)
    seq = [at(0)] + [x for k in range(1, 5) for x in (broken, broken, at(k / 10))]
    clock, kinds = run(seq)  # normal events keep moving the clock: the run starts over
    assert RESET not in kinds and kinds.count(FAR) == 8 and clock.time == at(0.4)


# --- the stage, over a real ledger -----------------------------------------------------------

KEY = signing.generate_key()
STATION = "aoi-01"


def event(serial: str, time: datetime, seq: int) -> Candidate:
    text = (f"{time.year:04d}-{time.month:02d}-{time.day:02d}T{time.hour:02d}:{time.minute:02d}:"
            f"{time.second:02d}Z")
    v = encode_event(event_type="unit.arrived", source=STATION, subject=serial, time=text,
                     stationseq=seq, event_id=str(uuid.uuid5(uuid.NAMESPACE_OID, f"{serial}{seq}")),
                     body=b.UnitArrived(step=30))
    kid, sig = signing.read_signature(signing.sign_value(v, KEY))
    return Candidate(SourceRecord("line.events", partition_of(serial.encode(), 8), seq,
                                  serial.encode(), v), decode_event(v), kid, sig)


def ledger_at(path: Path, url: str | None = None) -> Ledger:
    path.mkdir(parents=True, exist_ok=True)
    lg = Ledger(url or f"sqlite:///{path / 'l.db'}")
    plant, _ = load_or_create_plant_key(path / "keys")
    enroll_station(lg, plant, STATION, "aoi", KEY.public_key())
    return lg


def stream() -> list[Candidate]:
    """Two units on (almost surely) different partitions; absurd times among normal ones."""
    times = {"PCBA-A": [at(0), at(0.1), datetime(1, 1, 1, tzinfo=UTC), at(0.2),
                        datetime(9999, 12, 31, tzinfo=UTC), at(0.3)],
             "PCBA-E": [datetime(1900, 1, 1, tzinfo=UTC), at(0), at(0.1), at(0.2), at(0.3),
                        at(0.4), at(0.5)]}
    out, seq = [], 0
    for i in range(7):
        for serial, ts in times.items():
            if i < len(ts):
                seq += 1
                out.append(event(serial, ts[i], seq))
    return out


def write(lg: Ledger, cands: list[Candidate], batch: int, bound: timedelta = BOUND) -> None:
    for i in range(0, len(cands), batch):
        out = write_batch(lg, cands[i:i + batch], stages=Pipeline([LineClockStage(bound)]))
        assert len(out.stored) == len(cands[i:i + batch])  # never refused for time


def flags(lg: Ledger) -> list[tuple[str, str, str]]:
    return [(f.subject, f.kind, f.event_time.isoformat()) for f in list_flags(lg)]


def test_the_stage_flags_far_times_and_lists_them(tmp_path: Path) -> None:
    assert partition_of(b"PCBA-A", 8) != partition_of(b"PCBA-E", 8)
    lg = ledger_at(tmp_path)
    write(lg, stream(), batch=500)
    assert sorted(flags(lg)) == sorted([
        ("PCBA-A", FAR, "0001-01-01T00:00:00+00:00"),
        ("PCBA-A", FAR, "9999-12-31T00:00:00+00:00"),
        # B's first event set its clock at 1900; the next ones (2026) disagree with it, agree
        # with each other, and after five in a row the clock resets to them
        *[("PCBA-E", FAR, at(d).isoformat()) for d in (0, 0.1, 0.2, 0.3)],
        ("PCBA-E", RESET, at(0.4).isoformat()),
    ])
    with lg.reader() as s:
        row = s.scalars(select(EventFlag).where(EventFlag.kind == FAR)).first()
        assert row is not None and row.clock is not None and "line clock" in row.message
        clock_a = partition_clock(s, "line.events", partition_of(b"PCBA-A", 8), 10**9)
        clock_b = partition_clock(s, "line.events", partition_of(b"PCBA-E", 8), 10**9)
    assert clock_a.time == at(0.3) and clock_b.time == at(0.5)  # absurd times did not drag them


@pytest.mark.parametrize("batch", [1, 3, 7])
def test_batch_boundaries_and_restarts_flag_the_same_events(tmp_path: Path, batch: int) -> None:
    """A fresh stage per batch is a worker restarted before every batch."""
    whole = ledger_at(tmp_path / "whole")
    write(whole, stream(), batch=500)
    pieces = ledger_at(tmp_path / "pieces")
    write(pieces, stream(), batch=batch)
    assert flags(pieces) == flags(whole)


def test_a_replayed_batch_stores_no_second_flag(tmp_path: Path) -> None:
    lg = ledger_at(tmp_path)
    cands = stream()
    write(lg, cands, batch=500)
    before = flags(lg)
    out = write_batch(lg, cands, stages=Pipeline([LineClockStage(BOUND)]))
    assert out.duplicates == len(cands) and flags(lg) == before


def test_the_bound_is_configurable(tmp_path: Path) -> None:
    lg = ledger_at(tmp_path)
    cands = [event("PCBA-C", at(d), i + 1) for i, d in enumerate((0, 0.5, 1.5))]
    write(lg, cands, batch=500, bound=timedelta(hours=12))
    assert [(k, t) for _, k, t in flags(lg)] == [(FAR, at(1.5).isoformat())]


@pytest.mark.integration
def test_postgresql_flags_what_sqlite_flags(tmp_path: Path, pg_url: str) -> None:
    """The clock queries (timestamptz, years 0001 and 9999) on the other database."""
    lite = ledger_at(tmp_path / "lite")
    write(lite, stream(), batch=500)
    pg = ledger_at(tmp_path / "pg", pg_url)
    try:
        write(pg, stream(), batch=3)
        assert flags(pg) == flags(lite) and len(flags(pg)) == 7
    finally:
        pg.close()
