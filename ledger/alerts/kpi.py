"""Alarm-system performance (EEMUA 191 / ISA-18.2 §16): computed from `alert_history`.

An *annunciated alarm* is a transition that put an alert in front of the operator: `raised`
into `unacknowledged` (not one raised while shelved or out of service, nor one suppressed by
design) or `annunciated` (a suppressed alert shown when its parent cleared). The flood alert
itself (`alerts.flood`) does not count. From their times:

- alarms per 10 minutes: the average over the window and the count in the last 10 minutes;
  the peak 10-minute count (sliding); the priority mix (% low/medium/high);
- flood (DOMAIN.md §6): more than 10 alarms in 10 minutes starts one, fewer than 5 ends it;
- top-10 share: % of the alarms that came from the 10 most frequent alerts;
- stale: alerts active for more than 24 h; chattering: alerts flagged by the engine (>= 3
  activations within a minute of event time).

Times are event times (the line clock), so a replay gives the same figures.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ..genealogy import iso
from .conditions import PRIORITIES
from .models import Alert, AlertHistory
from .views import utc

WINDOW = timedelta(minutes=10)
FLOOD_START = 10  # more than this many alarms in WINDOW starts a flood
FLOOD_END = 5  # fewer than this many ends it
STALE_AFTER = timedelta(hours=24)
FLOOD_CONDITION = "alerts.flood"
#: EEMUA 191 targets, shown beside the figures.
TARGETS: dict[str, Any] = {"alarms_per_10min": 1, "alarms_per_hour": 6,
                           "priority_mix": {"low": 80, "medium": 15, "high": 5}}


@dataclass(frozen=True)
class Annunciation:
    time: datetime
    alert_id: str
    condition: str
    subject: str
    priority: str


@dataclass(frozen=True)
class Flood:
    """A flood period: `end` None while it lasts; `peak` its highest 10-minute count."""

    start: datetime
    end: datetime | None
    peak: int

    def to_json(self) -> dict[str, Any]:
        return {"start": iso(self.start), "end": iso(self.end), "peak": self.peak}


def annunciations(session: Session, since: datetime | None = None,
                  until: datetime | None = None) -> list[Annunciation]:
    """Annunciated alarms (see the module docstring), oldest first."""
    q = (select(AlertHistory.time, AlertHistory.alert_id, AlertHistory.condition,
                Alert.subject, AlertHistory.priority)
         .join(Alert, Alert.alert_id == AlertHistory.alert_id)
         .where(AlertHistory.transition.in_(("raised", "annunciated")),
                AlertHistory.state == "unacknowledged",
                AlertHistory.condition != FLOOD_CONDITION)
         .order_by(AlertHistory.time, AlertHistory.id))
    if since is not None:
        q = q.where(AlertHistory.time >= since)
    if until is not None:
        q = q.where(AlertHistory.time <= until)
    return [Annunciation(utc(t), aid, cond, subj, prio)
            for t, aid, cond, subj, prio in session.execute(q)]


def sweep(times: Sequence[datetime], now: datetime) -> tuple[list[Flood], int]:
    """Flood periods and the peak sliding 10-minute count of sorted alarm times, as of `now`.

    The count at time t is the alarms in (t - 10 min, t]: it rises at each alarm and falls 10
    minutes after it (falls first when both happen at once). A flood starts at the alarm that
    makes the count exceed FLOOD_START and ends when the count falls below FLOOD_END (at a
    time <= now; later it is still going on)."""
    points = sorted([(t, 1) for t in times] + [(t + WINDOW, -1) for t in times if t + WINDOW
                                              <= now], key=lambda p: (p[0], p[1]))
    floods: list[Flood] = []
    count = peak = 0
    start: datetime | None = None
    flood_peak = 0
    for t, step in points:
        count += step
        peak = max(peak, count)
        if start is None and step > 0 and count > FLOOD_START:
            start, flood_peak = t, count
        elif start is not None:
            flood_peak = max(flood_peak, count)
            if step < 0 and count < FLOOD_END:
                floods.append(Flood(start, t, flood_peak))
                start = None
    if start is not None:
        floods.append(Flood(start, None, flood_peak))
    return floods, peak


def reference_time(session: Session, now: datetime) -> datetime:
    """`now`, or the latest transition's event time if the line's clock runs ahead of it (a
    simulator faster than real time)."""
    latest = session.scalar(select(func.max(AlertHistory.time)))
    return max(now, utc(latest)) if latest is not None else now


def floods(session: Session, now: datetime, since: datetime | None = None) -> list[Flood]:
    """Flood periods from `since` (10 minutes before it, so one going on is seen) to `now`."""
    start = None if since is None else since - WINDOW
    found, _ = sweep([a.time for a in annunciations(session, start, now)], now)
    return [f for f in found if since is None or f.end is None or f.end >= since]


def in_flood(session: Session, now: datetime) -> Flood | None:
    """The flood going on at `now`, if any (from the last day of alarms)."""
    going = [f for f in floods(session, now, now - STALE_AFTER) if f.end is None]
    return going[-1] if going else None


@dataclass(frozen=True)
class Kpis:
    since: datetime
    until: datetime
    alarms: int
    per_10min_average: float
    per_10min_current: int
    peak_10min: int
    priority_mix: dict[str, float]
    top10_share: float
    top10: list[dict[str, Any]]
    stale: list[dict[str, Any]]
    chattering: list[dict[str, Any]]
    floods: list[Flood]
    flood: bool
    targets: dict[str, Any] = field(default_factory=lambda: dict(TARGETS))

    def to_json(self) -> dict[str, Any]:
        return {"since": iso(self.since), "until": iso(self.until), "alarms": self.alarms,
                "alarms_per_10min": {"average": self.per_10min_average,
                                     "current": self.per_10min_current,
                                     "peak": self.peak_10min},
                "priority_mix": self.priority_mix, "top10_share": self.top10_share,
                "top10": self.top10, "stale": self.stale, "chattering": self.chattering,
                "floods": [f.to_json() for f in self.floods], "flood": self.flood,
                "targets": self.targets}


def _pct(n: int, total: int) -> float:
    return round(100.0 * n / total, 1) if total else 0.0


def kpis(session: Session, now: datetime, window: timedelta = timedelta(hours=24)) -> Kpis:
    """The KPIs over `window` up to `now` (see the module docstring)."""
    until = reference_time(session, now)
    since = until - window
    alarms = annunciations(session, since, until)
    earlier = annunciations(session, since - WINDOW, since - timedelta(microseconds=1))
    found, _ = sweep([a.time for a in earlier + alarms], until)
    _, peak = sweep([a.time for a in alarms], until)
    found = [f for f in found if f.end is None or f.end >= since]
    n = len(alarms)
    by_priority = Counter(a.priority for a in alarms)
    by_alert = Counter(a.alert_id for a in alarms)
    names = {a.alert_id: (a.condition, a.subject) for a in alarms}
    top = sorted(by_alert.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
    active = session.scalars(select(Alert).where(Alert.active.is_(True))).all()
    stale = sorted((a for a in active if until - utc(a.raised) > STALE_AFTER),
                   key=lambda a: (utc(a.raised), a.alert_id))
    chatter = session.scalars(select(Alert).where(Alert.chattering.is_(True))
                              .order_by(Alert.alert_id)).all()
    return Kpis(
        since=since, until=until, alarms=n,
        per_10min_average=round(n / (window / WINDOW), 2),
        per_10min_current=sum(1 for a in alarms if a.time > until - WINDOW),
        peak_10min=peak,
        priority_mix={p: _pct(by_priority[p], n) for p in PRIORITIES},
        top10_share=_pct(sum(c for _, c in top), n),
        top10=[{"id": aid, "condition": names[aid][0], "subject": names[aid][1],
                "alarms": c} for aid, c in top],
        stale=[{"id": a.alert_id, "condition": a.condition, "subject": a.subject,
                "raised": iso(utc(a.raised))} for a in stale],
        chattering=[{"id": a.alert_id, "condition": a.condition, "subject": a.subject,
                     "state": a.state} for a in chatter],
        floods=found, flood=any(f.end is None for f in found))
