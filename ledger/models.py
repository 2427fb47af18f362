"""The ledger's tables.

`events` keeps every accepted event's exact bytes: it is the system of record. The genealogy
tables (units, operations, installs, tests, firmware, lots) are projections derived from those
events and can be rebuilt from them; history is appended (an uninstall stamps the removal on
the install row, it never deletes it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Engine,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from .telemetry_store import EventValue

BigId = BigInteger().with_variant(Integer(), "sqlite")
SCHEMA_VERSION = 1


class Base(DeclarativeBase):
    type_annotation_map = {datetime: DateTime(timezone=True), dict[str, Any]: JSON}


class EventRow(Base):
    __tablename__ = "events"
    seq: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    source: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    type: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    time: Mapped[datetime]
    stationseq: Mapped[int | None] = mapped_column(BigInteger)
    topic: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int | None]
    offset: Mapped[int | None] = mapped_column(BigInteger)
    cause: Mapped[str | None] = mapped_column(String(36))
    keyid: Mapped[str] = mapped_column(String(16))
    signature: Mapped[bytes] = mapped_column(LargeBinary)
    # Telemetry rows hold a compressed (or, after retention, pruned) form; reads give the
    # exact event bytes (linetrace.ledger.telemetry_store).
    value: Mapped[bytes] = mapped_column(EventValue)
    recorded: Mapped[datetime]
    # SHA-256 of the exact event bytes, for telemetry rows: kept forever, after pruning too.
    digest: Mapped[bytes | None] = mapped_column(LargeBinary(32))
    __table_args__ = (
        UniqueConstraint("source", "event_id", name="uq_events_source_id"),
        Index("ix_events_subject_time", "subject", "time"),
        # the line clock of a partition: its highest event time (linetrace.streams.time_flags)
        Index("ix_events_partition_time", "topic", "partition", "time"),
    )


class Unit(Base):
    __tablename__ = "units"
    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    product: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(16))
    state: Mapped[str] = mapped_column(String(16))
    step: Mapped[int | None]
    work_order: Mapped[str | None] = mapped_column(String(128))
    created: Mapped[datetime]
    updated: Mapped[datetime]
    installed_in: Mapped[str | None] = mapped_column(String(128))
    order: Mapped[str | None] = mapped_column(String(128))
    carton: Mapped[str | None] = mapped_column(String(128))
    # The route the unit started on (when its product became known), never changed after: a
    # route file edited later applies to units started later. NULL: no route in force then.
    route_product: Mapped[str | None] = mapped_column(String(64))
    route_revision: Mapped[str | None] = mapped_column(String(32))
    route_sha256: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (Index("ix_units_state", "state"), Index("ix_units_product", "product"))


class Operation(Base):
    __tablename__ = "operations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    transaction_id: Mapped[str] = mapped_column(String(36))
    step: Mapped[int]
    operation: Mapped[str] = mapped_column(String(256))
    station: Mapped[str] = mapped_column(String(64))
    operator: Mapped[str | None] = mapped_column(String(128))
    work_order: Mapped[str | None] = mapped_column(String(128))
    started: Mapped[datetime | None]
    completed: Mapped[datetime | None]
    result: Mapped[str | None] = mapped_column(String(16))
    __table_args__ = (
        UniqueConstraint("serial", "transaction_id", name="uq_operations_txn"),
        Index("ix_operations_serial", "serial", "started"),
    )


class Install(Base):
    __tablename__ = "installs"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    unit: Mapped[str] = mapped_column(String(128))
    parent: Mapped[str] = mapped_column(String(128))
    serial: Mapped[str | None] = mapped_column(String(128))
    mpn: Mapped[str] = mapped_column(String(128))
    lot: Mapped[str] = mapped_column(String(128))
    category: Mapped[str | None] = mapped_column(String(64))
    pn: Mapped[str | None] = mapped_column(String(128))
    qty: Mapped[int | None]
    slot: Mapped[int | None]
    ref: Mapped[str | None] = mapped_column(String(256))
    station: Mapped[str] = mapped_column(String(64))
    installed_at: Mapped[datetime]
    installed_event: Mapped[str] = mapped_column(String(36))
    removed_at: Mapped[datetime | None]
    removed_event: Mapped[str | None] = mapped_column(String(36))
    removed_reason: Mapped[str | None] = mapped_column(String(64))
    __table_args__ = (
        Index("ix_installs_unit", "unit"),
        Index("ix_installs_serial", "serial"),
        Index("ix_installs_lot", "lot"),
        Index("ix_installs_mpn", "mpn"),
    )


class TestRun(Base):
    __tablename__ = "tests"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    event_id: Mapped[str] = mapped_column(String(36))
    station: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime]
    kind: Mapped[str] = mapped_column(String(16))  # inspection or test
    method: Mapped[str] = mapped_column(String(16))
    result: Mapped[str] = mapped_column(String(16))
    detail: Mapped[dict[str, Any]]
    __table_args__ = (Index("ix_tests_serial", "serial", "time"),)


class Measurement(Base):
    __tablename__ = "measurements"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    test_id: Mapped[int] = mapped_column(ForeignKey("tests.id"))
    test: Mapped[str] = mapped_column(String(256))
    name: Mapped[str] = mapped_column(String(256))
    value: Mapped[float] = mapped_column(Float)
    unit: Mapped[str] = mapped_column(String(32))
    expected: Mapped[float | None] = mapped_column(Float)
    min: Mapped[float | None] = mapped_column(Float)
    max: Mapped[float | None] = mapped_column(Float)
    __table_args__ = (Index("ix_measurements_test", "test_id"),
                      # an SPC chart's points: one measurement name's rows (ledger/spc.py)
                      Index("ix_measurements_name", "name", "test_id"))


class Firmware(Base):
    __tablename__ = "firmware"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    component: Mapped[str] = mapped_column(String(128))
    image: Mapped[str] = mapped_column(String(256))
    version: Mapped[str] = mapped_column(String(128))
    sha256: Mapped[str] = mapped_column(String(64))
    target: Mapped[str | None] = mapped_column(String(128))
    station: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(36))
    __table_args__ = (Index("ix_firmware_serial", "serial"),)


class Lot(Base):
    __tablename__ = "lots"
    lot: Mapped[str] = mapped_column(String(128), primary_key=True)
    mpn: Mapped[str] = mapped_column(String(128))
    supplier: Mapped[str] = mapped_column(String(128))
    date_code: Mapped[str] = mapped_column(String(64))
    qty: Mapped[int]
    received_at: Mapped[datetime]
    station: Mapped[str] = mapped_column(String(64))
    event_id: Mapped[str] = mapped_column(String(36))
    documents: Mapped[dict[str, Any]]


class LotSerial(Base):
    __tablename__ = "lot_serials"
    lot: Mapped[str] = mapped_column(String(128), primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    __table_args__ = (Index("ix_lot_serials_serial", "serial"),)


class Station(Base):
    __tablename__ = "stations"
    station_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    station_type: Mapped[str] = mapped_column(String(64))
    enrolled_at: Mapped[datetime]


class StationKey(Base):
    __tablename__ = "station_keys"
    keyid: Mapped[str] = mapped_column(String(16), primary_key=True)
    station_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    enrolled_event: Mapped[str | None] = mapped_column(String(36))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    revoked_after: Mapped[dict[str, Any] | None]  # topic -> last valid stationseq
    __table_args__ = (Index("ix_station_keys_station", "station_id"),)


class StationPosition(Base):
    """Last accepted stationseq per (station, topic, partition): ingest rule 4."""

    __tablename__ = "station_positions"
    station_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[int] = mapped_column(primary_key=True)
    last_seq: Mapped[int] = mapped_column(BigInteger)


class IngestPosition(Base):
    """Next offset to read per input partition, written in the batch transaction."""

    __tablename__ = "ingest_positions"
    topic: Mapped[str] = mapped_column(String(64), primary_key=True)
    partition: Mapped[int] = mapped_column(primary_key=True)
    next_offset: Mapped[int] = mapped_column(BigInteger)
    # The broker's incarnation these offsets belong to (cluster id + topic id): after the
    # embedded broker restarts empty, offsets start again at 0 in a new incarnation.
    incarnation: Mapped[str | None] = mapped_column(String(128))
    updated: Mapped[datetime]


class Rejected(Base):
    """Every record ingest refused, raw bytes and reason: nothing is lost."""

    __tablename__ = "rejected"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    destination: Mapped[str] = mapped_column(String(80))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(2048))
    stage: Mapped[str] = mapped_column(String(32))
    topic: Mapped[str] = mapped_column(String(64))
    partition: Mapped[int | None]
    offset: Mapped[int | None] = mapped_column(BigInteger)
    key: Mapped[bytes | None] = mapped_column(LargeBinary)
    value: Mapped[bytes | None] = mapped_column(LargeBinary)
    headers: Mapped[dict[str, Any]]
    source: Mapped[str | None] = mapped_column(String(64))
    event_id: Mapped[str | None] = mapped_column(String(64))
    digest: Mapped[str] = mapped_column(String(64), unique=True)  # replays store nothing twice
    recorded: Mapped[datetime]
    __table_args__ = (
        Index("ix_rejected_code", "code"),
    )



# --- orchestration: people, holds, route checks (issue 11) --------------------------------


class User(Base):
    """A person enrolled like a station: role and current key (`user.*` system events)."""

    __tablename__ = "users"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))  # viewer, supervisor, quality, admin
    state: Mapped[str] = mapped_column(String(16))  # active, removed
    enrolled_event: Mapped[str] = mapped_column(String(36))
    enrolled_at: Mapped[datetime]
    updated: Mapped[datetime]


class UserKey(Base):
    """Every Ed25519 public key a user had; statements signed by a revoked key are refused."""

    __tablename__ = "user_keys"
    keyid: Mapped[str] = mapped_column(String(16), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64))
    public_key: Mapped[bytes] = mapped_column(LargeBinary)
    enrolled_event: Mapped[str] = mapped_column(String(36))
    enrolled_at: Mapped[datetime]
    revoked_at: Mapped[datetime | None]
    __table_args__ = (Index("ix_user_keys_user", "user_id"),)


class Hold(Base):
    """A hold, as its `hold.*` events left it. `placed_seq`: its event's position in the log
    (a hold applies to events after it); `released_seq` likewise for its end."""

    __tablename__ = "holds"
    hold_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    scope: Mapped[str] = mapped_column(String(16))  # unit, lot, mpn, work_order, station
    target: Mapped[str] = mapped_column(String(128))
    reason: Mapped[str] = mapped_column(String(4096))
    category: Mapped[str] = mapped_column(String(16))  # quality, operational
    code: Mapped[str] = mapped_column(String(64))
    placed_by: Mapped[str] = mapped_column(String(128))
    placed: Mapped[datetime]
    placed_event: Mapped[str] = mapped_column(String(36))
    placed_seq: Mapped[int | None] = mapped_column(BigInteger)
    step: Mapped[int | None]
    station: Mapped[str | None] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(16))  # active, released, disposed
    released: Mapped[datetime | None]
    released_by: Mapped[str | None] = mapped_column(String(256))
    released_event: Mapped[str | None] = mapped_column(String(36))
    released_seq: Mapped[int | None] = mapped_column(BigInteger)
    release_reason: Mapped[str | None] = mapped_column(String(4096))
    decision: Mapped[str | None] = mapped_column(String(16))  # a disposition's decision
    __table_args__ = (Index("ix_holds_target", "scope", "target"),
                      Index("ix_holds_state", "state"))


class HoldApproval(Base):
    """One user's signed approval to release a hold (`hold.approved`, or in `hold.released`)."""

    __tablename__ = "hold_approvals"
    hold_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    keyid: Mapped[str] = mapped_column(String(16))
    approved: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(36))


class HoldUnit(Base):
    """A unit a hold stops: named when the hold was placed (cascade through sub-assemblies),
    or later (an install from a held lot). `event_id`: the event that brought it in."""

    __tablename__ = "hold_units"
    hold_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    added: Mapped[datetime]
    event_id: Mapped[str] = mapped_column(String(36))
    __table_args__ = (Index("ix_hold_units_serial", "serial"),)


class RouteViolation(Base):
    """What the route check found wrong with a unit's event (linetrace holds the unit)."""

    __tablename__ = "route_violations"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    step: Mapped[int | None]
    station: Mapped[str | None] = mapped_column(String(64))
    code: Mapped[str] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(String(4096))
    source: Mapped[str] = mapped_column(String(64))  # the event it was found on
    event_id: Mapped[str] = mapped_column(String(64))
    time: Mapped[datetime]  # that event's time
    hold_id: Mapped[str | None] = mapped_column(String(128))
    __table_args__ = (UniqueConstraint("source", "event_id", "code", name="uq_route_violations"),
                      Index("ix_route_violations_serial", "serial"))


class RouteWait(Base):
    """A check that needs another unit's events (a consumed sub-assembly on another partition)
    waits here until that partition's line clock passes `until`, then is decided."""

    __tablename__ = "route_waits"
    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    serial: Mapped[str] = mapped_column(String(128))
    kind: Mapped[str] = mapped_column(String(32))
    source: Mapped[str] = mapped_column(String(64))  # the event that waits
    event_id: Mapped[str] = mapped_column(String(64))
    awaited: Mapped[str] = mapped_column(String(128))  # the other unit's serial
    topic: Mapped[str] = mapped_column(String(64))  # its partition
    partition: Mapped[int]
    until: Mapped[datetime]
    created: Mapped[datetime]
    resolved: Mapped[datetime | None]
    __table_args__ = (UniqueConstraint("source", "event_id", "kind", "awaited",
                                       name="uq_route_waits"),
                      Index("ix_route_waits_open", "resolved", "topic", "partition"))


class StuckUnit(Base):
    """A unit over its step's `max_cycle_s` on the line clock (the alerting issue raises the
    alert). `since`: the time of its last event at the step; `cleared`: its next event."""

    __tablename__ = "stuck_units"
    serial: Mapped[str] = mapped_column(String(128), primary_key=True)
    step: Mapped[int] = mapped_column(primary_key=True)
    since: Mapped[datetime] = mapped_column(primary_key=True)
    station: Mapped[str | None] = mapped_column(String(64))
    max_cycle_s: Mapped[int]
    detected: Mapped[datetime]  # the line clock when it was found
    cleared: Mapped[datetime | None]
    __table_args__ = (Index("ix_stuck_units_open", "cleared"),)


def load_all_tables() -> None:
    """Import every module that declares tables on `Base` (the log, seals, ...)."""
    import importlib

    for module in TABLE_MODULES:
        importlib.import_module(module)


#: Modules beyond this one whose tables belong to the ledger schema.
TABLE_MODULES = ("linetrace.ledger.log", "linetrace.ledger.system_events",
                 "linetrace.ledger.outbox", "linetrace.ledger.stage_failures",
                 "linetrace.ledger.flags", "linetrace.ledger.alerts.models",
                 "linetrace.ledger.verdicts", "linetrace.ledger.spc",
                 "linetrace.ledger.console_auth", "linetrace.ledger.console_key")


def create_schema(engine: Engine) -> None:
    """Bring the database to the current schema revision (creating it if empty)."""
    from .schema import ensure_current

    load_all_tables()
    ensure_current(engine)
