"""Operations after burn-in, and repair: final QA, pack, ship, and the repair loop.

A unit that fails a step goes to the route's repair step for it (`Route.repair_for`); the
repair replaces what failed and sends it back to the step the route names
(`Route.rework_target`). Unconducted, after `max_loops` repairs for one step the next failure
there ends in scrap, and so does a repair that finds more damage (natural yield). Conducted,
linetrace decides: such a repair reports UnableToRepair, and a disposition to scrap is
carried out by `scrap` (the reason is the disposition's).
"""

from __future__ import annotations

from linetrace.schemas.bodies import (
    Body, FirmwareFlashed, Measurement, MaterialsInstalled, MaterialsUninstalled, RemovedItem, TestResult,
    UnitInspected, UnitPacked, UnitRepaired, UnitScrapped, UnitShipped, UnitTested,
)
from linetrace.schemas.routes import Step

from . import parts
from .build_ops import item
from .context import LineContext, Operation, Outcome
from .units import Failure, Unit

DESTINATIONS = (
    "Ministry of Finance data centre, Bonn",
    "Central bank compute hall, Frankfurt",
    "National research cloud, Jülich",
)


def final_qa(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    """Functional checks, visual inspection, inventory match (scanned vs the route)."""
    rng, product = ctx.rng, ctx.product_of(unit)
    failing = rng.choice(("nic_link", "fan_speed")) if ctx.failures and \
        rng.random() < product.yields.final_qa_fail else None
    expected = product.route.expected_inventory()
    found = {"gpu": len(unit.gpus), **{c: len(v) for c, v in unit.kit.items() if c != "gpu"},
             **{c: 1 for c in unit.installed}}
    tests = [
        TestResult(name="power_on", result="Passed"),
        TestResult(name="bmc_reachable", result="Passed"),
        TestResult(name="inventory_match", result="Passed", measurements=[
            Measurement(name=f"{cat}_detected", value=found.get(cat, n), unit="count", expected=n,
                        min=n, max=n)
            for cat, n in expected.items() if cat in found]),
        TestResult(name="nic_link", result="Failed" if failing == "nic_link" else "Passed"),
        TestResult(name="fan_speed", result="Failed" if failing == "fan_speed" else "Passed"),
    ]
    events: list[tuple[str, Body]] = [
        ("unit.inspected", UnitInspected(transaction_id=tx, method="Human", result="Passed")),
        ("unit.tested", UnitTested(transaction_id=tx, method="FCT",
                                   result="Failed" if failing else "Passed",
                                   fixture=product.fct_fixture, tests=tests)),
    ]
    if failing is None:
        return Outcome(events)
    note = "reseated NIC cable" if failing == "nic_link" else "reseated fan connector"
    return Outcome(events, result="Failed",
                   failure=Failure(step.step, ctx.defect_id(), "functional", note))


def _number(unit: Unit) -> int:
    return int(unit.serial.rsplit("-", 1)[1])


def pack(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    n = _number(unit)
    return Outcome([("unit.packed", UnitPacked(
        tamper_seal=f"TS-S{ctx.seed}-{n:06d}", carton=f"CTN-S{ctx.seed}-{n:06d}",
        order=f"SO-S{ctx.seed}-{ctx.batch(unit):04d}"))])


def ship(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    n, batch = _number(unit), ctx.batch(unit)
    return Outcome([("unit.shipped", UnitShipped(
        order=f"SO-S{ctx.seed}-{batch:04d}", carton=f"CTN-S{ctx.seed}-{n:06d}",
        shipment=f"SHP-S{ctx.seed}-{batch:04d}",
        destination=DESTINATIONS[(batch - 1) % len(DESTINATIONS)]))])


def repair(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
    f = unit.failure
    assert f is not None, "repair needs a failure"
    route = ctx.product_of(unit).route_of(unit.kind)
    rework = route.rework_of(f.step)
    done = unit.repairs[f.step] = unit.repairs.get(f.step, 0) + 1
    return_to = rework.return_to if rework is not None else f.step
    if ctx.conducted:  # linetrace decides what a unit that cannot be repaired becomes
        if ctx.failures and ctx.rng.random() < ctx.product_of(unit).yields.repair_scrap:
            return Outcome([("unit.repaired", UnitRepaired(
                result="UnableToRepair", repairs=[f.defect],
                note=f"{f.note}: damage found during repair"))], result="Failed", unable=True)
    else:
        assert rework is not None, f"step {f.step} has no rework"
        if done > rework.max_loops or ctx.rng.random() < ctx.product_of(unit).yields.repair_scrap:
            why = f"failed step {f.step} {done} times" if done > rework.max_loops \
                else "damage found during repair"
            return Outcome([
                ("unit.repaired", UnitRepaired(result="Scrap", repairs=[f.defect],
                                               note=f"{f.note}: {why}")),
                ("unit.scrapped", UnitScrapped(reason=f"{why} (defect {f.defect})")),
            ], scrapped=True)
    events = _replace_gpus(ctx, unit, f, tx) if f.kind == "gpu" and f.slots else \
        _replace_component(ctx, unit, f, tx) if f.kind == "component" and f.ref else []
    if unit.kind == "server" and ctx.faults.has("golden-reflash"):
        ctx.server_repairs += 1
        if ctx.server_repairs == ctx.faults.targets["golden-reflash"]:
            events.append(_golden_bmc(ctx, unit))
    events.append(("unit.repaired", UnitRepaired(
        result="RepairSuccessful", repairs=[f.defect], return_step=return_to, note=f.note)))
    return Outcome(events)


def _golden_bmc(ctx: LineContext, unit: Unit) -> tuple[str, Body]:
    """Near miss `golden-reflash`: the repair re-flashes the BMC with its golden image."""
    img = next(i for i in ctx.product_of(unit).firmware if i.component == "BMC")
    target = unit.installed["mainboard"]
    ctx.strike("golden-reflash", unit=unit.serial, station="repair-01",
               details={"image": img.image, "target": target})
    return ("firmware.flashed", FirmwareFlashed(component=img.component, image=img.image,
                                                version=img.version, sha256=img.sha256,
                                                target=target))


def _replace_gpus(ctx: LineContext, unit: Unit, f: Failure, tx: str) -> list[tuple[str, Body]]:
    product = ctx.product_of(unit)
    gpu_part = product.part("gpu")
    where = next(p for s in product.route.steps for p in s.parts if p.category == "gpu")
    parent = unit.installed.get(where.parent) if where.parent else None
    removed, fitted = [], []
    for slot in f.slots:
        old_serial, old_lot = unit.gpus[slot]
        new_serial, new_lot = ctx.stock.take_serial(gpu_part)
        unit.gpus[slot] = (new_serial, new_lot)
        removed.append(RemovedItem(serial=old_serial, lot=old_lot.lot_id, mpn=gpu_part.mpn, slot=slot))
        fitted.append(item(gpu_part, new_lot.lot_id, serial=new_serial, slot=slot, parent=parent))
    return [
        ("materials.uninstalled", MaterialsUninstalled(
            transaction_id=tx, reason="DefectiveMaterial", defect=f.defect, note=f.note,
            items=removed)),
        ("materials.installed", MaterialsInstalled(transaction_id=tx, items=fitted)),
    ]


def _replace_component(ctx: LineContext, unit: Unit, f: Failure, tx: str
                       ) -> list[tuple[str, Body]]:
    comp = next(c.suspect for c in parts.ICT_CHECKS if c.suspect_ref == f.ref)
    old_lot, new_lot = unit.placed[comp.ref], ctx.stock.take_qty(comp.part, 1)
    return [
        ("materials.uninstalled", MaterialsUninstalled(
            transaction_id=tx, reason="DefectiveMaterial", defect=f.defect, note=f.note, items=[
                RemovedItem(lot=old_lot.lot_id, mpn=comp.part.mpn, ref=f.ref)])),
        ("materials.installed", MaterialsInstalled(transaction_id=tx, items=[
            item(comp.part, new_lot.lot_id, qty=1, ref=f.ref)])),
    ]


def scrap(reason: str) -> Operation:
    """A conducted disposition to scrap, carried out at the repair station."""

    def scrap_unit(ctx: LineContext, unit: Unit, step: Step, tx: str) -> Outcome:
        return Outcome([("unit.scrapped", UnitScrapped(reason=reason))], scrapped=True)

    return scrap_unit
