"""Security alerts from what the batch writer quarantined or flagged (issue 12).

Rejections are stored by the writer (`writer.record_rejections`), not by a stage, so their
alerts are decided here, in the batch's transaction, right after they are stored:

- `security.quarantine` (high, latched; subject: the station the record claims to come from,
  or "unknown" when its envelope could not be read): every record sent to `line.quarantine`
  (forged or unverifiable signature, unknown station or key, revoked key, a type the station
  may not send, equivocation, reordered `stationseq`). Grouped per station: one alert, its
  details counting every quarantined record of the station per reason code (read from
  `rejected`, so the counts survive restarts) and naming the last one. Only records newly
  stored count: `rejected.digest` is unique, so a replay of the same records stores nothing
  and raises nothing (the digests already stored are read before the batch's are).
- `security.absurd_time` (high, latched; subject: the station): events the line-clock stage
  flagged `time.far_from_clock` in this batch whose time is absurd in itself (`absurd`:
  before 2000, or more than 7 days after the wall time it was recorded at: a station clock at
  1900 or 9999). A far time that is plausible (a simulated run on another day, a plant
  restarting after a long stop) stays a flag, and `time.clock_reset` is not alerted: it is
  what a real jump of the whole line looks like. The future test reads the wall time the
  flag was recorded at: a replay long after may find a once-future time plausible.

Both are events, not lasting states: each condition is raised and ends at once
(`momentary_end`); the catalogue latches both alerts, so they stay in alarm until an operator
acknowledges them, and the next quarantined record after that is a new occurrence.

Event time: a quarantined record's own envelope time when it can be read (a forged record's
time is whatever it claims; kept as evidence), else the wall time of the batch; an absurd
time's alert carries the line clock the event was compared with, never the absurd time.
Either is moved up to the alert's last change when it is earlier (`not_before_last`): the
engine ignores findings older than that, and a security alarm must never be ignored. The
alert ids are deterministic (condition + station) and the causes are the rejected rows'
digests or the flagged events' ids, so the messages do not depend on the time chosen.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from linetrace.schemas.envelope import parse_time
from linetrace.schemas.topics import QUARANTINE

from .alerts.conditions import Condition, alert_id
from .alerts.models import Alert
from .alerts.views import utc
from .flags import EventFlag
from .models import Rejected
from .records import Rejection

QUARANTINE_ALERT = "security.quarantine"
ABSURD_TIME_ALERT = "security.absurd_time"
UNKNOWN_SOURCE = "unknown"
#: The flag kind that raises `security.absurd_time` (`linetrace.streams.line_clock.FAR`).
FAR_FROM_CLOCK = "time.far_from_clock"
#: Event times before this are absurd (a station clock reset), ...
TIME_FLOOR = datetime(2000, 1, 1, tzinfo=UTC)
#: ... and so are times this far after the wall time they were recorded at.
FUTURE_SLACK = timedelta(days=7)


def record_time(value: bytes | None) -> datetime | None:
    """The envelope time a record claims, if its value is JSON with a readable `time`."""
    if not value:
        return None
    try:
        doc = json.loads(value)
        return parse_time(doc["time"]) if isinstance(doc, dict) else None
    except Exception:
        return None


def _quarantined(rejections: Sequence[Rejection]) -> dict[str, Rejection]:
    """The quarantined rejections by the digest their `rejected` row gets (one per digest)."""
    mine = [r for r in rejections if r.destination == QUARANTINE]
    if not mine:
        return {}
    from .writer import rejection_digest  # the writer imports this module

    return {rejection_digest(r): r for r in mine}


def known_rejections(session: Session, rejections: Sequence[Rejection]) -> set[str]:
    """Digests of the quarantined `rejections` already stored (a replay): read before
    `record_rejections` stores the batch's (no query without a quarantined record)."""
    digests = _quarantined(rejections)
    if not digests:
        return set()
    return {str(d) for d in session.scalars(select(Rejected.digest).where(
        Rejected.digest.in_(sorted(digests))))}


def quarantine_conditions(session: Session, rejections: Sequence[Rejection],
                          known: Collection[str], now: datetime) -> list[Condition]:
    """One `security.quarantine` condition per station among the quarantined `rejections`
    whose digest was not `known` before they were stored."""
    digests = _quarantined(rejections)
    new = [r for d, r in digests.items() if d not in known]
    if not new:
        return []  # a replay of records already quarantined
    by_station: dict[str, list[Rejection]] = {}
    for r in new:
        by_station.setdefault(r.source or UNKNOWN_SOURCE, []).append(r)
    totals = _totals(session, by_station)
    out = []
    for station, found in sorted(by_station.items()):
        last = found[-1]
        counts = totals.get(station) or dict(Counter(r.code for r in found))
        total = sum(counts.values())
        reasons = ", ".join(f"{code} x{n}" for code, n in sorted(counts.items()))
        out.append(Condition(
            condition=QUARANTINE_ALERT, subject=station, active=True,
            time=record_time(last.record.value) or now,
            cause=f"rejected-{next(d for d, r in digests.items() if r is last)}",
            message=(f"{total} record(s) claiming to come from {station} were quarantined "
                     f"({reasons}); last: {last.code}: {last.message}")[:1024],
            details={"counts": counts, "total": total, "new": len(found),
                     "last": {"code": last.code, "message": last.message[:512],
                              "event_id": last.event_id, "topic": last.record.topic,
                              "partition": last.record.partition,
                              "offset": last.record.offset}},
            station=None if station == UNKNOWN_SOURCE else station))
    return out


def _totals(session: Session, by_station: dict[str, list[Rejection]]
            ) -> dict[str, dict[str, int]]:
    """Quarantined records per station and code, all time (the batch's included)."""
    named = sorted(s for s in by_station if s != UNKNOWN_SOURCE)
    out: dict[str, dict[str, int]] = {}
    q = select(Rejected.source, Rejected.code, func.count()).where(
        Rejected.destination == QUARANTINE)
    wheres = []
    if named:
        wheres.append(Rejected.source.in_(named))
    if UNKNOWN_SOURCE in by_station:
        wheres.append(Rejected.source.is_(None))
    for source, code, n in session.execute(q.where(or_(*wheres)).group_by(Rejected.source,
                                                                          Rejected.code)):
        out.setdefault(source or UNKNOWN_SOURCE, {})[str(code)] = int(n)
    return out


def absurd(event_time: datetime, recorded: datetime) -> bool:
    """Is a time far from its line clock absurd in itself: before `TIME_FLOOR` (a station
    clock reset to 1970, 1900 or year 1), or more than `FUTURE_SLACK` after the wall time it
    was recorded at (9999, a clock set years ahead)? A time merely far from the clock may be
    a real jump (a plant restarting after a long stop, a simulated run on another day): the
    flag records it; only an absurd one is a security alarm."""
    return event_time < TIME_FLOOR or event_time > recorded + FUTURE_SLACK


def absurd_time_conditions(session: Session, seqs: Collection[int],
                           now: datetime) -> list[Condition]:
    """One `security.absurd_time` condition per station among the events at `seqs` (those
    stored in this transaction) the line clock flagged far from its time."""
    if not seqs:
        return []
    wanted = set(seqs)
    flags = [f for f in session.scalars(select(EventFlag).where(
        EventFlag.event_seq >= min(wanted), EventFlag.kind == FAR_FROM_CLOCK)
        .order_by(EventFlag.event_seq)) if f.event_seq in wanted
        and absurd(utc(f.event_time), utc(f.recorded))]
    if not flags:
        return []
    by_station: dict[str, list[EventFlag]] = {}
    for f in flags:
        by_station.setdefault(f.source, []).append(f)
    totals = {str(s): int(n) for s, n in session.execute(
        select(EventFlag.source, func.count()).where(
            EventFlag.source.in_(sorted(by_station)), EventFlag.kind == FAR_FROM_CLOCK)
        .group_by(EventFlag.source))}
    out = []
    for station, found in sorted(by_station.items()):
        last = found[-1]
        clock = utc(last.clock) if last.clock is not None else now
        details: dict[str, Any] = {
            "flagged": totals.get(station, len(found)), "new": len(found),
            "last": {"event_id": last.event_id, "event_time": utc(last.event_time).isoformat(),
                     "clock": None if last.clock is None else clock.isoformat(),
                     "topic": last.topic, "partition": last.partition}}
        out.append(Condition(
            condition=ABSURD_TIME_ALERT, subject=station, active=True, time=clock,
            cause=last.event_id,
            message=(f"{station} sent {len(found)} event(s) with absurd times (last: "
                     f"{utc(last.event_time).isoformat()} against the line clock "
                     f"{details['last']['clock'] or 'unknown'})"),
            details=details, station=station))
    return out


def not_before_last(session: Session, found: Sequence[Condition]) -> list[Condition]:
    """Each condition at its time, or at its alert's last change if that is later: the engine
    drops a finding older than the alert's last change, and a record's claimed time (or a
    line clock after a simulated day) may go backwards; a security alarm is never dropped."""
    ids = {alert_id(c.condition, c.subject): c for c in found}
    last = {str(a): utc(t) for a, t in session.execute(
        select(Alert.alert_id, Alert.last_time).where(Alert.alert_id.in_(sorted(ids))))}
    return [replace(c, time=max(c.time, last[a])) if a in last else c
            for a, c in ids.items()]


def momentary_end(c: Condition) -> Condition:
    """A quarantined record or an absurd time is an event, not a state that lasts: its
    condition ends as soon as it is found. The alert is latched, so it stays in alarm until an
    operator acknowledges it, which resets it; a later record raises a new occurrence."""
    return replace(c, active=False)


def raise_security_alerts(session: Session, rejections: Sequence[Rejection],
                          known: Collection[str], seqs: Collection[int], now: datetime) -> int:
    """Hand the batch's security conditions to the alert engine (in the batch transaction);
    returns the outbox messages it enqueued. `known`: `known_rejections` before the batch's
    were stored; `seqs`: events.seq of the station events the batch stored. The common case
    (nothing quarantined, nothing flagged) costs one indexed query at the tail of
    `event_flags`."""
    found = [*quarantine_conditions(session, rejections, known, now),
             *absurd_time_conditions(session, seqs, now)]
    if not found:
        return 0
    found = not_before_last(session, found)
    conditions = [x for c in found for x in (c, momentary_end(c))]
    from .alerts.engine import apply_conditions

    return apply_conditions(session, conditions)
