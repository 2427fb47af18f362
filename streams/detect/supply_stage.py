"""The supply-chain detector stage: reads what `supply.py` judges from the ledger.

Per batch (`load`, a few indexed queries, none for a batch without receipts, installs,
uninstalls or flashes): the products (route) of the units the batch installs into, every
install span of the serials it installs or removes (the projections of the batch are already
written, so a removal in the same batch counts), and for each receipt whether parts of its lot
were installed before (then its unknown-lot finding returns to normal). `decide` judges:
`material.checked` -> AVL violation; `materials.installed` -> unapproved MPN and cloned
serial; `materials.uninstalled` -> a clone finding re-judged (a board removed before it moved);
`firmware.flashed` -> firmware mismatch.

The tick (`tick`, every ~2 s in the writer thread, reads only) finds the lots never received:
installs whose lot has no receipt, past the grace period on the line clock of the first
installing unit's partition (`route_stage.partition_clocks`); an alert already holding that
finding is not told again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, true
from sqlalchemy.orm import Session

from linetrace.ledger.alerts.conditions import Condition, alert_id
from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.interlock import consumed_categories
from linetrace.ledger.models import EventRow, Install, Lot, Unit
from linetrace.ledger.plant_data import (
    ApprovedParts, GoldenFirmware, approved_parts, golden_firmware,
)
from linetrace.ledger.records import Candidate
from linetrace.ledger.sql import in_values
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.unit_state import aware
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, parse_time
from linetrace.schemas.routes import RouteBook, packaged_routes

from ..line_clock import DEFAULT_SPEED
from ..route_stage import events_partition, partition_clocks
from ..stages import NO_DECISIONS, Decisions
from . import supply

_CHUNK = 400
#: How often the tick looks for lots never received (wall seconds).
SCAN_SECONDS = 5.0


def _utc(t: datetime) -> datetime:
    return aware(t).astimezone(UTC)


@dataclass(frozen=True)
class SupplyState:
    products: dict[str, str | None]  # unit -> route product (None: not known)
    spans: dict[str, list[supply.Span]]  # part serial -> its install spans
    #: lots of the batch's receipts with parts installed before the receipt -> the event time
    #: of their unknown-lot alert's last change (None: no alert)
    installed_lots: dict[str, datetime | None]
    alerted: dict[str, datetime]  # clone alert ids the engine has -> their last change


def _kinds(batch: Sequence[Candidate]) -> dict[str, list[Candidate]]:
    out: dict[str, list[Candidate]] = {}
    for c in batch:
        if c.event.type in ("material.checked", "material.received") or (
                c.event.source != SYSTEM_SOURCE and c.event.type in (
                    "materials.installed", "materials.uninstalled", "firmware.flashed")):
            out.setdefault(c.event.type, []).append(c)
    return out


def install_spans(session: Session, serials: Sequence[str]) -> dict[str, list[supply.Span]]:
    """Every install (current and past) of each serial, as spans."""
    out: dict[str, list[supply.Span]] = {}
    items = sorted(set(serials))
    for i in range(0, len(items), _CHUNK):
        for serial, unit, at, removed, event, lot, mpn in session.execute(select(
                Install.serial, Install.unit, Install.installed_at, Install.removed_at,
                Install.installed_event, Install.lot, Install.mpn).where(
                in_values(session, Install.serial, items[i:i + _CHUNK]))):
            if serial is None:
                continue
            out.setdefault(serial, []).append(supply.Span(
                unit, _utc(at), _utc(removed) if removed is not None else None, event, lot, mpn))
    return out


def existing_alerts(session: Session, ids: Sequence[str]
                    ) -> dict[str, tuple[str, bool, datetime]]:
    """alert id -> (cause, cause_active) of the last finding the engine applied to it, and
    the event time of its last change (a finding older than that is stale to the engine)."""
    out: dict[str, tuple[str, bool, datetime]] = {}
    items = sorted(set(ids))
    for i in range(0, len(items), _CHUNK):
        for aid, cause, active, last in session.execute(select(
                Alert.alert_id, Alert.cause, Alert.cause_active, Alert.last_time).where(
                in_values(session, Alert.alert_id, items[i:i + _CHUNK]))):
            out[aid] = (cause, bool(active), _utc(last))
    return out


@dataclass
class SupplyStage:
    """Supply-chain integrity (module docstring). `speed`: LINETRACE_LINE_SPEED, for the line
    clock of a silent partition; `grace`: line time a lot may go unreceived after an install."""

    routes: RouteBook = field(default_factory=packaged_routes)
    speed: float = DEFAULT_SPEED
    grace: timedelta = supply.RECEIPT_GRACE
    golden: GoldenFirmware = field(default_factory=golden_firmware)
    approved: ApprovedParts = field(default_factory=approved_parts)
    scan_every: float = SCAN_SECONDS
    name: str = "supply"
    _last_scan: datetime | None = field(default=None, repr=False)

    @classmethod
    def of(cls, ctx: SystemContext | None, line_speed: float) -> SupplyStage:
        if ctx is None:
            return cls(speed=line_speed)
        return cls(routes=ctx.routes, speed=line_speed, golden=ctx.golden_firmware)

    # --- per batch ---------------------------------------------------------------------

    def load(self, session: Session, batch: Sequence[Candidate]) -> SupplyState | None:
        kinds = _kinds(batch)
        if not kinds:
            return None
        installs = kinds.get("materials.installed", [])
        units = sorted({c.event.subject for c in installs})
        products: dict[str, str | None] = {}
        for i in range(0, len(units), _CHUNK):
            for serial, route_product in session.execute(select(
                    Unit.serial, Unit.route_product).where(
                    in_values(session, Unit.serial, units[i:i + _CHUNK]))):
                products[serial] = route_product
        serials: set[str] = set()
        for c in installs:
            assert isinstance(c.event.body, b.MaterialsInstalled)
            serials |= {it.serial for it in c.event.body.items if it.serial}
        for c in kinds.get("materials.uninstalled", []):
            assert isinstance(c.event.body, b.MaterialsUninstalled)
            serials |= {it.serial for it in c.event.body.items if it.serial}
        spans = install_spans(session, sorted(serials)) if serials else {}
        received = sorted({c.event.body.lot for c in kinds.get("material.received", [])
                           if isinstance(c.event.body, b.MaterialReceived)})
        early: set[str] = set()
        for i in range(0, len(received), _CHUNK):
            early |= set(session.scalars(select(Install.lot).where(
                in_values(session, Install.lot, received[i:i + _CHUNK])).distinct()))
        lot_alerts = existing_alerts(session, [alert_id(supply.UNKNOWN_LOT, x) for x in early])
        installed_lots = {x: (a[2] if (a := lot_alerts.get(alert_id(supply.UNKNOWN_LOT, x)))
                              else None) for x in early}
        alerted = {k: v[2] for k, v in existing_alerts(session, [
            alert_id(supply.CLONED_SERIAL, s) for s in serials]).items()}
        return SupplyState(products, spans, installed_lots, alerted)

    def decide(self, batch: Sequence[Candidate], state: SupplyState | None) -> Decisions:
        if state is None:
            return NO_DECISIONS
        found: list[Condition] = []
        clones: set[str] = set()
        for c in batch:
            ev, body = c.event, c.event.body
            t = parse_time(ev.envelope.time)
            if isinstance(body, b.MaterialChecked):
                cond = supply.avl_violation(body, ev.id, t)
                if cond is not None:
                    found.append(cond)
            elif isinstance(body, b.MaterialReceived):
                if body.lot in state.installed_lots:  # its receipt came late: clear
                    last = state.installed_lots[body.lot]
                    found.append(supply.lot_received(body.lot, body.mpn, ev.id,
                                                     max(t, last) if last else t))
            elif ev.source == SYSTEM_SOURCE:
                continue
            elif isinstance(body, b.FirmwareFlashed):
                cond = supply.firmware_mismatch(ev.subject, body, self.golden, ev.id, t,
                                                station=ev.source)
                if cond is not None:
                    found.append(cond)
            elif isinstance(body, b.MaterialsInstalled):
                found += supply.unapproved_mpns(ev.subject, state.products.get(ev.subject),
                                                body.items, self.approved, ev.id, t)
                clones |= {it.serial for it in body.items if it.serial}
            elif isinstance(body, b.MaterialsUninstalled):
                for it in body.items:
                    if it.serial and alert_id(supply.CLONED_SERIAL, it.serial) in state.alerted:
                        clones.add(it.serial)
        for serial in sorted(clones):
            spans = state.spans.get(serial, [])
            cond = supply.cloned_serial(serial, spans)
            if cond is not None:
                found.append(cond)
            elif (changed := state.alerted.get(alert_id(supply.CLONED_SERIAL, serial))):
                final = max(spans, key=lambda s: (s.removed or s.installed, s.event_id),
                            default=None)
                if final is not None:  # the overlap was a removal read late: not a clone
                    found.append(Condition(
                        condition=supply.CLONED_SERIAL, subject=serial, active=False,
                        time=max(final.removed or final.installed, changed),
                        cause=f"{final.event_id}/removed",
                        message=f"serial {serial} is installed in one unit only"))
        return Decisions(conditions=found) if found else NO_DECISIONS

    # --- the tick ----------------------------------------------------------------------

    def tick(self, session: Session, now: datetime | None = None) -> Decisions:
        """Lots never received, past their grace period (module docstring)."""
        now = now or datetime.now(UTC)
        if self._last_scan is not None and \
                (now - self._last_scan).total_seconds() < self.scan_every:
            return NO_DECISIONS
        self._last_scan = now
        lots = unreceived_lots(session, consumed_categories(self.routes))
        if not lots:
            return NO_DECISIONS
        clocks = partition_clocks(session, {events_partition(x.first_unit) for x in lots},
                                  now, self.speed)
        due = [x for x in lots
               if supply.unknown_lot_due(x, clocks.get(events_partition(x.first_unit)),
                                         self.grace)]
        if not due:
            return NO_DECISIONS
        # ...and the install has been in the ledger a while in wall time too: receipts travel
        # on their own topic, read by their own consumer, and a line running faster than real
        # time (a simulation, a replay) passes 10 minutes of line time in the seconds that
        # consumer may lag behind: its receipt is then on its way, not missing.
        stored = dict(session.execute(select(EventRow.event_id, EventRow.recorded).where(
            in_values(session, EventRow.event_id, sorted({x.first_event for x in due})))).all())
        due = [x for x in due if x.first_event in stored
               and now - aware(stored[x.first_event]) >= supply.RECEIPT_WALL_GRACE]
        if not due:
            return NO_DECISIONS
        known = existing_alerts(session, [alert_id(supply.UNKNOWN_LOT, x.lot) for x in due])
        found = [supply.unknown_lot(x, self.grace) for x in due
                 if known.get(alert_id(supply.UNKNOWN_LOT, x.lot), ("", False))[:2]
                 != (x.first_event, True)]
        return Decisions(conditions=found) if found else NO_DECISIONS


def unreceived_lots(session: Session, assembly_categories: frozenset[str]
                    ) -> list[supply.UnreceivedLot]:
    """Lots parts were installed from that have no receipt, with their first install; parts
    that are sub-assemblies built on the line (a consumed category, or a serial that is a
    unit of its own) are not purchased lots."""
    purchased = or_(Install.category.is_(None), Install.category.not_in(
        sorted(assembly_categories))) if assembly_categories else true()
    missing = sorted(session.scalars(select(Install.lot).distinct().outerjoin(
        Lot, Lot.lot == Install.lot).where(Lot.lot.is_(None), purchased)))
    rows: list[Any] = []
    for i in range(0, len(missing), _CHUNK):
        rows += session.execute(select(
            Install.lot, Install.mpn, Install.unit, Install.installed_event,
            Install.installed_at, Install.category, Install.serial).where(
            in_values(session, Install.lot, missing[i:i + _CHUNK]))).all()
    rows = [r for r in rows if r[5] not in assembly_categories]
    serials = sorted({r[6] for r in rows if r[6]})
    units: set[str] = set()
    for i in range(0, len(serials), _CHUNK):
        units |= set(session.scalars(select(Unit.serial).where(
            in_values(session, Unit.serial, serials[i:i + _CHUNK]))))
    by_lot: dict[str, list[Any]] = {}
    for r in rows:
        if r[6] not in units:
            by_lot.setdefault(r[0], []).append(r)
    out = []
    for lot, found in sorted(by_lot.items()):
        first = min(found, key=lambda r: (_utc(r[4]), r[3]))
        out.append(supply.UnreceivedLot(
            lot=lot, mpn=first[1], first_unit=first[2], first_event=first[3],
            first_time=_utc(first[4]), units=tuple(sorted({r[2] for r in found}))))
    return out
