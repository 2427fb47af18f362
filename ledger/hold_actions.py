"""What people do with holds: place one, release one, decide a disposition.

Each action is a person's signed statement (`schemas.statements`) recorded, in one ledger
transaction, as plant-signed system events: the `hold.*` event carrying the statement, the
commands it sends to the stations (line.commands, keyed by station id) and the ERP notices
(`erp.messages_for`), all through the outbox. The cause of each event is the statement's
request UUID, the idempotency key: the same request again records nothing and returns what
was recorded for it. Its time is the wall clock; it takes effect at its position in the log.

Who may do what (docs/holds.md):

- place: a supervisor a hold on a unit, a work order or a station (operational); quality and
  admin any scope; lot and MPN holds, and every hold a quality user places, are quality holds;
- release: an operational hold, one supervisor, quality or admin signature (`hold.released`);
  a quality hold, two different quality users: the first signature is recorded
  (`hold.approved`) and the hold stays in force until a second quality user signs;
- dispose: a quality user decides on a unit held for a disposition (`dispositions.py`).

A statement is the person's own, or the web console's attestation for its signed-in user
(`console_key.attest`); `release_hold(console_attested_quality=False)` (plant setting
`LINETRACE_QUALITY_RELEASE=user-keys`) takes only the users' own keys for quality releases.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event, deterministic_id
from linetrace.schemas.statements import Statement, read_statement

from . import erp, outbox
from .console_key import is_console_attested
from .db import Ledger
from .errors import LedgerError
from .holds import (
    NOT_STOPPED,
    hold_id_for,
    hold_units_of,
    is_disposition_code,
    reached_units,
    split_reached,
    stopped_units,
    unit_states,
)
from .hold_views import hold_view
from .models import EventRow, Hold, HoldApproval, Install, Lot, Operation, Station, Unit
from .system_events import register_plant_key, signed_system_event
from .users import UserError, user_role, verify_user_statement
from .writer import record_system_event

SCOPES = ("unit", "lot", "mpn", "work_order", "station")
#: Roles that may place a hold of each scope.
PLACE_ROLES: dict[str, tuple[str, ...]] = {
    "unit": ("supervisor", "quality", "admin"), "work_order": ("supervisor", "quality", "admin"),
    "station": ("supervisor", "quality", "admin"), "lot": ("quality", "admin"),
    "mpn": ("quality", "admin")}
RELEASE_ROLES = {"operational": ("supervisor", "quality", "admin"), "quality": ("quality",)}
MANUAL = "hold.manual"
_NS = uuid.UUID("0b8f3c52-61a4-5d2e-8f7a-636f6d6d616e")  # "command"


class HoldError(LedgerError):
    """A hold action linetrace refuses. Codes: `hold.unknown` (no such hold),
    `hold.target_unknown` (nothing to hold by that name), `hold.ended` (released or disposed
    already), `hold.same_user` (a quality release signed twice by one user),
    `hold.no_disposition` (the unit waits for no disposition), `hold.needs_user_keys` (a
    console attestation releasing a quality hold where the plant requires the users' own keys),
    `hold.invalid` (a scope, decision or reason that cannot be)."""

    code = "hold.invalid"


@dataclass(frozen=True)
class HoldOutcome:
    """What a hold action did: the hold as `holds` lists it now, whether this call recorded
    anything (`new`), what was recorded (event types) and what to tell the person."""

    hold: dict[str, Any]
    new: bool
    message: str
    recorded: list[str] = field(default_factory=list)

    @property
    def in_force(self) -> bool:
        return bool(self.hold.get("state") == "active")

    def to_json(self) -> dict[str, Any]:
        return {**self.hold, "recorded": self.recorded, "new": self.new,
                "message": self.message}


class Recorder:
    """Records the plant-signed system events of one action in its transaction."""

    def __init__(self, session: Session, plant: Ed25519PrivateKey, now: datetime) -> None:
        self.session, self.plant, self.now = session, plant, now
        self.events: list[Event] = []
        register_plant_key(session, plant, now)

    def record(self, event_type: str, subject: str, body: b.Body, cause: str) -> Event:
        cand = signed_system_event(event_type, subject, body, time=self.now, cause_id=cause,
                                   plant_key=self.plant)
        record_system_event(self.session, cand)
        self.events.append(cand.event)
        return cand.event

    def erp_notices(self, events: Sequence[Event]) -> None:
        """The ERP messages these events cause (hold and release notices, scrap)."""
        outbox.enqueue(self.session, erp.messages_for(self.session, list(events)), self.now)


def command_cause(request: str, what: str) -> str:
    """A command's cause: one per request and unit (a UUID, as causes are)."""
    return str(uuid.uuid5(_NS, f"{request}\x00{what}"))


def _recorded(session: Session, event_type: str, subject: str, request: str) -> Event | None:
    """The event of `event_type` about `subject` recorded for this request, if any (its id
    derives from the three)."""
    value = session.scalar(select(EventRow.value).where(
        EventRow.source == SYSTEM_SOURCE,
        EventRow.event_id == deterministic_id(event_type, subject, request)))
    return decode_stored_event(value) if value is not None else None


def _carried(event: Event) -> list[b.SignedStatement]:
    body = event.body
    if isinstance(body, b.HoldReleased):
        return list(body.statements)
    st: object = getattr(body, "statement", None)
    return [st] if isinstance(st, b.SignedStatement) else []


def recorded_again(session: Session, signed: b.SignedStatement, subject: str, types: Sequence[str]
           ) -> Event | None:
    """The event already recorded for this statement's request (None: not yet); a different
    statement with the same request is refused."""
    request = read_statement(signed).request
    for event_type in types:
        done = _recorded(session, event_type, subject, request)
        if done is not None:
            if signed not in _carried(done):
                raise UserError(f"request {request} was already recorded ({event_type}) with "
                                "another statement; sign a new request", code="statement.invalid")
            return done
    return None


def check_details(st: Statement, expected: dict[str, str]) -> None:
    if st.details != expected:
        raise UserError(f"{st.user}'s statement says {st.details}, not {expected}: sign the "
                        "action being recorded", code="statement.invalid")


def unit_station(session: Session, serial: str) -> str | None:
    """The station of the unit's latest event (where a command about it goes)."""
    return session.scalar(select(EventRow.source).where(
        EventRow.subject == serial, EventRow.source != SYSTEM_SOURCE)
        .order_by(EventRow.time.desc(), EventRow.seq.desc()).limit(1))


def _known(session: Session, scope: str, target: str) -> bool:
    def any_of(q: Any) -> bool:
        return session.scalar(q.limit(1)) is not None

    if scope == "unit":
        return session.get(Unit, target) is not None
    if scope == "lot":
        return session.get(Lot, target) is not None or any_of(
            select(Install.id).where(Install.lot == target))
    if scope == "mpn":
        return any_of(select(Lot.lot).where(Lot.mpn == target)) or any_of(
            select(Install.id).where(Install.mpn == target))
    if scope == "work_order":
        return any_of(select(Unit.serial).where(Unit.work_order == target)) or any_of(
            select(Operation.id).where(Operation.work_order == target))
    return session.get(Station, target) is not None and target != SYSTEM_SOURCE


# --- place ---------------------------------------------------------------------------------


#: Where a person finds the names a hold of each scope may target (for `hold.target_unknown`).
_TARGET_HINTS = {
    "unit": "`linetrace units` lists the units",
    "lot": "`linetrace trace SERIAL` lists a unit's parts with their lots; `linetrace lots show "
           "LOT` shows one lot",
    "mpn": "`linetrace trace SERIAL` lists a unit's parts with their MPNs",
    "work_order": "`linetrace trace SERIAL` names a unit's work order",
    "station": "`linetrace stations list` lists the stations",
}


def place_hold(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement, *,
               scope: str, target: str, reason: str, now: datetime | None = None
               ) -> HoldOutcome:
    """Record `hold.placed` for the person's statement, a `command.hold` for each unfinished
    unit it stops (a `command.lock` for a station hold) and the ERP hold notices."""
    if scope not in SCOPES:
        raise HoldError(f"scope {scope!r} is not one of {', '.join(SCOPES)}")
    if not reason.strip():
        raise HoldError("a hold needs a reason (--reason)")
    request = read_statement(signed).request
    hold_id = hold_id_for(request, MANUAL)
    with ledger.transaction() as session:
        done = recorded_again(session, signed, hold_id, ("hold.placed",))
        if done is not None:
            return HoldOutcome(hold_view(session, hold_id), False, "already recorded")
        st = verify_user_statement(session, signed, action="hold.place", target=target,
                                   roles=PLACE_ROLES[scope])
        check_details(st, {"scope": scope, "reason": reason})
        if not _known(session, scope, target):
            raise HoldError(f"no {scope.replace('_', ' ')} {target!r} in the ledger; check the "
                            f"spelling ({_TARGET_HINTS[scope]})", code="hold.target_unknown")
        role = user_role(session, st.user)
        category = "quality" if scope in ("lot", "mpn") or role == "quality" else "operational"
        reached = reached_units(session, scope, target)
        units, shipped = split_reached(session, reached)
        states = unit_states(session, units)
        rec = Recorder(session, plant, now or datetime.now(UTC))
        placed = rec.record("hold.placed", hold_id, b.HoldPlaced(
            hold_id=hold_id, scope=scope, target=target, reason=reason,  # type: ignore[arg-type]
            category=category, code=MANUAL, placed_by=st.user, units=units, shipped=shipped,  # type: ignore[arg-type]
            statement=signed), request)
        commands = 0
        for serial in units:
            station = unit_station(session, serial) if states[serial] not in NOT_STOPPED else None
            if station is not None:
                rec.record("command.hold", station, b.CommandHold(
                    unit=serial, reason=reason, hold_id=hold_id),
                    command_cause(request, serial))
                commands += 1
        if scope == "station":
            rec.record("command.lock", target, b.CommandLock(
                station=target, locked=True, reason=reason, hold_id=hold_id),
                command_cause(request, target))
        rec.erp_notices([placed])
        what = (f"locks station {target}" if scope == "station"
                else f"stops {len(units)} unit(s)" + (f", {len(shipped)} shipped unit(s) listed "
                                                      "for the quality team" if shipped else ""))
        return HoldOutcome(hold_view(session, hold_id), True,
                           f"hold {hold_id} placed ({category}): {what}",
                           [e.type for e in rec.events])


# --- release -------------------------------------------------------------------------------


def _approval(session: Session, hold_id: str, user: str) -> b.SignedStatement | None:
    row = session.get(HoldApproval, (hold_id, user))
    if row is None:
        return None
    value = session.scalar(select(EventRow.value).where(EventRow.source == SYSTEM_SOURCE,
                                                        EventRow.event_id == row.event_id))
    body = decode_stored_event(value).body if value is not None else None
    return body.statement if isinstance(body, b.HoldApproved) else None


def _still_valid(session: Session, signed: b.SignedStatement, hold_id: str) -> bool:
    """An earlier approval counts only while its signer may still sign it."""
    try:
        verify_user_statement(session, signed, action="hold.release", target=hold_id,
                              roles=RELEASE_ROLES["quality"])
    except UserError:
        return False
    return True


def _end_commands(rec: Recorder, hold: Hold, request: str, reason: str,
                  stopped_before: dict[str, list[str]], units: Collection[str]) -> None:
    """A `command.release` for each unit no other active hold still stops; a station hold
    unlocks its station (unless another station hold keeps it locked)."""
    session = rec.session
    for serial in sorted(units):
        others = [h for h in stopped_before.get(serial, []) if h != hold.hold_id]
        if serial not in stopped_before or others:
            continue
        station = unit_station(session, serial)
        if station is not None:
            rec.record("command.release", station, b.CommandRelease(
                unit=serial, reason=reason, hold_id=hold.hold_id),
                command_cause(request, serial))
    if hold.scope == "station":
        locked = session.scalar(select(Hold.hold_id).where(
            Hold.scope == "station", Hold.target == hold.target, Hold.state == "active",
            Hold.hold_id != hold.hold_id).limit(1))
        if locked is None:
            rec.record("command.lock", hold.target, b.CommandLock(
                station=hold.target, locked=False, reason=reason, hold_id=hold.hold_id),
                command_cause(request, hold.target))


def _active_hold(session: Session, hold_id: str) -> Hold:
    """The hold, locked for this transaction (PostgreSQL: two releases signed at once are
    decided one after the other, so the second sees the first's approval)."""
    hold = session.scalars(select(Hold).where(Hold.hold_id == hold_id).with_for_update()
                           ).one_or_none()
    if hold is None:
        raise HoldError(f"no hold {hold_id}; `linetrace holds --all` lists them",
                        code="hold.unknown")
    if hold.state != "active":
        raise HoldError(f"hold {hold_id} was {hold.state} already ({hold.released_by})",
                        code="hold.ended")
    return hold


def release_hold(ledger: Ledger, plant: Ed25519PrivateKey, signed: b.SignedStatement,
                 hold_id: str, reason: str | None = None, *, now: datetime | None = None,
                 console_attested_quality: bool = True) -> HoldOutcome:
    """Release a hold: one signature for an operational hold; for a quality hold two
    different quality users' (the first is recorded as `hold.approved` and the outcome says
    the hold is still in force). Then the release commands and the ERP release notices.

    `signed` may be a person's own statement or the console's attestation for a signed-in
    user (`console_key.attest`); the two users of a quality release may have signed either
    way. With `console_attested_quality=False` (the plant setting
    `LINETRACE_QUALITY_RELEASE=user-keys`) a quality hold's release or approval needs the
    users' own keys: a console attestation is refused (`hold.needs_user_keys`) and an earlier
    console-attested approval does not count."""
    request = read_statement(signed).request
    with ledger.transaction() as session:
        if recorded_again(session, signed, hold_id, ("hold.released", "hold.approved")) is not None:
            view = hold_view(session, hold_id)
            return HoldOutcome(view, False, "already recorded"
                               + ("; a second quality user must sign" if view["state"] == "active"
                                  else ""))
        hold = _active_hold(session, hold_id)
        if is_disposition_code(hold.code):
            raise HoldError(f"hold {hold_id} waits for a disposition of its unit: decide it "
                            "with `linetrace disposition SERIAL --decision scrap|use-as-is|"
                            "repair --reason R`", code="hold.no_disposition")
        own_keys_only = hold.category == "quality" and not console_attested_quality
        if own_keys_only and is_console_attested(session, signed):
            raise HoldError(
                f"hold {hold_id} is a quality hold, and this plant releases quality holds only "
                "with the quality users' own key signatures (LINETRACE_QUALITY_RELEASE="
                f"user-keys), not the console's: run `linetrace hold release {hold_id} "
                "--reason R` with your own key (LINETRACE_USER_KEY)",
                code="hold.needs_user_keys")
        st = verify_user_statement(session, signed, action="hold.release", target=hold_id,
                                   roles=RELEASE_ROLES[hold.category])
        check_details(st, {"reason": reason} if reason else {})
        rec = Recorder(session, plant, now or datetime.now(UTC))
        statements = [signed]
        if hold.category == "quality":
            earlier = [a for u in session.scalars(select(HoldApproval.user_id).where(
                HoldApproval.hold_id == hold_id, HoldApproval.user_id != st.user)
                .order_by(HoldApproval.approved, HoldApproval.user_id))
                if (a := _approval(session, hold_id, u)) is not None
                and _still_valid(session, a, hold_id)
                and not (own_keys_only and is_console_attested(session, a))]
            mine = _approval(session, hold_id, st.user)
            if (not earlier and own_keys_only and mine is not None
                    and is_console_attested(session, mine)):
                raise HoldError(f"{st.user}'s approval of {hold_id} was attested by the console, "
                                "which this plant no longer takes for quality releases "
                                "(LINETRACE_QUALITY_RELEASE=user-keys): two other quality users "
                                "must sign with their own keys (`linetrace hold release "
                                f"{hold_id} --reason R`)", code="hold.needs_user_keys")
            if not earlier and mine is not None:
                raise HoldError(f"{st.user} approved the release of {hold_id} already; a second, "
                                "different quality user must sign", code="hold.same_user")
            if not earlier:
                rec.record("hold.approved", hold_id, b.HoldApproved(
                    hold_id=hold_id, reason=reason, statement=signed), request)
                return HoldOutcome(hold_view(session, hold_id), True,
                                   f"approval by {st.user} recorded; hold {hold_id} is a quality "
                                   "hold and stays in force: a second quality user must sign "
                                   f"(`linetrace hold release {hold_id}`)",
                                   [e.type for e in rec.events])
            statements = [earlier[0], signed]
        units = hold_units_of(session, hold)
        stopped = {s: [h.hold_id for h in hs] for s, hs in stopped_units(session).items()}
        released = rec.record("hold.released", hold_id, b.HoldReleased(
            hold_id=hold_id, reason=reason, released_by=[s.user for s in statements],
            statements=statements), request)
        _end_commands(rec, hold, request, reason or "hold released", stopped, units)
        rec.erp_notices([released])
        by = " and ".join(s.user for s in statements)
        return HoldOutcome(hold_view(session, hold_id), True, f"hold {hold_id} released by {by}",
                           [e.type for e in rec.events])
