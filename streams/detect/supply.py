"""Supply-chain detectors (DOMAIN.md §8; issue 12), pure: plain data in, `Condition`s out.

`supply_stage.py` reads the data from the ledger. Times are event times (a replay finds the
same), every finding's cause is the event that showed it (the alert engine applies the same
finding once), and the plant data (golden firmware, approved parts) comes from
`linetrace.ledger.plant_data`, as the AVL does from `linetrace.ledger.avl`.

- `supply.avl_violation` (subject: the lot): a `material.checked` whose result is `Failed`:
  the receipt's MPN or supplier is not on the approved vendor list. Latched.
- `supply.unknown_lot` (subject: the lot): a part installed from a lot the ledger has no
  receipt of. Receipts travel on `line.receipts` (another topic, other partitions), so the
  finding waits a grace period of line time: it is active once the installing unit's partition
  clock has passed the first install of the lot + `grace` and the lot is still not received
  (and that install has been stored for `RECEIPT_WALL_GRACE` of wall time: a line faster than
  real time passes the line-time grace within the receipts consumer's lag); it returns to
  normal when the receipt arrives after all. A sub-assembly built on the line
  (the mainboard PCBA, whose "lot" is its work order) is never a purchased lot.
- `supply.unapproved_mpn` (subject: `unit/MPN`): an install of an MPN not on the approved
  parts list of the unit's product (a product the list does not name is not checked). Latched.
- `supply.cloned_serial` (subject: the part serial): one serial installed in two different
  units over overlapping spans of event time (each span: install to uninstall, open while not
  removed). A repair that removes a part and fits it again in the same unit, or a board moved
  to another unit after its removal, is no clone. Latched.
- `supply.firmware_mismatch` (subject: `unit/component[/target]`): a `firmware.flashed` whose
  SHA-256 is not the golden one for its (image, version), or an image with no golden entry.
  Latched.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.plant_data import ApprovedParts, GoldenFirmware
from linetrace.schemas import bodies as b

AVL_VIOLATION = "supply.avl_violation"
UNKNOWN_LOT = "supply.unknown_lot"
UNAPPROVED_MPN = "supply.unapproved_mpn"
CLONED_SERIAL = "supply.cloned_serial"
FIRMWARE_MISMATCH = "supply.firmware_mismatch"

#: Default line time a part's lot may go unreceived after its install (receipts travel on
#: another topic: a worker may read them a little later than the line's events).
RECEIPT_GRACE = timedelta(minutes=10)
#: Wall time the first install must also have been stored for (supply_stage's tick): what the
#: receipts' own consumer may lag behind the line's events.
RECEIPT_WALL_GRACE = timedelta(seconds=30)


# --- receipts ----------------------------------------------------------------------------------


def avl_violation(checked: b.MaterialChecked, cause: str, time: datetime) -> Condition | None:
    """The finding of a `material.checked` (None where the lot passed)."""
    if checked.result != "Failed":
        return None
    why = checked.reason or "not on the approved vendor list"
    return Condition(
        condition=AVL_VIOLATION, subject=checked.lot, active=True, time=time, cause=cause,
        message=f"lot {checked.lot} ({checked.mpn} from {checked.supplier}) failed the approved "
                f"vendor list check: {why}",
        details={"lot": checked.lot, "mpn": checked.mpn, "supplier": checked.supplier,
                 "reason": why, "avl_sha256": checked.avl_sha256},
        lot=checked.lot)


# --- lots never received ------------------------------------------------------------------------


@dataclass(frozen=True)
class UnreceivedLot:
    """A lot parts were installed from with no receipt in the ledger: its first install
    (`first_event` at `first_time` in `first_unit`, whose partition clock decides), the MPN and
    every unit that received parts of it."""

    lot: str
    mpn: str
    first_unit: str
    first_event: str
    first_time: datetime
    units: tuple[str, ...]


def unknown_lot_due(lot: UnreceivedLot, clock: datetime | None,
                    grace: timedelta = RECEIPT_GRACE) -> bool:
    """Has the first installing unit's partition clock passed the install + `grace`? (None: a
    partition with no clock yet: not yet.)"""
    return clock is not None and clock >= lot.first_time + grace


def unknown_lot(lot: UnreceivedLot, grace: timedelta = RECEIPT_GRACE) -> Condition:
    """The active finding for a lot past its grace period."""
    units = ", ".join(lot.units[:5]) + (f" and {len(lot.units) - 5} more"
                                        if len(lot.units) > 5 else "")
    return Condition(
        condition=UNKNOWN_LOT, subject=lot.lot, active=True,
        time=lot.first_time + grace, cause=lot.first_event,
        message=f"parts of lot {lot.lot} ({lot.mpn}) were installed in {units} but the lot was "
                f"never received ({int(grace.total_seconds())} s of line time after its first "
                "install)",
        details={"lot": lot.lot, "part": lot.mpn, "units": list(lot.units),
                 "first_install": lot.first_time.isoformat()},
        unit=lot.first_unit, lot=lot.lot)


def lot_received(lot: str, mpn: str, cause: str, time: datetime) -> Condition:
    """The return to normal of a lot's unknown-lot finding: its receipt arrived."""
    return Condition(condition=UNKNOWN_LOT, subject=lot, active=False, time=time, cause=cause,
                     message=f"lot {lot} ({mpn}) has been received", lot=lot)


# --- installs ---------------------------------------------------------------------------------


def unapproved_mpns(unit: str, product: str | None, items: Iterable[b.InstalledItem],
                    approved: ApprovedParts, cause: str, time: datetime) -> list[Condition]:
    """One finding per MPN of an install that is not approved for the unit's product."""
    if product is None:
        return []
    out: dict[str, Condition] = {}
    for item in items:
        if approved.allows(product, item.mpn) is False and item.mpn not in out:
            out[item.mpn] = Condition(
                condition=UNAPPROVED_MPN, subject=f"{unit}/{item.mpn}", active=True, time=time,
                cause=cause,
                message=f"{item.mpn} (lot {item.lot}) installed in {unit} is not on the "
                        f"approved parts list of product {product}",
                details={"unit": unit, "product": product, "mpn": item.mpn, "lot": item.lot,
                         "serial": item.serial, "category": item.category},
                unit=unit, lot=item.lot)
    return list(out.values())


@dataclass(frozen=True)
class Span:
    """One install of a serial in a unit: from `installed` until `removed` (None: still in)."""

    unit: str
    installed: datetime
    removed: datetime | None
    event_id: str
    lot: str = ""
    mpn: str = ""


def _overlap(a: Span, b_: Span) -> bool:
    a_end = a.removed if a.removed is not None else datetime.max.replace(tzinfo=a.installed.tzinfo)
    b_end = b_.removed if b_.removed is not None else datetime.max.replace(
        tzinfo=b_.installed.tzinfo)
    return a.installed < b_end and b_.installed < a_end


def clone_pairs(spans: Sequence[Span]) -> list[tuple[Span, Span]]:
    """Pairs of installs of one serial in two different units whose spans overlap, earlier
    first (each pair once)."""
    ordered = sorted(spans, key=lambda s: (s.installed, s.event_id))
    out = []
    for i, a in enumerate(ordered):
        for b_ in ordered[i + 1:]:
            if a.unit != b_.unit and _overlap(a, b_):
                out.append((a, b_))
    return out


def cloned_serial(serial: str, spans: Sequence[Span]) -> Condition | None:
    """The finding for a serial whose installs overlap in two units (None: no clone). Its
    cause is the later install of the first overlapping pair: the same whichever of the two
    the worker read first."""
    pairs = clone_pairs(spans)
    if not pairs:
        return None
    first, second = pairs[0]
    units = sorted({u for p in pairs for u in (p[0].unit, p[1].unit)})
    return Condition(
        condition=CLONED_SERIAL, subject=serial, active=True, time=second.installed,
        cause=second.event_id,
        message=f"serial {serial} is installed in {first.unit} (since "
                f"{first.installed.isoformat()}) and in {second.unit} (since "
                f"{second.installed.isoformat()}): a serial goes into one unit only "
                "(counterfeit indicator)",
        details={"serial": serial, "units": units, "mpn": second.mpn or first.mpn,
                 "lots": sorted({s.lot for p in pairs for s in p if s.lot}),
                 "installs": [{"unit": s.unit, "installed": s.installed.isoformat(),
                               "removed": s.removed.isoformat() if s.removed else None,
                               "event": s.event_id} for s in sorted(
                                   spans, key=lambda s: (s.installed, s.event_id))]},
        unit=second.unit, lot=second.lot or None)


# --- firmware ---------------------------------------------------------------------------------


def firmware_subject(unit: str, body: b.FirmwareFlashed) -> str:
    return f"{unit}/{body.component}" + (f"/{body.target}" if body.target else "")


def firmware_mismatch(unit: str, body: b.FirmwareFlashed, golden: GoldenFirmware, cause: str,
                      time: datetime, station: str | None = None) -> Condition | None:
    """The finding of a `firmware.flashed` (None where its hash is the golden one)."""
    expected = golden.expected(body.image, body.version)
    if expected is not None and expected == body.sha256.lower():
        return None
    where = f" on {body.target}" if body.target else ""
    why = (f"SHA-256 {body.sha256[:16]}... is not the golden {expected[:16]}..."
           if expected is not None else "the image has no golden hash in the plant's baseline")
    return Condition(
        condition=FIRMWARE_MISMATCH, subject=firmware_subject(unit, body), active=True,
        time=time, cause=cause,
        message=f"{body.component} image {body.image} {body.version} flashed{where} in {unit}: "
                f"{why}",
        details={"unit": unit, "component": body.component, "image": body.image,
                 "version": body.version, "sha256": body.sha256, "golden": expected,
                 "target": body.target},
        unit=unit, station=station)
