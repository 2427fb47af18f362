"""Operations that build a unit: SMT, AOI, ICT (the PCBA), kitting, installs, firmware.

What is installed where comes from the route (`Step.parts`, `Step.consumes`); the simulator
only knows which purchased part fills each category (`Product.catalog`). Faults touching these
steps: `ict-drift`, `cloned-serial`, `unknown-lot`, `firmware-mismatch`.
"""

from __future__ import annotations

import hashlib

from linetrace.schemas.bodies import (
    Body, Defect, FirmwareFlashed, InstalledItem, MaterialsInstalled, Measurement, TestResult,
    UnitInspected, UnitTested,
)
from linetrace.schemas.routes import Step

from . import parts
from .context import LineContext, Outcome
from .faults import DRIFT_CHECK, FIRMWARE_COMPONENTS
from .products import station_of
from .parts import PartSpec
from .units import Failure, Unit

#: ict-drift: the drifting measurement moves this fraction of its tolerance per ICT test.
DRIFT_PER_TEST = 0.08
#: ... with this much noise (fraction of tolerance), far below the natural tolerance / 4.
DRIFT_NOISE = 0.005


def item(part: PartSpec, lot: str, *, serial: str | None = None, qty: int | None = None,
         slot: int | None = None, ref: str | None = None, parent: str | None = None
         ) -> InstalledItem:
    return InstalledItem(lot=lot, mpn=part.mpn, category=part.category, pn=part.pn,
                         serial=serial, qty=qty, slot=slot, ref=ref, parent=parent)


def sig(x: float) -> float:
    """Six significant digits: what a tester reports, and stable in JSON."""
    return float(f"{x:.6g}")


# --- mainboard PCBA (route A-PCBA) --------------------------------------------------------


def smt(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    """Places the route's component categories, one lot per reference-designator group."""
    items = []
    for expected in step.parts:
        for comp in (c for c in parts.BOARD_COMPONENTS if c.part.category == expected.category):
            lot = ctx.stock.take_qty(comp.part, comp.qty)
            unit.placed[comp.ref] = lot
            items.append(item(comp.part, lot.lot_id, qty=comp.qty, ref=comp.ref))
    return Outcome([("materials.installed", MaterialsInstalled(transaction_id=tx, items=items))])


_AOI_DEFECTS = (("SOLDER_BRIDGE", "Solder"), ("INSUFFICIENT_SOLDER", "Solder"),
                ("TOMBSTONE", "Placement"), ("COMPONENT_SHIFT", "Placement"))
_AOI_REFS = ("U12", "C118", "R44", "J7", "U43", "C301")


def aoi(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    rng = ctx.rng
    if not ctx.failures or rng.random() >= ctx.product_of(unit).yields.aoi_fail:
        return Outcome([("unit.inspected", UnitInspected(transaction_id=tx, method="AOI",
                                                         result="Passed"))])
    (code, category), ref, defect = rng.choice(_AOI_DEFECTS), rng.choice(_AOI_REFS), ctx.defect_id()
    body = UnitInspected(transaction_id=tx, method="AOI", result="Failed", defects=[Defect(
        code=code, category=category, ref=ref, confidence=rng.randint(70, 99),
        image_ref=f"aoi-01/{unit.serial}/{defect}.png",
    )])
    failure = Failure(step.step, defect, "solder",
                      f"reworked {code.lower().replace('_', ' ')} at {ref}", ref=ref)
    return Outcome([("unit.inspected", body)], result="Failed", failure=failure)


def ict(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    rng = ctx.rng
    checks = parts.ICT_CHECKS
    failing = rng.randrange(len(checks)) if ctx.failures and \
        rng.random() < ctx.product_of(unit).yields.ict_fail else None
    drift: float | None = None
    drifting = int(ctx.param("ict-drift", "check", DRIFT_CHECK) or 0) % len(checks)
    length = ctx.param("ict-drift", "length")
    if ctx.faults.has("ict-drift") and unit.number >= ctx.faults.targets["ict-drift"] and (
            length is None or ctx.ict_tests_drifting < length):
        k = ctx.ict_tests_drifting
        ctx.ict_tests_drifting += 1
        if k == 0:
            ctx.strike("ict-drift", unit=unit.serial, station=station_of(step).station_id,
                       details={"check": checks[drifting].name, "ref": checks[drifting].ref})
        slope = ctx.param("ict-drift", "slope", DRIFT_PER_TEST)
        noise = ctx.side_rng("ict-drift", k).gauss(
            0, ctx.param("ict-drift", "noise", DRIFT_NOISE) or DRIFT_NOISE)
        assert slope is not None
        drift = checks[drifting].tolerance * (k * slope + noise)
        if failing == drifting:  # a natural failure strikes another check, not the trend
            failing = (failing + 1) % len(checks)
    wobble, wobbling = 0.0, int(ctx.param("ict-wobble", "check", 0) or 0) % len(checks)
    if ctx.faults.has("ict-wobble") and unit.number >= ctx.faults.targets["ict-wobble"]:
        k = ctx.ict_tests_wobbling
        ctx.ict_tests_wobbling += 1
        if k == 0:
            ctx.strike("ict-wobble", unit=unit.serial, station=station_of(step).station_id,
                       details={"check": checks[wobbling].name, "ref": checks[wobbling].ref})
        wobble = checks[wobbling].tolerance * k * (ctx.param("ict-wobble", "slope", 0.002)
                                                   or 0.002)
    tests = []
    for i, check in enumerate(checks):
        lo, hi = check.nominal * (1 - check.tolerance), check.nominal * (1 + check.tolerance)
        if i == failing:
            value = check.nominal * (1 + rng.choice((-1, 1)) * check.tolerance * rng.uniform(1.3, 2.5))
        else:
            value = min(max(check.nominal * (1 + rng.gauss(0, check.tolerance / 4)), lo), hi)
            if drift is not None and i == drifting:
                value = check.nominal * (1 + drift)
            elif wobble and i == wobbling:  # near miss: a trend far inside the noise
                value = min(max(value + check.nominal * wobble, lo), hi)
        passed = i != failing and lo <= value <= hi
        tests.append(TestResult(name=check.name, result="Passed" if passed else "Failed",
                                measurements=[Measurement(
                                    name=check.ref, value=sig(value), unit=check.unit,
                                    expected=sig(check.nominal), min=sig(lo), max=sig(hi))]))
    failed = [i for i, t in enumerate(tests) if t.result == "Failed"]
    body = UnitTested(transaction_id=tx, method="ICT", result="Failed" if failed else "Passed",
                      fixture="FX-ICT-A-01", tests=tests)
    if not failed:
        return Outcome([("unit.tested", body)])
    check = checks[failed[0]]
    failure = Failure(step.step, ctx.defect_id(), "component",
                      f"{check.name} out of limits at {check.ref}; replaced {check.suspect_ref}",
                      ref=check.suspect_ref)
    return Outcome([("unit.tested", body)], result="Failed", failure=failure)


# --- server ---------------------------------------------------------------------------------


def kitting(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    """Picks the serialized parts every step of the route installs (recorded at install)."""
    product = ctx.product_of(unit)
    unit.kit = {}
    for s in product.route.steps:
        for expected in s.parts:
            if not expected.serialized:
                continue
            part = product.part(expected.category)
            unit.kit[expected.category] = [ctx.stock.take_serial(part)
                                           for _ in range(expected.count)]
    if ctx.strikes("cloned-serial", unit):
        earlier = [s for s in ctx.servers if s.product == unit.product and s.number < unit.number
                   and s.kit.get("gpu")]
        if earlier:  # a counterfeit: a serial already picked for (and installed in) another unit
            slot = int(ctx.param("cloned-serial", "slot", 0) or 0) % len(unit.kit["gpu"])
            unit.kit["gpu"][slot] = earlier[-1].kit["gpu"][slot]
            ctx.strike("cloned-serial", unit=unit.serial, gpu=slot,
                       gpu_serial=unit.kit["gpu"][slot][0],
                       details={"also_in": earlier[-1].serial})
    return Outcome()


def install(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    """Installs the route's parts for this step: sub-assemblies first, then each category."""
    product = ctx.product_of(unit)
    items: list[InstalledItem] = []
    for a in step.consumes:
        mb = unit.mainboard
        assert mb is not None, f"{unit.serial}: step {step.step} needs its {a.category}"
        items.append(InstalledItem(lot=mb.work_order, mpn=parts.MAINBOARD_MPN,
                                   pn=parts.MAINBOARD_PN, category=a.category, serial=mb.serial,
                                   last_event=mb.events[-1].event_id))  # its chain, as built
        unit.installed[a.category] = mb.serial
    for expected in step.parts:
        part = product.part(expected.category)
        parent = unit.installed.get(expected.parent) if expected.parent else None
        if not expected.serialized:
            if expected.category == "cable-kit" and ctx.strikes("unknown-lot", unit):
                lot_id = f"LOT-S{ctx.seed}-{part.code}-9{unit.number:03d}"  # never received
                ctx.strike("unknown-lot", unit=unit.serial, lot=lot_id)
            else:
                lot_id = ctx.stock.take_qty(part, expected.count).lot_id
            items.append(item(part, lot_id, qty=expected.count, parent=parent))
            continue
        picked = unit.kit[expected.category]
        slots: list[int | None] = list(expected.slots) or (
            list(range(expected.count)) if expected.count > 1 else [None])
        for slot, (serial, lot) in zip(slots, picked, strict=True):
            items.append(item(part, lot.lot_id, serial=serial, slot=slot, parent=parent))
            if expected.category == "gpu" and slot is not None:
                unit.gpus[slot] = (serial, lot)
        if expected.count == 1:
            unit.installed[expected.category] = picked[0][0]
    return Outcome([("materials.installed", MaterialsInstalled(transaction_id=tx, items=items))])


def firmware(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    """Flashes the golden images; `firmware-mismatch` reports another BMC image hash once."""
    board = unit.installed["mainboard"]
    targets = {"BMC": [board], "BIOS": [board],
               "VBIOS": [s for _, (s, _) in sorted(unit.gpus.items())],
               "NIC": [s for s, _ in unit.kit.get("nic", [])]}
    tamper = ctx.strikes("firmware-mismatch", unit) and unit.visits[step.step] == 1
    component = FIRMWARE_COMPONENTS[int(ctx.param("firmware-mismatch", "component", 0) or 0)
                                    % len(FIRMWARE_COMPONENTS)]
    events: list[tuple[str, Body]] = []
    for img in ctx.product_of(unit).firmware:
        for k, target in enumerate(targets[img.component]):
            sha = img.sha256
            if tamper and img.component == component and k == 0:
                sha = hashlib.sha256(f"not-golden:{img.image}:{unit.serial}".encode()).hexdigest()
                ctx.strike("firmware-mismatch", unit=unit.serial, station=station_of(step)
                           .station_id, details={"component": component, "target": target,
                                                 "image": img.image})
            events.append(("firmware.flashed", FirmwareFlashed(
                component=img.component, image=img.image, version=img.version, sha256=sha,
                target=target)))
    return Outcome(events)
