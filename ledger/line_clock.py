"""The line clock: of one partition, what an event's time says against it (pure), and as the
ledger records it.

CONTRACTS.md "Time": each worker keeps a line clock per partition = the highest event time
seen there. Ingest never refuses an event for its time (a replay must decide what live ingest
decided; simulated runs use fixed dates), but an event whose time is more than `bound` from
its partition's clock must not drag the clock (a station with its RTC at 0001-01-01, 1900 or
9999): it leaves the clock where it is and is flagged `time.far_from_clock`.

A line can really jump (a plant restarting after a long stop, a simulation started at another
date): when `reset_after` events in a row since the clock last moved are all far from it and
agree with each other (within `bound`), the last of them resets the clock to its own time and
is flagged `time.clock_reset`. History before a reset no longer counts for the clock.

The pure part only decides; `streams/time_flags.py` reads the state from the ledger and records the
flags.

A partition that goes silent (no batch of it written for `SILENCE_GRACE` of wall time) keeps
time on the wall: its clock advances by the wall time elapsed past the grace period times the
line speed (`LINETRACE_LINE_SPEED`: 1 for a real line, the simulator's speed factor for a
simulated one, 0 = never advance on wall time), so a check that waits on it (a consumed
sub-assembly's events, a unit's max cycle time) is decided even when nothing more arrives
there (`advanced`). With speed 0 the line clock is event time alone, and a replay decides
exactly what live ingest decided.

The clocks as the ledger records them (`partition_clock`, `partition_clocks`) and the time
alerts are judged at (`line_clock`) are here too, in the ledger, so the worker's stages, the
CLI and the console read one definition (`linetrace.streams.line_clock`, `time_flags`,
`route_stage` and `detect.alert_tick` re-export them).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, literal, select, union_all
from sqlalchemy.orm import Session

from linetrace.schemas.topics import ALL_TOPICS, EVENTS

from .flags import EventFlag
from .models import EventRow, IngestPosition

Partition = tuple[str, int]
#: "every event stored": the clocks count the batch's own events too.
ALL_SEQS = 2 ** 62

FAR = "time.far_from_clock"
RESET = "time.clock_reset"
#: Flag kinds whose events never count for the clock.
EXCLUDED = frozenset({FAR})
#: Consecutive agreeing far events that reset a partition's clock.
RESET_AFTER = 5
#: Default of LINETRACE_CLOCK_BOUND_SECONDS.
DEFAULT_BOUND = timedelta(days=7)
#: Wall time a partition must be silent before its clock advances on wall time.
SILENCE_GRACE = timedelta(seconds=10)
#: Default of LINETRACE_LINE_SPEED: line seconds per wall second of silence.
DEFAULT_SPEED = 1.0
_MAX_ADVANCE = timedelta(days=365 * 100)


@dataclass(frozen=True)
class PartitionClock:
    """`time`: the highest event time counted (None before the partition's first event);
    `far`: times of the far events since the clock last moved, oldest first (at most
    `reset_after - 1` kept)."""

    time: datetime | None = None
    far: tuple[datetime, ...] = ()


def observe(clock: PartitionClock, time: datetime, bound: timedelta,
            reset_after: int = RESET_AFTER) -> tuple[PartitionClock, str | None]:
    """The clock after an event at `time`, and the flag the event gets (None: none)."""
    if clock.time is None:
        return PartitionClock(time), None
    if abs(time - clock.time) <= bound:
        if time >= clock.time:
            return PartitionClock(time), None
        return clock, None
    run = clock.far[-(reset_after - 1):] if reset_after > 1 else ()
    if len(run) >= reset_after - 1 and all(abs(time - t) <= bound for t in run):
        return PartitionClock(time), RESET
    return PartitionClock(clock.time, (*clock.far, time)[-max(reset_after - 1, 1):]), FAR


def describe(kind: str, time: datetime, clock: datetime | None, bound: timedelta) -> str:
    """The flag's message, for a person."""
    when = "unknown" if clock is None else clock.isoformat()
    if kind == RESET:
        return (f"event time {time.isoformat()} is more than {bound} from the line clock "
                f"{when}, like the {RESET_AFTER - 1} events before it on this partition: the "
                "clock restarts from it (a plant restart after a long stop, another simulation "
                "date, or stations whose clocks went wrong together)")
    return (f"event time {time.isoformat()} is more than {bound} from the line clock {when}; "
            "stored, but it does not move the clock (check the station's clock)")


def advanced(time: datetime | None, silent_since: datetime | None, now: datetime,
             speed: float = DEFAULT_SPEED, grace: timedelta = SILENCE_GRACE) -> datetime | None:
    """The line clock of a partition whose highest event time is `time`, last written at wall
    time `silent_since`, at wall time `now`: `time` plus the wall time of silence past `grace`
    times `speed` (module docstring). None stays None (a partition with no events)."""
    if time is None or silent_since is None or speed <= 0:
        return time
    idle = now - silent_since - grace
    if idle <= timedelta(0):
        return time
    step = timedelta(seconds=min(idle.total_seconds() * speed, _MAX_ADVANCE.total_seconds()))
    try:
        return time + step
    except OverflowError:
        return datetime.max.replace(tzinfo=time.tzinfo)


# --- the clocks the ledger records ---------------------------------------------------------


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def partition_clock(session: Session, topic: str, partition: int, before_seq: int,
                    reset_after: int = RESET_AFTER, flagged: bool = True) -> PartitionClock:
    """The clock of (topic, partition) as the events stored before `before_seq` left it.

    `flagged=False` says the partition has no flags at all (the common case): one query then.
    """
    where = (EventFlag.topic == topic, EventFlag.partition == partition,
             EventFlag.event_seq < before_seq)
    reset = 0
    if flagged:
        reset = session.scalar(select(func.max(EventFlag.event_seq)).where(
            *where, EventFlag.kind == RESET)) or 0
    counted = [EventRow.topic == topic, EventRow.partition == partition,
               EventRow.seq >= reset, EventRow.seq < before_seq]
    if flagged:
        counted.append(~select(EventFlag.id).where(
            EventFlag.event_seq == EventRow.seq, EventFlag.kind.in_(sorted(EXCLUDED))).exists())
    top_row = session.execute(select(EventRow.time, EventRow.seq).where(*counted)
                              .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1)).first()
    if top_row is None:
        return PartitionClock()
    top, top_seq = top_row
    if not flagged:
        return PartitionClock(_utc(top))
    far = session.scalars(select(EventFlag.event_time).where(
        *where, EventFlag.kind == FAR, EventFlag.event_seq > (top_seq or 0))
        .order_by(EventFlag.event_seq.desc()).limit(max(reset_after - 1, 1))).all()
    return PartitionClock(_utc(top), tuple(_utc(t) for t in reversed(far)))


def plain_clocks(session: Session, before: dict[Partition, int]) -> dict[Partition, PartitionClock]:
    """The clocks of partitions that have no flags at all (the common case), each as
    `partition_clock(..., flagged=False)` gives it, in one statement for all of them."""
    if not before:
        return {}
    parts = list(before.items())
    one = [select(literal(i).label("k"), EventRow.time, EventRow.seq)
           .where(EventRow.topic == tp[0], EventRow.partition == tp[1], EventRow.seq < s)
           .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1).subquery()
           for i, (tp, s) in enumerate(parts)]
    q = union_all(*[select(sub.c.k, sub.c.time) for sub in one])
    found = {int(r[0]): r[1] for r in session.execute(q)}
    return {tp: PartitionClock(_utc(found[i])) if i in found else PartitionClock()
            for i, (tp, _) in enumerate(parts)}


def flagged_partitions(session: Session, partitions: Sequence[Partition]) -> set[Partition]:
    """Which of these partitions have any flag (one query for all of them)."""
    if not partitions:
        return set()
    rows = session.execute(select(EventFlag.topic, EventFlag.partition).where(
        EventFlag.topic.in_(sorted({t for t, _ in partitions})),
        EventFlag.partition.in_(sorted({p for _, p in partitions}))).distinct())
    return {(str(r[0]), int(r[1])) for r in rows if r[1] is not None} & set(partitions)


def partition_clocks(session: Session, partitions: Iterable[Partition], now: datetime,
                     speed: float, grace: timedelta = SILENCE_GRACE
                     ) -> dict[Partition, datetime | None]:
    """Each partition's line clock now: its highest event time stored (events flagged far from
    the clock do not count), advanced on wall time while it is silent (`line_clock.advanced`:
    silent = no batch of it written for `grace`). None: no event there yet."""
    parts = sorted(set(partitions))
    if not parts:
        return {}
    flagged = flagged_partitions(session, parts)
    times: dict[Partition, datetime | None] = {
        tp: c.time for tp, c in plain_clocks(session, {tp: ALL_SEQS for tp in parts
                                                       if tp not in flagged}).items()}
    times.update({tp: partition_clock(session, tp[0], tp[1], ALL_SEQS).time for tp in flagged})
    written: dict[Partition, datetime] = {}
    if speed > 0:
        for topic, part, updated in session.execute(
                select(IngestPosition.topic, IngestPosition.partition, IngestPosition.updated)
                .where(IngestPosition.topic.in_(sorted({t for t, _ in parts})))):
            written[(topic, int(part))] = _utc(updated)
    return {tp: advanced(times.get(tp), written.get(tp), now, speed, grace) for tp in parts}


def line_clock(session: Session, now: datetime, speed: float = 0.0,
               grace: timedelta = SILENCE_GRACE) -> datetime:
    """The time alerts are judged at: the latest line clock of the unit partitions (`now`
    before any event), never before the latest alert transition. A simulated or replayed
    line, whose events are in the past or the future, is judged on its own clock."""
    clocks = partition_clocks(session, [(EVENTS, p) for p in range(ALL_TOPICS[EVENTS])],
                              now, speed, grace)
    known = [c for c in clocks.values() if c is not None]
    from .alerts import kpi  # here: alerts imports much of the ledger

    return kpi.reference_time(session, max(known) if known else now)
