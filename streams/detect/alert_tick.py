"""The alert engine's time-based work, run by the worker's tick: shelves that ran out, and the
flood alert (`alerts.flood` on subject `line`).

It decides nothing per batch (`decide` returns no decisions): alert state changes with
detectors' conditions, which the pipeline hands to the engine, and with operators' actions.
What only the passing of time changes is here:

- a shelve ends at its `until` (wall time, as the operator gave it): the alert shows its
  underlying state again (`ledger.alerts.engine.shelf_expiries`, written by the tick's caller);
- a flood (> 10 annunciated alarms in 10 minutes, ends below 5) is computed from the alert
  history (`ledger.alerts.kpi`) as of the line clock, and raised and cleared as an alert of its
  own, with causes derived from its start and end: a replay raises the same floods.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy.orm import Session

from linetrace.ledger.alerts import kpi
from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.engine import shelf_expiries
from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.alerts.views import utc, utc_or_none
from linetrace.ledger.genealogy import iso
from linetrace.ledger.line_clock import line_clock as line_clock
from linetrace.ledger.records import Candidate

from ..line_clock import SILENCE_GRACE
from ..stages import NO_DECISIONS, Decisions

FLOOD_SUBJECT = "line"  # one operator position: the whole line
FLOOD_ID = alert_id(kpi.FLOOD_CONDITION, FLOOD_SUBJECT)
#: How far back the look for floods goes (from the flood alert's last change, at most this).
LOOKBACK = timedelta(hours=24)
FLOOD_EVERY = 5.0  # wall seconds between two looks for a flood (the tick runs every ~2 s)


def flood_conditions(floods: Sequence[kpi.Flood], going: datetime | None,
                     after: datetime | None) -> list[Condition]:
    """The flood alert's findings, in order: the end of the flood it shows (raised at
    `going`, if any), then each flood that started after `after` (None: every one): raised at
    its start, cleared at its end."""
    out: list[Condition] = []
    for f in floods:
        if going is not None and f.start <= going:
            if f.end is not None and f.start == going:
                out.append(_flood_end(f))
            continue
        if after is not None and f.start <= after:
            continue
        out.append(Condition(
            condition=kpi.FLOOD_CONDITION, subject=FLOOD_SUBJECT, active=True, time=f.start,
            cause=f"flood:{iso(f.start)}",
            message=f"alarm flood: more than {kpi.FLOOD_START} alarms in 10 minutes",
            details={"start": iso(f.start), "peak": f.peak}))
        if f.end is not None:
            out.append(_flood_end(f))
    return out


def _flood_end(f: kpi.Flood) -> Condition:
    assert f.end is not None
    return Condition(condition=kpi.FLOOD_CONDITION, subject=FLOOD_SUBJECT, active=False,
                     time=f.end, cause=f"flood-end:{iso(f.end)}",
                     details={"start": iso(f.start), "end": iso(f.end), "peak": f.peak})


class AlertTickStage:
    """Shelve expiry and flood state, every worker tick (reads only; the caller writes)."""

    name = "alert_tick"

    def __init__(self, speed: float = 0.0, grace: timedelta = SILENCE_GRACE,
                 flood_every: float = FLOOD_EVERY) -> None:
        self.speed = speed
        self.grace = grace
        self.flood_every = flood_every
        self._last_flood: datetime | None = None

    def load(self, session: Session, batch: Sequence[Candidate]) -> Any:
        return None

    def decide(self, batch: Sequence[Candidate], state: Any) -> Decisions:
        return NO_DECISIONS

    def line_clock(self, session: Session, now: datetime) -> datetime:
        return line_clock(session, now, self.speed, self.grace)

    def floods(self, session: Session, now: datetime) -> list[Condition]:
        """Findings for the flood alert: floods since its last change (or the last day)."""
        clock = self.line_clock(session, now)
        flood = session.get(Alert, FLOOD_ID)
        going = utc(flood.raised) if flood is not None and flood.active else None
        after = None
        if flood is not None and not flood.active:
            after = utc_or_none(flood.cleared) or utc(flood.updated)
        start = going or max(after or clock - LOOKBACK, clock - LOOKBACK)
        return flood_conditions(kpi.floods(session, clock, min(start, clock)), going, after)

    def tick(self, session: Session, now: datetime | None = None) -> Decisions:
        now = now or datetime.now(UTC)
        expiries = shelf_expiries(session, now)
        conditions: list[Condition] = []
        if self._last_flood is None or abs((now - self._last_flood).total_seconds()) \
                >= self.flood_every:
            self._last_flood = now
            conditions = self.floods(session, now)
        if not (expiries.updates or conditions):
            return NO_DECISIONS
        return Decisions(messages=expiries.messages, rows=expiries.rows,
                         updates=expiries.updates, conditions=conditions)
