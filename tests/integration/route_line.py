"""Test helpers for route enforcement: a unit's visits as signed station events, written through
the worker's batch processor (the default stages, as the worker's writer thread runs them) or
sent through StationClients to the broker a real worker reads."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import Hold, HoldUnit, RouteViolation, RouteWait, StuckUnit
from linetrace.ledger.outbox import OutboxRow
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext, signed_system_event
from linetrace.ledger.writer import record_system_event
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import partition_of
from linetrace.streams.processor import BatchProcessor

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
STATIONS = {20: ("smt-01", "smt"), 30: ("aoi-01", "aoi"), 40: ("ict-01", "ict"),
            50: ("kitting-01", "kitting"), 60: ("gpu-install-01", "gpu-install"),
            70: ("integration-01", "integration"), 80: ("firmware-01", "firmware"),
            90: ("burnin-01", "burnin"), 100: ("final-qa-01", "final-qa"),
            110: ("pack-01", "pack"), 120: ("shipping-01", "shipping"),
            900: ("repair-01", "repair")}
RECEIVING = "receiving-01"
KEYS = {sid: signing.generate_key() for sid, _ in [*STATIONS.values(), (RECEIVING, "receiving")]}


def events_partition(serial: str) -> int:
    return partition_of(serial.encode(), 8)


def serial_on(prefix: str, partition: int | None = None, avoid: Iterable[int] = ()) -> str:
    """A serial starting with `prefix` whose line.events partition is `partition` (or any
    partition outside `avoid`)."""
    bad = set(avoid)
    for i in range(1, 10_000):
        s = f"{prefix}-{i:04d}"
        p = events_partition(s)
        if (partition is None or p == partition) and p not in bad:
            return s
    raise AssertionError("no serial found")


def enroll_all(ledger: Ledger, keys_dir: Path) -> None:
    plant, _ = load_or_create_plant_key(keys_dir)
    for sid, stype in [*STATIONS.values(), (RECEIVING, "receiving")]:
        enroll_station(ledger, plant, sid, stype, KEYS[sid].public_key())


class Flow:
    """Builds a unit's events in time order: `emit(station, type, serial, body)` is given by
    the caller (a batch or a StationClient)."""

    def __init__(self, emit: Callable[[str, str, str, b.Body, datetime], None],
                 start: datetime = T0) -> None:
        self.emit = emit
        self.t = start

    def tick(self, seconds: float = 30) -> datetime:
        self.t += timedelta(seconds=seconds)
        return self.t

    def at(self, step: int, etype: str, serial: str, body: b.Body) -> None:
        self.emit(STATIONS[step][0], etype, serial, body, self.tick())

    def arrive(self, serial: str, step: int) -> None:
        self.at(step, "unit.arrived", serial, b.UnitArrived(step=step))

    def start(self, serial: str, step: int, product: str = "A", kind: str = "server") -> str:
        tx = str(uuid.uuid4())
        self.at(step, "work.started", serial, b.WorkStarted(
            transaction_id=tx, step=step, operation=f"op-{step}", work_order="WO-R1",
            product=product, kind=kind))  # type: ignore[arg-type]
        return tx

    def visit(self, serial: str, step: int, result: str = "Completed", *,
              test: str | None = "Passed", product: str = "A", kind: str = "server",
              installs: list[b.InstalledItem] | None = None, depart: bool = True) -> None:
        self.arrive(serial, step)
        tx = self.start(serial, step, product, kind)
        if installs:
            self.at(step, "materials.installed", serial, b.MaterialsInstalled(
                transaction_id=tx, items=installs))
        if test is not None:
            if step == 30:
                self.at(step, "unit.inspected", serial, b.UnitInspected(
                    transaction_id=tx, method="AOI", result=test))  # type: ignore[arg-type]
            else:
                self.at(step, "unit.tested", serial, b.UnitTested(
                    transaction_id=tx, method="ICT" if step == 40 else "Burnin",
                    result=test))  # type: ignore[arg-type]
        self.at(step, "work.completed", serial, b.WorkCompleted(
            transaction_id=tx, step=step, result=result))  # type: ignore[arg-type]
        if depart:
            self.at(step, "unit.departed", serial, b.UnitDeparted(step=step))

    def repair(self, serial: str, return_step: int, result: str = "RepairSuccessful") -> None:
        self.arrive(serial, 900)
        tx = self.start(serial, 900)
        self.at(900, "unit.repaired", serial, b.UnitRepaired(
            result=result, repairs=["DEF-1"], return_step=return_step))  # type: ignore[arg-type]
        self.at(900, "work.completed", serial, b.WorkCompleted(
            transaction_id=tx, step=900, result="Completed"))
        self.at(900, "unit.departed", serial, b.UnitDeparted(step=900))


def mainboard(pcba: str, last_event: str | None = None) -> b.InstalledItem:
    """The PCBA installed at integration (`last_event`: its last event before, as stations
    name it; None: an install that names none)."""
    return b.InstalledItem(lot="LOT-MB-1", mpn="MB-A-100", category="mainboard", serial=pcba,
                           last_event=last_event)


class Batches:
    """Signed station events, written batch by batch through the worker's batch processor."""

    def __init__(self, ledger: Ledger, keys_dir: Path, speed: float = 0.0) -> None:
        self.ledger = ledger
        self.plant, _ = load_or_create_plant_key(keys_dir)
        enroll_all(ledger, keys_dir)
        self.processor = BatchProcessor(ledger, "127.0.0.1:1", SystemContext(plant_key=self.plant),
                                        line_speed=speed)
        self.pending: list[Candidate] = []
        self.seq: dict[str, int] = {}
        self.offsets: dict[tuple[str, int], int] = {}
        self.last_id: dict[str, str] = {}  # each subject's last event id emitted
        self.flow = Flow(self._emit)

    def _emit(self, station: str, etype: str, serial: str, body: b.Body, t: datetime) -> None:
        self.seq[station] = self.seq.get(station, 0) + 1
        self.last_id[serial] = eid = str(uuid.uuid4())
        value = encode_event(event_type=etype, source=station, subject=serial, body=body, time=t,
                             stationseq=self.seq[station], event_id=eid)
        kid, sig = signing.read_signature(signing.sign_value(value, KEYS[station]))
        topic = "line.receipts" if etype == "material.received" else "line.events"
        part = partition_of(serial.encode(), 4 if topic == "line.receipts" else 8)
        offset = self.offsets.get((topic, part), 0)
        self.offsets[(topic, part)] = offset + 1
        self.pending.append(Candidate(SourceRecord(topic, part, offset, serial.encode(),
                                                   value), decode_event(value), kid, sig))

    def write(self) -> list[Candidate]:
        """Write what was emitted since the last write, as one batch; the system events it
        caused."""
        batch, self.pending = self.pending, []
        positions: dict[tuple[str, int], int] = {}
        for c in batch:
            assert c.record.partition is not None and c.record.offset is not None
            key = (c.record.topic, c.record.partition)
            positions[key] = max(positions.get(key, 0), c.record.offset + 1)
        return self.processor.write_isolating(batch, [], positions).system

    def receive(self, lot: str, mpn: str, serials: list[str] | None = None) -> None:
        self._emit(RECEIVING, "material.received", lot, b.MaterialReceived(
            lot=lot, mpn=mpn, supplier="NVIDIA", date_code="2026-08", qty=8,
            serials=serials or []), self.flow.tick())

    def tick(self, now: datetime | None = None) -> list[Candidate]:
        from linetrace.streams.route_stage import tick_routes

        return tick_routes(self.ledger, self.processor.pipeline, self.processor.ctx, now).system

    def record(self, event_type: str, subject: str, body: b.Body, cause: str) -> None:
        """A system event recorded as the CLI records it (a person's hold action)."""
        with self.ledger.transaction() as s:
            record_system_event(s, signed_system_event(
                event_type, subject, body, time=datetime.now(UTC), cause_id=cause,
                plant_key=self.plant))


def violations(ledger: Ledger, serial: str | None = None) -> list[tuple[Any, ...]]:
    with ledger.reader() as s:
        q = select(RouteViolation.serial, RouteViolation.step, RouteViolation.code,
                   RouteViolation.hold_id, RouteViolation.message).order_by(RouteViolation.id)
        if serial is not None:
            q = q.where(RouteViolation.serial == serial)
        return [tuple(r) for r in s.execute(q)]


def holds(ledger: Ledger, serial: str | None = None) -> list[Hold]:
    with ledger.reader() as s:
        q = select(Hold).order_by(Hold.placed_seq)
        if serial is not None:
            q = q.where(Hold.target == serial)
        out = list(s.scalars(q))
        s.expunge_all()
        return out


def hold_units(ledger: Ledger, serial: str) -> list[str]:
    with ledger.reader() as s:
        return list(s.scalars(select(HoldUnit.hold_id).where(HoldUnit.serial == serial)))


def commands(ledger: Ledger) -> list[tuple[str, dict[str, Any]]]:
    """(station, body) of every command in the outbox, in order."""
    import json

    with ledger.reader() as s:
        rows = s.scalars(select(OutboxRow).where(OutboxRow.topic == "line.commands")
                         .order_by(OutboxRow.seq)).all()
        out = []
        for r in rows:
            doc = json.loads(r.value)
            out.append((r.key.decode() if r.key else "", {"type": doc["type"], **doc["data"]}))
        return out


def waits(ledger: Ledger) -> list[tuple[Any, ...]]:
    with ledger.reader() as s:
        return [tuple(r) for r in s.execute(select(
            RouteWait.serial, RouteWait.awaited, RouteWait.resolved).order_by(RouteWait.id))]


def stuck(ledger: Ledger) -> list[tuple[Any, ...]]:
    with ledger.reader() as s:
        return [tuple(r) for r in s.execute(select(
            StuckUnit.serial, StuckUnit.step, StuckUnit.station, StuckUnit.cleared)
            .order_by(StuckUnit.serial, StuckUnit.since))]
