"""The burn-in anomaly stage: `burnin_anomaly`'s detectors over the telemetry the worker reads.

Telemetry is most of a plant's records, so a batch with telemetry costs no SQL in the common
case: the stage keeps each open run's `RunState` in memory and folds the batch into it. The
memory is a cache of what SQL says, never the truth: a cached state is used only when it has
folded exactly the events stored before this batch, which the stage checks without a query:

- per input partition, the offset just after the last record it folded (`_next`): a batch of
  that partition that does not start there (the first batch after a start, a batch retried
  after its transaction rolled back, a partition that was another worker's for a while, a
  record screened out or de-duplicated in between) drops every cached state of the partition;
- per run, the batch's first stationseq of the run must be above the state's last one.

A run missing from the cache is rebuilt by folding its stored events (`rebuild`): one query
for all of the batch's missing runs, the run's rows from its `burnin.run` start on, decoded
through `telemetry_store` (the batch's own events, already written in this transaction, are
left out by stationseq). A run whose first event in the batch is its start needs no query.

`decide` forgets the batch's partitions' offsets before folding (so a fold that raises leaves
nothing trusted) and, once every event is folded, caches the states with the offsets after
the batch: they are exactly right if the batch commits, and if it rolls back the retried batch
starts below those offsets, which drops them. Ended runs leave the cache.

The tick (every ~2 s, reads only) raises `burnin.telemetry_gap` for an open run once its
partition's line clock (`route_stage.partition_clocks`: the highest event time stored there,
advanced on wall time times the line speed while the partition is silent) is more than 5 s
past where it stood when the run's last event was stored, after confirming that event in SQL
(another worker may own the partition now). Not merely 5 s past the run's own event time:
units on one partition need not be in step (a conducted simulated line runs several units'
timelines, hours apart, through one station at once), and a unit whose telemetry is still
arriving behind the partition's leader is not silent; on a line whose events come in time
order the two are the same. And the run's last event must have been stored `grace` (10 s) of
wall time ago: a unit's next events still on their way through the pipeline (stored a moment
after events of its partition with later times: another unit's run starting hours ahead on
that timeline, a worker catching up) are not silence either. On a real line (speed 1) the live
raise comes then at most ~5 s after the clock passed; its time stays the last event + 5 s. The next event of the run clears it, as does the run's end. The first
tick after a start finds the runs open in SQL (telemetry within `SEED_LOOKBACK` of the line
clock), so a restart misses no silent unit.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import LargeBinary, literal, select, type_coerce, union_all
from sqlalchemy.orm import Session

from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate
from linetrace.ledger.sql import in_values
from linetrace.ledger.telemetry_store import decode, is_pruned
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_stored_event
from linetrace.schemas.topics import ALL_TOPICS, TELEMETRY, partition_of

from ..line_clock import DEFAULT_SPEED, SILENCE_GRACE
from ..route_stage import partition_clocks
from ..time_flags import flagged_partitions, partition_clock
from ..stages import NO_DECISIONS, Decisions
from .burnin_anomaly import GAP, LIMITS, TYPES, Limits, RunState, fold, new_state, run_id_of
from .flow import station_down_id

Partition = tuple[str, int]
StoredRow = tuple[str, str, int | None, bytes]  # type, event id, stationseq, stored value
#: How far behind the line clock the first tick looks for runs that are open.
SEED_LOOKBACK = timedelta(minutes=15)
_VALUE = type_coerce(EventRow.__table__.c.value, LargeBinary)  # the stored form, not inflated


@dataclass
class OpenRun:
    """What the tick needs of an open run."""

    serial: str
    partition: Partition
    last_time: float
    last_event: str
    station: str | None
    #: The partition's line clock as the events stored up to `clock_event` (the run's last
    #: event when the tick last looked) left it: where the line stood when the unit last spoke.
    clock_at_last: float | None = None
    clock_event: str | None = None


@dataclass
class Loaded:
    states: dict[str, RunState]  # run id -> state, as stored before the batch
    partitions: dict[str, Partition]  # run id -> its input partition


def telemetry_partition(serial: str) -> Partition:
    return TELEMETRY, partition_of(serial.encode(), ALL_TOPICS[TELEMETRY])


def _decoded(value: bytes) -> Event | None:
    raw = decode(value)
    return None if is_pruned(raw) else decode_stored_event(raw)


def rebuild_from_rows(rows: Iterable[StoredRow], run_id: str,
                      before: int, limits: Limits = LIMITS) -> RunState | None:
    """The run's state from its unit's stored telemetry rows (type, event id, stationseq,
    stored value; in stationseq order): from the run's start on, the rows before `before`."""
    rows = [r for r in rows if r[2] is not None and r[2] < before]
    begin = 0
    for k in range(len(rows) - 1, -1, -1):
        if rows[k][0] == "burnin.run":
            ev = _decoded(rows[k][3])
            if ev is not None and isinstance(ev.body, b.BurninRun) \
                    and ev.body.phase == "start" and str(ev.body.run_id) == run_id:
                begin = k
                break
    state: RunState | None = None
    for r in rows[begin:]:
        ev = _decoded(r[3])  # a pruned row cannot be folded: the state goes without it
        if ev is None or ev.type not in TYPES or run_id_of(ev) != run_id:
            continue
        if state is None:
            state = new_state(ev)
        fold(state, ev, limits)
    return state


@dataclass
class AnomalyStage:
    """Burn-in anomaly detection (module docstring). `speed`: LINETRACE_LINE_SPEED."""

    speed: float = DEFAULT_SPEED
    grace: timedelta = SILENCE_GRACE
    limits: Limits = LIMITS
    name: str = "burnin-anomalies"
    _cache: dict[str, tuple[RunState, Partition]] = field(default_factory=dict, repr=False)
    _next: dict[Partition, int] = field(default_factory=dict, repr=False)
    _open: dict[str, OpenRun] = field(default_factory=dict, repr=False)
    _gap_raised: set[str] = field(default_factory=set, repr=False)
    _seeded: bool = field(default=False, repr=False)
    rebuilt: int = 0  # runs rebuilt from SQL (for tests and the bench)

    # --- the stage ---------------------------------------------------------------------

    def load(self, session: Session, batch: Sequence[Candidate]) -> Loaded | None:
        mine = [c for c in batch if c.record.topic == TELEMETRY]
        if not mine:
            return None
        broken: set[Partition | None] = set()
        seen: set[Partition | None] = set()
        for c in mine:
            part = None if c.record.partition is None else (TELEMETRY, c.record.partition)
            if part not in seen:
                seen.add(part)
                if part is None or c.record.offset is None \
                        or self._next.get(part) != c.record.offset:
                    broken.add(part)
        states: dict[str, RunState] = {}
        parts: dict[str, Partition] = {}
        missing: dict[str, tuple[str, int]] = {}  # run id -> (serial, first stationseq)
        for c in mine:
            ev = c.event
            rid = run_id_of(ev)
            if rid is None or ev.type not in TYPES or rid in states or rid in missing:
                continue
            part = (TELEMETRY, c.record.partition) if c.record.partition is not None \
                else telemetry_partition(ev.subject)
            parts[rid] = part
            cached = self._cache.get(rid)
            seq = ev.seq if ev.seq is not None else 0
            if cached is not None and part not in broken and seq > cached[0].last_seq:
                states[rid] = cached[0]
            elif isinstance(ev.body, b.BurninRun) and ev.body.phase == "start":
                states[rid] = new_state(ev)
            else:
                missing[rid] = (ev.subject, seq)
        if missing:
            states.update(self._rebuild(session, missing))
        return Loaded(states, parts)

    def _rebuild(self, session: Session, missing: dict[str, tuple[str, int]]
                 ) -> dict[str, RunState]:
        """One query for every missing run's unit: its stored telemetry-topic rows."""
        serials = sorted({s for s, _ in missing.values()})
        rows: dict[str, list[StoredRow]] = {s: [] for s in serials}
        for r in session.execute(
                select(EventRow.subject, EventRow.type, EventRow.event_id, EventRow.stationseq,
                       _VALUE)
                .where(EventRow.topic == TELEMETRY, in_values(session, EventRow.subject, serials),
                       EventRow.type.in_(sorted(TYPES)))
                .order_by(EventRow.subject, EventRow.stationseq, EventRow.seq)):
            rows[r[0]].append((r[1], r[2], r[3], bytes(r[4])))
        out: dict[str, RunState] = {}
        for rid, (serial, before) in missing.items():
            self.rebuilt += 1
            state = rebuild_from_rows(rows[serial], rid, before, self.limits)
            if state is not None:
                out[rid] = state
                self._gap_raised.add(serial)  # a gap the tick raised before may be open
        return out

    def decide(self, batch: Sequence[Candidate], state: Loaded | None) -> Decisions:
        if state is None:
            return NO_DECISIONS
        mine = [c for c in batch if c.record.topic == TELEMETRY]
        last: dict[Partition, int] = {}
        for c in mine:
            if c.record.partition is not None and c.record.offset is not None:
                part = (TELEMETRY, c.record.partition)
                self._next.pop(part, None)  # nothing trusted until the whole batch folded
                last[part] = c.record.offset
        out: list[Condition] = []
        cleared: set[str] = set()
        for c in mine:
            ev = c.event
            rid = run_id_of(ev)
            if rid is None or ev.type not in TYPES:
                continue
            st = state.states.get(rid)
            if st is None:
                st = state.states[rid] = new_state(ev)
            before = st.last_time
            out += fold(st, ev, self.limits)
            serial = st.serial
            ended = isinstance(ev.body, b.BurninRun) and ev.body.phase == "end"
            if (serial in self._gap_raised or ended) and serial not in cleared:
                cleared.add(serial)  # a gap the tick raised (or may have): this event ends it
                if not any(x.condition == GAP and x.subject == serial and not x.active
                           for x in out):
                    # never before the tick's raise (last event + gap): the line clock may
                    # have run ahead of the unit's event time on wall time
                    t = max(st.last_time or 0.0, (before or 0.0) + self.limits.gap_s)
                    out.append(Condition(condition=GAP, subject=serial, active=False,
                                         time=datetime.fromtimestamp(t, UTC), cause=ev.id,
                                         unit=serial, station=ev.source))
        for rid, st in state.states.items():
            part = state.partitions.get(rid) or telemetry_partition(st.serial)
            if st.ended:
                self._cache.pop(rid, None)
                self._open.pop(st.serial, None)
                continue
            self._cache[rid] = (st, part)
            if st.last_time is not None:
                self._open[st.serial] = OpenRun(st.serial, part, st.last_time, st.last_event,
                                                st.station or None)
        self._gap_raised -= cleared
        for part, offset in last.items():
            self._next[part] = offset + 1
        return Decisions(conditions=out)

    # --- the tick ----------------------------------------------------------------------

    def tick(self, session: Session, now: datetime | None = None) -> Decisions:
        """Telemetry gaps of open runs on the line clock (reads only)."""
        now = now or datetime.now(UTC)
        if not self._seeded:
            self._seeded = True
            self._seed(session, now)
        if not self._open:
            return NO_DECISIONS
        clocks = partition_clocks(session, {o.partition for o in self._open.values()}, now,
                                  self.speed, self.grace)
        gap = self.limits.gap_s
        suspects = [o for o in self._open.values() if o.serial not in self._gap_raised
                    and (clock := clocks.get(o.partition)) is not None
                    and clock.timestamp() - o.last_time > gap]
        if not suspects:
            return NO_DECISIONS
        latest = _latest(session, [o.serial for o in suspects])
        behind: list[OpenRun] = []
        for o in suspects:
            found = latest.get(o.serial)
            if found is None or found[3]:
                self._open.pop(o.serial, None)  # ended (or gone): nothing to watch
                continue
            o.last_time, o.last_event = found[0], found[1]
            clock = clocks[o.partition]
            if now - found[5] < self.grace:
                continue  # stored a moment ago: its next events may still be on their way
            if clock is not None and clock.timestamp() - o.last_time > gap:
                if o.clock_event != o.last_event:
                    o.clock_at_last, o.clock_event = None, o.last_event
                behind.append(o)
        _clocks_at_last(session, [o for o in behind if o.clock_at_last is None],
                        {o.serial: latest[o.serial][4] for o in behind})
        out: list[Condition] = []
        for o in behind:
            clock = clocks[o.partition]
            assert clock is not None
            # silent = the line moved on by more than the gap since the unit last spoke; not
            # merely a partition clock ahead of the unit's own event time, which other units'
            # later timelines on the partition (their events interleaved with this unit's,
            # still on their way) put there before this unit was silent at all
            since = max(o.clock_at_last or o.last_time, o.last_time)
            if clock.timestamp() - since <= gap:
                continue
            self._gap_raised.add(o.serial)
            out.append(Condition(
                condition=GAP, subject=o.serial, active=True,
                time=datetime.fromtimestamp(o.last_time + gap, UTC), cause=o.last_event,
                message=f"no burn-in telemetry from {o.serial} since "
                        f"{datetime.fromtimestamp(o.last_time, UTC).isoformat()} (line clock "
                        f"{clock.isoformat()})",
                details={"last": datetime.fromtimestamp(o.last_time, UTC).isoformat(),
                         "line_clock": clock.isoformat(),
                         "line_clock_at_last": datetime.fromtimestamp(since, UTC).isoformat()},
                unit=o.serial, station=o.station,
                parent=station_down_id(o.station) if o.station else None))
        return Decisions(conditions=out)

    def _seed(self, session: Session, now: datetime) -> None:
        """The runs open in SQL: units with telemetry within SEED_LOOKBACK of the line clock
        whose last telemetry-topic event is not their run's end."""
        parts = [(TELEMETRY, p) for p in range(ALL_TOPICS[TELEMETRY])]
        clocks = [c for c in partition_clocks(session, parts, now, 0.0).values() if c is not None]
        if not clocks:
            return
        since = max(clocks) - SEED_LOOKBACK
        serials = sorted(set(session.scalars(
            select(EventRow.subject).where(
                EventRow.topic == TELEMETRY,
                EventRow.partition.in_([p for _, p in parts]),
                EventRow.time >= since).distinct())))
        for serial, (t, eid, station, ended, _, _) in _latest(session, serials).items():
            if not ended and serial not in self._open:
                self._open[serial] = OpenRun(serial, telemetry_partition(serial), t, eid, station)


def _latest(session: Session, serials: Sequence[str]
            ) -> dict[str, tuple[float, str, str, bool, int, datetime]]:
    """Each unit's last stored telemetry-topic event: (time, id, source, is its run's end,
    its `events.seq`, when it was stored)."""
    out: dict[str, tuple[float, str, str, bool, int, datetime]] = {}
    for start in range(0, len(serials), 200):
        chunk = serials[start:start + 200]
        one = [select(literal(i).label("k"), EventRow.time, EventRow.event_id,
                      EventRow.source, EventRow.type, _VALUE.label("value"), EventRow.seq,
                      EventRow.recorded)
               .where(EventRow.subject == s, EventRow.topic == TELEMETRY)
               .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1).subquery()
               for i, s in enumerate(chunk)]
        q = union_all(*[select(sub.c.k, sub.c.time, sub.c.event_id, sub.c.source, sub.c.type,
                               sub.c.value, sub.c.seq, sub.c.recorded) for sub in one])
        rows: Any = session.execute(q)
        for k, t, eid, source, typ, value, seq, recorded in rows:
            ended = False
            if typ == "burnin.run":
                ev = _decoded(bytes(value))
                ended = ev is not None and isinstance(ev.body, b.BurninRun) \
                    and ev.body.phase == "end"
            when = t if t.tzinfo is not None else t.replace(tzinfo=UTC)
            stored = recorded if recorded.tzinfo is not None else recorded.replace(tzinfo=UTC)
            out[chunk[int(k)]] = (when.timestamp(), str(eid), str(source), ended, int(seq),
                                  stored)
    return out


def _clocks_at_last(session: Session, runs: Sequence[OpenRun], seqs: dict[str, int]) -> None:
    """Sets each run's `clock_at_last`: its partition's line clock as the events stored up to
    its last event (`events.seq` in `seqs`) left it (`time_flags`: far events do not count).
    One statement for the runs on partitions without flags; the rare flagged ones, one each."""
    if not runs:
        return
    flagged = flagged_partitions(session, sorted({o.partition for o in runs}))
    plain = [o for o in runs if o.partition not in flagged]
    for o in runs:
        if o.partition in flagged:
            t = partition_clock(session, o.partition[0], o.partition[1], seqs[o.serial] + 1).time
            o.clock_at_last = t.timestamp() if t is not None else o.last_time
    for start in range(0, len(plain), 200):
        chunk = plain[start:start + 200]
        one = [select(literal(i).label("k"), EventRow.time)
               .where(EventRow.topic == o.partition[0], EventRow.partition == o.partition[1],
                      EventRow.seq <= seqs[o.serial])
               .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1).subquery()
               for i, o in enumerate(chunk)]
        rows: Any = session.execute(union_all(*[select(sub.c.k, sub.c.time) for sub in one]))
        found = {int(k): t for k, t in rows}
        for i, o in enumerate(chunk):
            t = found.get(i)
            o.clock_at_last = o.last_time if t is None else \
                (t if t.tzinfo is not None else t.replace(tzinfo=UTC)).timestamp()
