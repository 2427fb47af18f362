"""Holds as their `hold.*` events left them: what is in force, what it stops, who it lists.

A hold names what it holds (`scope`: a unit, a lot, an MPN, a work order or a station) and,
when placed, the units it stopped (`hold_units`, the cascade of `held_by`); `placed_seq` is
its event's position in the log, so a check of an event asks only about holds placed before
it. It ends with `hold.released` (two quality users' signatures for a quality hold, carried
in the event) or, for a unit held for a disposition, with `hold.disposition`.

What a hold stops, read now: the units it named when placed, the units of its work order, the
units that contain its lot or MPN now (through sub-assemblies: a board installed in a server
holds the server), and for a station hold the station (locked). Shipped and scrapped units
are never stopped; a shipped unit that contains a held lot is listed for the quality team
(`hold.placed`'s `shipped`).

The projections here are registered in `projections.PROJECTIONS`; the CLI-side actions that
record the events (place, release, dispose) are in `hold_actions`.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event

from .models import EventRow, Hold, HoldApproval, HoldUnit, Install, LotSerial, Unit
from .sql import in_values, insert_ignore

_NS = uuid.UUID("7a1b6c2e-4d3f-5e8a-9b0c-686f6c647321")  # "holds"
#: States a hold never stops: the unit left the line, or went into another unit (which is
#: held in its place).
NOT_STOPPED = frozenset({"shipped", "scrapped", "installed"})
#: Codes of holds that wait for a person's disposition of the unit (`hold_actions.dispose`).
DISPOSITION_CODES = frozenset({"route.max_loops", "route.unable_to_repair",
                               "route.failed_no_rework"})
_CHUNK = 400


def hold_id_for(cause: str, code: str) -> str:
    """The hold id a cause (a request UUID, or the event linetrace held a unit on) gives:
    deterministic, so a redo names the same hold."""
    return "HOLD-" + uuid.uuid5(_NS, f"{code}\x00{cause}").hex[:16].upper()


def is_disposition_code(code: str) -> bool:
    return code.startswith("disposition.") or code in DISPOSITION_CODES


@dataclass(frozen=True)
class HoldInfo:
    """An active hold, as a check reports it."""

    hold_id: str
    scope: str
    target: str
    reason: str
    category: str
    code: str


@dataclass(frozen=True)
class _Active:
    info: HoldInfo
    placed_seq: int | None


def _before(h: _Active, before_seq: int | None) -> bool:
    return before_seq is None or h.placed_seq is None or h.placed_seq < before_seq


@dataclass
class HoldsInForce:
    """The active holds, read once (a check per unit then costs no query)."""

    holds: list[_Active] = field(default_factory=list)
    by_target: dict[tuple[str, str], list[_Active]] = field(default_factory=dict)
    by_unit: dict[str, list[_Active]] = field(default_factory=dict)

    def for_unit(self, serial: str, *, work_order: str | None, lots: Collection[str],
                 mpns: Collection[str], station: str | None,
                 before_seq: int | None = None) -> list[HoldInfo]:
        """Holds that stop this unit: named in `hold_units`, or on its work order, a lot or
        MPN it contains, or the station; only those placed before `before_seq` when given.
        Each hold once, in the order placed."""
        found: dict[str, _Active] = {}
        keys = [("unit", serial), *(("lot", x) for x in lots), *(("mpn", x) for x in mpns)]
        if work_order:
            keys.append(("work_order", work_order))
        if station:
            keys.append(("station", station))
        for h in (*self.by_unit.get(serial, ()), *(x for k in keys
                                                   for x in self.by_target.get(k, ()))):
            if _before(h, before_seq):
                found.setdefault(h.info.hold_id, h)
        return [h.info for h in sorted(found.values(), key=_order)]

    def station_locked(self, station: str) -> HoldInfo | None:
        """The (first) active station hold on `station`, or None."""
        held = self.by_target.get(("station", station))
        return held[0].info if held else None

    def any(self) -> bool:
        return bool(self.holds)


def _order(h: _Active) -> tuple[int, str]:
    return (h.placed_seq if h.placed_seq is not None else 0, h.info.hold_id)


def _info(h: Hold) -> HoldInfo:
    return HoldInfo(hold_id=h.hold_id, scope=h.scope, target=h.target, reason=h.reason,
                    category=h.category, code=h.code)


def load_holds_in_force(session: Session) -> HoldsInForce:
    """Every active hold and the units each named (two queries)."""
    out = HoldsInForce()
    rows = session.scalars(select(Hold).where(Hold.state == "active")
                           .order_by(Hold.placed_seq, Hold.hold_id)).all()
    by_id: dict[str, _Active] = {}
    for h in rows:
        active = _Active(_info(h), h.placed_seq)
        out.holds.append(active)
        by_id[h.hold_id] = active
        out.by_target.setdefault((h.scope, h.target), []).append(active)
    if by_id:
        ids = sorted(by_id)
        for i in range(0, len(ids), _CHUNK):
            for hold_id, serial in session.execute(
                    select(HoldUnit.hold_id, HoldUnit.serial)
                    .where(in_values(session, HoldUnit.hold_id, ids[i:i + _CHUNK]))):
                out.by_unit.setdefault(serial, []).append(by_id[hold_id])
    return out


# --- what a hold reaches -------------------------------------------------------------------


def containing_units(session: Session, *, lot: str | None = None, mpn: str | None = None
                     ) -> set[str]:
    """Every unit that contains the lot or MPN now (its parts installed and not removed),
    through sub-assemblies: a board that contains it, and the server the board is installed
    in. A unit that is itself a serial of the lot (a board of a PCBA lot) counts too."""
    assert (lot is None) != (mpn is None)
    column = Install.lot if lot is not None else Install.mpn
    found = set(session.scalars(select(Install.unit).where(
        column == (lot if lot is not None else mpn), Install.removed_at.is_(None))))
    if lot is not None:
        found |= set(session.scalars(select(Unit.serial).join(
            LotSerial, LotSerial.serial == Unit.serial).where(LotSerial.lot == lot)))
    return found | containers_of(session, found)


def containers_of(session: Session, serials: Iterable[str]) -> set[str]:
    """The units that `serials` are installed in now, and theirs, up to the top."""
    out: set[str] = set()
    frontier = sorted(set(serials))
    while frontier:
        up: set[str] = set()
        for i in range(0, len(frontier), _CHUNK):
            up |= set(session.scalars(select(Install.unit).where(
                in_values(session, Install.serial, frontier[i:i + _CHUNK]),
                Install.removed_at.is_(None))))
        frontier = sorted(up - out)
        out |= up
    return out


def unit_states(session: Session, serials: Iterable[str]) -> dict[str, str]:
    """serial -> state (as the units table has it) of those among `serials` that are units."""
    items = sorted(set(serials))
    out: dict[str, str] = {}
    for i in range(0, len(items), _CHUNK):
        out.update((s, st) for s, st in session.execute(select(Unit.serial, Unit.state).where(
            in_values(session, Unit.serial, items[i:i + _CHUNK]))))
    return out


def reached_units(session: Session, scope: str, target: str) -> set[str]:
    """The units a hold of `scope` on `target` reaches now (any state): a unit hold reaches
    the unit and the units it is installed in (a held board holds its server)."""
    if scope == "unit":
        if session.get(Unit, target) is None:
            return set()
        return {target} | containers_of(session, [target])
    if scope == "work_order":
        return set(session.scalars(select(Unit.serial).where(Unit.work_order == target)))
    if scope == "lot":
        return containing_units(session, lot=target)
    if scope == "mpn":
        return containing_units(session, mpn=target)
    return set()  # a station hold locks the station, it names no unit


def split_reached(session: Session, reached: Collection[str]) -> tuple[list[str], list[str]]:
    """(units a new hold names, shipped units it lists) of the units it reaches: not shipped
    nor scrapped (a sub-assembly only inside such a unit), and shipped."""
    states = unit_states(session, reached)
    units, shipped = [], []
    for serial in sorted(reached):
        state = states.get(serial)
        if state == "shipped":
            shipped.append(serial)
        elif state == "installed":
            ups = unit_states(session, containers_of(session, [serial]))
            if not any(st in ("shipped", "scrapped") for st in ups.values()):
                units.append(serial)
        elif state is not None and state != "scrapped":
            units.append(serial)
    return units, shipped


def _stopped_by(session: Session, holds: Sequence[_Active], in_force: HoldsInForce
                ) -> dict[str, list[HoldInfo]]:
    """serial -> the given active holds that stop it (any state; callers filter)."""
    out: dict[str, dict[str, HoldInfo]] = {}
    for serial, named in in_force.by_unit.items():
        for h in named:
            if h in holds:
                out.setdefault(serial, {})[h.info.hold_id] = h.info
    for h in holds:
        if h.info.scope in ("work_order", "lot", "mpn"):
            for serial in reached_units(session, h.info.scope, h.info.target):
                out.setdefault(serial, {})[h.info.hold_id] = h.info
    return {s: list(v.values()) for s, v in out.items()}


def stopped_units(session: Session, in_force: HoldsInForce | None = None
                  ) -> dict[str, list[HoldInfo]]:
    """serial -> active holds that stop it, for every unit not shipped, scrapped or
    installed that an active hold stops (what `units` shows as `on_hold`)."""
    in_force = in_force if in_force is not None else load_holds_in_force(session)
    if not in_force.any():
        return {}
    stopped = _stopped_by(session, in_force.holds, in_force)
    states = unit_states(session, stopped)
    return {s: hs for s, hs in sorted(stopped.items())
            if s in states and states[s] not in NOT_STOPPED}


def held_units(session: Session) -> list[dict[str, Any]]:
    """Unfinished units stopped by an active hold: serial, product, state (the route's),
    step and the holds, each {hold_id, reason, code}."""
    stopped = stopped_units(session)
    if not stopped:
        return []
    units = {u.serial: u for s in _chunks(sorted(stopped)) for u in session.scalars(
        select(Unit).where(in_values(session, Unit.serial, s)))}
    return [{"serial": s, "product": units[s].product, "state": units[s].state,
             "step": units[s].step,
             "holds": [{"hold_id": h.hold_id, "reason": h.reason, "code": h.code} for h in hs]}
            for s, hs in stopped.items() if s in units]


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i:i + _CHUNK]


def hold_units_of(session: Session, hold: Hold) -> list[str]:
    """The units a hold stops or stopped: those it named, and for a work-order, lot or MPN
    hold still in force those it reaches now (sorted)."""
    named = set(session.scalars(select(HoldUnit.serial).where(HoldUnit.hold_id == hold.hold_id)))
    if hold.state == "active" and hold.scope in ("work_order", "lot", "mpn"):
        reached = reached_units(session, hold.scope, hold.target)
        states = unit_states(session, reached)
        named |= {s for s in reached if states.get(s) not in NOT_STOPPED}
    return sorted(named)


def placed_body(session: Session, hold: Hold) -> b.HoldPlaced | None:
    """The `hold.placed` event's body (units and shipped units as placed)."""
    value = session.scalar(select(EventRow.value).where(EventRow.source == SYSTEM_SOURCE,
                                                        EventRow.event_id == hold.placed_event))
    if value is None:
        return None
    body = decode_stored_event(value).body
    return body if isinstance(body, b.HoldPlaced) else None


# --- projections of hold.* -------------------------------------------------------------------


def _seq(session: Session, e: Event) -> int | None:
    """The stored event's position (`events.seq`): the writer's map of this transaction, else
    the row."""
    from .writer import stored_seqs  # the writer imports the projections, hence here

    seq = stored_seqs(session).get((e.source, e.id))
    if seq is None:
        seq = session.scalar(select(EventRow.seq).where(EventRow.source == e.source,
                                                        EventRow.event_id == e.id))
    return seq


def _placed(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.HoldPlaced)
    insert_ignore(s, Hold.__table__, [{  # type: ignore[arg-type]
        "hold_id": body.hold_id, "scope": body.scope, "target": body.target,
        "reason": body.reason, "category": body.category, "code": body.code,
        "placed_by": body.placed_by, "placed": t, "placed_event": e.id,
        "placed_seq": _seq(s, e), "step": body.step, "station": body.station,
        "state": "active", "released": None, "released_by": None, "released_event": None,
        "released_seq": None, "release_reason": None, "decision": None}])
    insert_ignore(s, HoldUnit.__table__, [  # type: ignore[arg-type]
        {"hold_id": body.hold_id, "serial": u, "added": t, "event_id": e.id}
        for u in dict.fromkeys(body.units)])


def _approval_rows(hold_id: str, statements: Sequence[b.SignedStatement], t: datetime,
                   event_id: str) -> list[dict[str, Any]]:
    return [{"hold_id": hold_id, "user_id": st.user, "keyid": st.keyid, "approved": t,
             "event_id": event_id} for st in statements]


def _approved(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.HoldApproved)
    insert_ignore(s, HoldApproval.__table__,  # type: ignore[arg-type]
                  _approval_rows(body.hold_id, [body.statement], t, e.id))


def _end(s: Session, e: Event, t: datetime, hold_id: str, **values: Any) -> None:
    """End the hold (if still active): a hold ends once."""
    s.execute(update(Hold).where(Hold.hold_id == hold_id, Hold.state == "active").values(
        released=t, released_event=e.id, released_seq=_seq(s, e), **values))


def _released(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.HoldReleased)
    insert_ignore(s, HoldApproval.__table__,  # type: ignore[arg-type]
                  _approval_rows(body.hold_id, body.statements, t, e.id))
    _end(s, e, t, body.hold_id, state="released", released_by=",".join(body.released_by),
         release_reason=body.reason)


def _disposition(s: Session, e: Event, t: datetime) -> None:
    body = e.body
    assert isinstance(body, b.HoldDisposition)
    _end(s, e, t, body.hold_id, state="disposed", released_by=body.decided_by,
         release_reason=body.reason, decision=body.decision)


def project_hold_event(session: Session, event: Event, time: datetime) -> None:
    """Project one `hold.*` event into holds, hold_units and hold_approvals (idempotent)."""
    HOLD_PROJECTIONS[event.type](session, event, time)


HOLD_PROJECTIONS = {
    "hold.placed": _placed,
    "hold.approved": _approved,
    "hold.released": _released,
    "hold.disposition": _disposition,
}


def hold_event_seqs(session: Session, serials: Collection[str], lots: Collection[str],
                    mpns: Collection[str]) -> list[int]:
    """events.seq of the `hold.*` events of every hold that named one of `serials` or held a
    lot or MPN among `lots` and `mpns`: what an evidence bundle carries so an auditor sees
    every hold of the unit (the bundle adds the user leaves of those who signed them,
    `evidence.py`)."""
    if not serials and not lots and not mpns:
        return []
    held = select(Hold.hold_id).where(or_(
        Hold.hold_id.in_(select(HoldUnit.hold_id).where(HoldUnit.serial.in_(sorted(serials)))),
        (Hold.scope == "unit") & Hold.target.in_(sorted(serials)),
        (Hold.scope == "lot") & Hold.target.in_(sorted(lots)),
        (Hold.scope == "mpn") & Hold.target.in_(sorted(mpns))))
    return sorted(session.scalars(select(EventRow.seq).where(
        EventRow.source == SYSTEM_SOURCE, EventRow.subject.in_(held),
        EventRow.type.in_(sorted(HOLD_PROJECTIONS)))))
