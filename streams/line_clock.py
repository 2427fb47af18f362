"""The line clock of one partition, and what an event's time says against it (pure).

CONTRACTS.md "Time": each worker keeps a line clock per partition = the highest event time
seen there. Ingest never refuses an event for its time (a replay must decide what live ingest
decided; simulated runs use fixed dates), but an event whose time is more than `bound` from
its partition's clock must not drag the clock (a station with its RTC at 0001-01-01, 1900 or
9999): it leaves the clock where it is and is flagged `time.far_from_clock`.

A line can really jump (a plant restarting after a long stop, a simulation started at another
date): when `reset_after` events in a row since the clock last moved are all far from it and
agree with each other (within `bound`), the last of them resets the clock to its own time and
is flagged `time.clock_reset`. History before a reset no longer counts for the clock.

This module only decides; `time_flags.py` reads the state from the ledger and records the
flags.

A partition that goes silent (no batch of it written for `SILENCE_GRACE` of wall time) keeps
time on the wall: its clock advances by the wall time elapsed past the grace period times the
line speed (`LINETRACE_LINE_SPEED`: 1 for a real line, the simulator's speed factor for a
simulated one, 0 = never advance on wall time), so a check that waits on it (a consumed
sub-assembly's events, a unit's max cycle time) is decided even when nothing more arrives
there (`advanced`). With speed 0 the line clock is event time alone, and a replay decides
exactly what live ingest decided.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

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
