"""System events linetrace derives from accepted events, recorded in the same transaction.

- every `material.received` -> `material.checked`: the receipt against the approved vendor
  list (MPN -> approved suppliers), Passed or Failed with the reason;
- every `unit.packed` -> `unit.sealed`: the HBOM of the unit as its `unit.packed` leaves it,
  its exact bytes stored in `hboms`, and its SHA-256 sealed with the leaf hash of that
  `unit.packed` and the chain heads of the sub-assemblies in it (`seals.py`). A seal whose
  sub-assembly leaves are not all in the ledger yet waits in a pending row (`pending.py`) and
  is made in the batch that brings the last of them.

They are deterministic (CONTRACTS.md): id = UUIDv5(type, subject, cause id), time = the cause's
time, content a function of the cause alone (never of batch boundaries or of how far other
partitions were read), so a worker that crashes and redoes a batch, or another worker reading
the partitions in another order, produces byte-identical events and HBOMs.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import LargeBinary, String, Table, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import (
    CONTENT_TYPE,
    SYSTEM_SOURCE,
    Event,
    decode_event,
    decode_stored_event,
    deterministic_id,
    encode_event,
    parse_time,
)
from linetrace.schemas.routes import RouteBook, packaged_routes
from linetrace.schemas.topics import EVENTS, TOPIC_OF_TYPE

from . import pending
from .avl import ApprovedVendorList, default_avl
from .burnin_limits import BurninLimits, default_limits
from .errors import LedgerError
from .plant_data import GoldenFirmware, golden_firmware
from .proof.hbom import as_built, current_items
from .proof.hbom_json import hbom_bytes
from .log import chain_heads, chain_leaves
from .models import Base, StationKey
from .pending import Row
from .projections import record_station_key
from .records import Candidate, SourceRecord
from .seals import SealPlan, SealWait, plan_seal
from .sql import insert_ignore
from .proof.leaf import parse_leaf


class UnitNotFound(LedgerError):
    code = "unit.unknown"


class SealedHbom(Base):
    """The exact HBOM bytes a `unit.sealed` event sealed (never regenerated)."""

    __tablename__ = "hboms"
    sealed_event: Mapped[str] = mapped_column(String(36), primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), index=True)
    sha256: Mapped[str] = mapped_column(String(64))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    sealed_at: Mapped[datetime]


@dataclass(frozen=True)
class SystemContext:
    """What the writer needs to author system events: the plant key and the AVL; and the
    routes in force, of which a unit records the one it starts on."""

    plant_key: Ed25519PrivateKey
    avl: ApprovedVendorList = field(default_factory=default_avl)
    routes: RouteBook = field(default_factory=packaged_routes)
    #: per-SKU burn-in limits the verdict stage decides by (LINETRACE_BURNIN_LIMITS)
    burnin_limits: BurninLimits = field(default_factory=default_limits)
    #: the golden firmware hashes the supply-chain detector checks (LINETRACE_GOLDEN_FIRMWARE)
    golden_firmware: GoldenFirmware = field(default_factory=golden_firmware)
    #: the plant's SPC chart configuration file (LINETRACE_SPC); None: the packaged default
    spc_file: Path | None = None


def signed_system_event(event_type: str, subject: str, body: b.Body, *, time: str | datetime,
                        cause_id: str, plant_key: Ed25519PrivateKey) -> Candidate:
    """A plant-signed system event: id = UUIDv5(type, subject, cause), so a redo is identical."""
    value = encode_event(event_type=event_type, source=SYSTEM_SOURCE, subject=subject, body=body,
                         time=time, event_id=deterministic_id(event_type, subject, cause_id))
    headers = signing.sign_value(value, plant_key)
    keyid, signature = signing.read_signature(headers)
    headers.append((signing.CONTENT_TYPE_HEADER, CONTENT_TYPE.encode()))
    record = SourceRecord(TOPIC_OF_TYPE[event_type], None, None, subject.encode(), value, headers)
    return Candidate(record=record, event=decode_event(value), keyid=keyid,
                     signature=signature, cause=cause_id)


def system_candidate(event_type: str, subject: str, body: b.Body, cause: Event,
                     plant_key: Ed25519PrivateKey) -> Candidate:
    """A system event caused by the accepted event `cause`, at the cause's time."""
    return signed_system_event(event_type, subject, body, time=cause.envelope.time,
                               cause_id=cause.id, plant_key=plant_key)


def register_plant_key(session: Session, plant_key: Ed25519PrivateKey, t: datetime) -> None:
    """Ingest verifies system events read back from Kafka like any other: register the key."""
    if session.get(StationKey, signing.keyid_of(plant_key.public_key())) is None:
        record_station_key(session, SYSTEM_SOURCE, "linetrace",
                           signing.public_key_b64(plant_key.public_key()), t, None)


def material_checked(c: Candidate, ctx: SystemContext) -> Candidate:
    body = c.event.body
    assert isinstance(body, b.MaterialReceived)
    check = ctx.avl.check(body.mpn, body.supplier)
    result = b.MaterialChecked(lot=body.lot, mpn=body.mpn, supplier=body.supplier,
                               receipt=c.event.id, result=check.result, reason=check.reason,
                               avl_sha256=ctx.avl.sha256)
    return system_candidate("material.checked", c.event.subject, result, c.event, ctx.plant_key)


def _events(session: Session, subject: str) -> list[Event]:
    return [decode_stored_event(parse_leaf(row.data).value)
            for row in chain_leaves(session, EVENTS, subject)]


def load_chains(session: Session, unit: str) -> dict[str, list[Event]]:
    """The unit's events and, recursively, those of sub-assemblies installed in it."""
    chains = {unit: _events(session, unit)}
    frontier = [unit]
    while frontier:
        serials = sorted({i.serial for s in frontier for i in current_items(chains[s])
                          if i.serial is not None and i.serial not in chains})
        found = chain_heads(session, [(EVENTS, s) for s in serials])
        frontier = sorted(s for _, s in found)
        for s in frontier:
            chains[s] = _events(session, s)
    return chains


def make_hbom(session: Session, unit: str, serial_number: uuid.UUID, timestamp: datetime
              ) -> tuple[bytes, list[str]]:
    """HBOM bytes of the unit as built now, and the sub-assemblies it includes (a preview:
    seals are planned from their cause, `seals.plan_seal`)."""
    chains = load_chains(session, unit)
    if not chains[unit]:
        raise UnitNotFound(f"no events of unit {unit!r} in the log; `linetrace units` lists them")
    built = as_built(unit, chains)
    # Only the unit's own events shape the sealed bytes: a supplier looked up from the lots
    # table would depend on whether the worker had read line.receipts yet, so the same line
    # could seal different HBOMs. Suppliers stay provable through the lots' receipt and AVL
    # leaves in the evidence bundle.
    data = hbom_bytes(built, serial_number=serial_number, timestamp=timestamp)
    return data, list(built.assemblies)


def unit_sealed(c: Candidate, plan: SealPlan, ctx: SystemContext
                ) -> tuple[Candidate, dict[str, object]]:
    """The `unit.sealed` event answering `c` (a `unit.packed`) and its `hboms` row."""
    packed = c.event.body
    assert isinstance(packed, b.UnitPacked)
    body = b.UnitSealed(
        hbom_sha256=hashlib.sha256(plan.hbom).hexdigest(), chain_head=plan.unit_head.hex(),
        packed=c.event.id, tamper_seal=packed.tamper_seal,
        assemblies=[b.SealedAssembly(serial=s, chain_head=h.hex()) for s, h in plan.assemblies])
    sealed = system_candidate("unit.sealed", c.event.subject, body, c.event, ctx.plant_key)
    row: dict[str, object] = {"sealed_event": sealed.event.id, "serial": c.event.subject,
                              "sha256": body.hbom_sha256, "data": plan.hbom,
                              "sealed_at": parse_time(c.event.envelope.time)}
    return sealed, row


@dataclass(frozen=True)
class SystemPlans:
    """What `decide_system_events` needs from the ledger for a batch."""

    seals: dict[str, SealPlan | SealWait]  # by cause id: each unit.packed of the batch, and...
    resumed: list[Candidate]  # ...each pending seal's cause that the batch may complete


def plan_system_events(session: Session, stored: Sequence[Candidate]) -> SystemPlans:
    """Read what the system events caused by `stored` need: a seal plan per `unit.packed`, and
    the pending seals waiting for an event of `stored`, planned again."""
    packed = [c for c in stored if c.event.type == "unit.packed"]
    mine = {c.event.id for c in packed}
    resumed = [c for c in pending.awaiting(session, stored) if c.event.id not in mine]
    return SystemPlans({c.event.id: plan_seal(session, c) for c in [*packed, *resumed]},
                       resumed)


def _seal(c: Candidate, plan: SealPlan | SealWait, ctx: SystemContext
          ) -> tuple[list[Candidate], list[Row]]:
    if isinstance(plan, SealWait):
        sealed_id = deterministic_id("unit.sealed", c.event.subject, c.event.id)
        return [], pending.pending_rows(sealed_id, "unit.sealed", c, plan.missing)
    sealed, row = unit_sealed(c, plan, ctx)
    table: Table = SealedHbom.__table__  # type: ignore[assignment]
    return [sealed], [(table, row)]


def decide_system_events(stored: Sequence[Candidate], plans: SystemPlans, ctx: SystemContext
                         ) -> tuple[list[Candidate], list[Row]]:
    """System events caused by `stored`, in order, then the pending seals the batch completes;
    and the rows to write with them (sealed HBOMs, pending seals). Pure."""
    out: list[Candidate] = []
    rows: list[Row] = []
    for c in stored:
        if c.event.type == "material.received":
            out.append(material_checked(c, ctx))
        elif c.event.type == "unit.packed":
            events, more = _seal(c, plans.seals[c.event.id], ctx)
            out += events
            rows += more
    for c in plans.resumed:
        events, more = _seal(c, plans.seals[c.event.id], ctx)
        out += events
        rows += more
    return out, rows


def derive(session: Session, stored: Sequence[Candidate], ctx: SystemContext | None
           ) -> list[Candidate]:
    """System events caused by `stored` (none without a plant key), with their rows written:
    the writer's default when no stage pipeline is given."""
    if ctx is None:
        return []
    out, rows = decide_system_events(stored, plan_system_events(session, stored), ctx)
    for table, row in rows:
        insert_ignore(session, table, [row])
    return out


def sealed_hbom(session: Session, serial: str) -> bytes | None:
    """The HBOM bytes sealed for the unit's latest seal, or None if it was never sealed."""
    row = session.scalars(select(SealedHbom).where(SealedHbom.serial == serial)
                          .order_by(SealedHbom.sealed_at.desc(), SealedHbom.sealed_event.desc())
                          .limit(1)).first()
    return row.data if row is not None else None


def unsealed_hbom(session: Session, serial: str) -> bytes:
    """An HBOM of a unit as built now (not sealed: a fresh serial number and timestamp)."""
    return make_hbom(session, serial, uuid.uuid4(), datetime.now(UTC))[0]
