"""What a `unit.sealed` covers: a function of its cause alone (docs/system-events.md).

A seal answers a `unit.packed` of unit U and covers
- U's chain up to and including that `unit.packed` leaf (`chain_head` is its leaf hash): an
  event of U recorded after it, even in the same batch (a `unit.shipped`), is never covered;
- each sub-assembly installed in U at that point (U's installs and removals up to the
  `unit.packed`): its chain up to the event its install names (`InstalledItem.last_event`),
  and likewise for sub-assemblies installed in it.
The HBOM is built from exactly those events; its serial number and timestamp come from the
cause. So whatever the batch boundaries, restarts or the order in which the partitions were
read, a seal and its HBOM are the same bytes.

When a covered leaf is not in the ledger yet (the sub-assembly's partition has not been read
that far), the plan is a `SealWait` naming the missing events: the seal waits in a pending
row (`pending.py`) and is planned again when they arrive.

An install that names no event (stations that predate `last_event`) covers the
sub-assembly's events up to the install's time that the ledger holds when the seal is made:
the one case where a seal can depend on how far another partition was read.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, decode_stored_event, parse_time
from linetrace.schemas.topics import EVENTS

from .errors import LedgerError
from .log import LogLeaf, event_leaf
from .models import EventRow
from .sql import in_values
from .unit_state import aware
from .proof import merkle
from .proof.hbom import as_built, current_installs
from .proof.hbom_json import hbom_bytes
from .records import Candidate

HBOM_NS = uuid.UUID("0b8f0a52-6c1e-5d0a-9a55-68626f6d0001")


class CauseNotRecorded(LedgerError):
    """A seal was planned for a `unit.packed` that has no leaf (a bug: stages run after the
    write)."""

    code = "seal.cause_not_recorded"


@dataclass(frozen=True)
class SealPlan:
    """What sealing one packed unit needs, read from the ledger: the HBOM bytes as built and
    the chain heads the seal covers."""

    hbom: bytes
    unit_head: bytes
    assemblies: list[tuple[str, bytes]]  # (serial, chain head) of each sub-assembly


@dataclass(frozen=True)
class SealWait:
    """A seal that cannot be made yet: the covered events the ledger does not hold."""

    missing: tuple[tuple[str, str], ...]  # (subject, event id)


#: The event types `as_built` reads; a chain's other events (tests, moves) do not shape an
#: HBOM, so a seal does not decode them.
SHAPING = ("work.started", "materials.installed", "materials.uninstalled", "firmware.flashed")


_SHAPING_UPTO = (  # built once: the statement is compiled once, then only bound
    select(EventRow.value).join(LogLeaf, LogLeaf.event_seq == EventRow.seq)
    .where(LogLeaf.subject == bindparam("subject"), LogLeaf.chain_topic == bindparam("topic"),
           LogLeaf.idx <= bindparam("upto"), EventRow.type.in_(SHAPING))
    .order_by(LogLeaf.idx))


def _shaping(session: Session, head: LogLeaf) -> list[Event]:
    """The events of `head`'s chain up to it that shape an HBOM, in log order (their bytes
    from `events`: the same bytes the leaves carry, written in the same transaction)."""
    rows = session.execute(_SHAPING_UPTO, {"subject": head.subject, "topic": head.chain_topic,
                                           "upto": head.idx}).scalars()
    return [decode_stored_event(v) for v in rows]


_CHAIN_TIMES = (  # a chain's leaves with their events' time, type and bytes, in log order
    select(LogLeaf.data, EventRow.time, EventRow.type, EventRow.value)
    .join(EventRow, EventRow.seq == LogLeaf.event_seq)
    .where(LogLeaf.subject == bindparam("subject"), LogLeaf.chain_topic == EVENTS)
    .order_by(LogLeaf.idx))


@dataclass(frozen=True)
class _Chain:
    events: list[Event]  # those that shape the HBOM
    head: bytes  # leaf hash of the last covered leaf


def _covered(session: Session, serial: str, install: Event, item: b.InstalledItem
             ) -> _Chain | tuple[str, str] | None:
    """The sub-assembly chain an install covers (its events that shape the HBOM, and the hash
    of its last covered leaf); (serial, event id) when the event it names is not in the
    ledger yet; None for a part with no chain of its own."""
    if item.last_event is not None:
        named = event_leaf(session, item.last_event, subject=serial)
        if named is None:
            return serial, item.last_event
        return _Chain(_shaping(session, named), merkle.leaf_hash(named.data))
    until = parse_time(install.envelope.time)
    rows = session.execute(_CHAIN_TIMES, {"subject": serial}).all()
    last = max((n for n, r in enumerate(rows) if aware(r[1]) <= until), default=None)
    if last is None:
        return None
    covered = rows[: last + 1]
    return _Chain([decode_stored_event(r[3]) for r in covered if r[2] in SHAPING],
                  merkle.leaf_hash(covered[-1][0]))


def _with_chains(session: Session, installs: Sequence[tuple[Event, b.InstalledItem]]
                 ) -> list[tuple[Event, b.InstalledItem]]:
    """The installs that may cover a chain: those naming an event, and those of a serial that
    has leaves of its own (one query for all the serialized parts, GPUs included)."""
    unnamed = sorted({i.serial for _, i in installs
                      if i.serial is not None and i.last_event is None})
    chained = set(session.scalars(select(LogLeaf.subject).distinct().where(
        in_values(session, LogLeaf.subject, unnamed), LogLeaf.chain_topic == EVENTS))
                  ) if unnamed else set()
    return [(e, i) for e, i in installs if i.serial is not None
            and (i.last_event is not None or i.serial in chained)]


def plan_seal(session: Session, packed: Candidate) -> SealPlan | SealWait:
    """The seal of `packed` (a stored `unit.packed`), or what it waits for."""
    unit, cause = packed.event.subject, packed.event
    head = event_leaf(session, cause.id, source=cause.source)
    if head is None:
        raise CauseNotRecorded(f"{cause.type} {cause.id} of {unit} has no leaf; it must be "
                               "recorded before its seal is planned")
    chains = {unit: _shaping(session, head)}
    heads = {unit: merkle.leaf_hash(head.data)}
    missing: list[tuple[str, str]] = []
    todo = [unit]
    while todo:
        owner = todo.pop(0)
        for install, item in _with_chains(session, current_installs(chains[owner])):
            serial = item.serial
            if serial is None or serial in chains:
                continue
            covered = _covered(session, serial, install, item)
            if isinstance(covered, tuple):
                missing.append(covered)
            elif covered is not None:
                chains[serial], heads[serial] = covered.events, covered.head
                todo.append(serial)
    if missing:
        return SealWait(tuple(dict.fromkeys(missing)))
    built = as_built(unit, chains)
    data = hbom_bytes(built, serial_number=uuid.uuid5(HBOM_NS, f"{unit}\x00{cause.id}"),
                      timestamp=parse_time(cause.envelope.time))
    return SealPlan(data, heads[unit], [(s, heads[s]) for s in built.assemblies])
