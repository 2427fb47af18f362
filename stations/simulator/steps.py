"""What each operation records: the events between `work.started` and `work.completed`.

Every visit to a station is: `unit.arrived`, `work.started`, the operation's own events,
`work.completed` (result), `unit.departed`. A repair that ends in scrap records
`unit.repaired` (result Scrap) and `unit.scrapped` before `work.completed`.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from linetrace.schemas.bodies import (
    Body, Defect, FirmwareFlashed, InstalledItem, MaterialsInstalled, MaterialsUninstalled,
    Measurement, RemovedItem, TestResult, UnitArrived, UnitDeparted, UnitInspected, UnitPacked,
    UnitRepaired, UnitScrapped, UnitShipped, UnitTested, WorkCompleted, WorkStarted,
)

from . import parts
from .parts import Lot, PartSpec, Stock
from .products import Product, Step
from .units import Failure, Recorder, Unit


@dataclass
class LineContext:
    """Everything an operation draws on. One seeded RNG for results, one for ids."""

    product: Product
    seed: int
    rng: random.Random
    rec: Recorder
    stock: Stock
    defects: int = 0

    def defect_id(self) -> str:
        self.defects += 1
        return f"DEF-S{self.seed}-{self.defects:06d}"

    def batch(self, unit: Unit) -> int:
        return unit.build // self.product.units_per_work_order + 1


@dataclass
class Outcome:
    events: list[tuple[str, Body]] = field(default_factory=list)
    result: Literal["Completed", "Failed"] = "Completed"
    failure: Failure | None = None
    scrapped: bool = False


def visit(ctx: LineContext, unit: Unit, step: Step, start_ms: int, lane: int) -> tuple[int, Outcome]:
    """Record one visit of `unit` to `step`'s station; returns (departure ms, outcome)."""
    rng, rec, sid = ctx.rng, ctx.rec, step.station_id
    t = start_ms
    rec.add(unit, t, sid, "unit.arrived", UnitArrived(step=step.step, lane=lane))
    t += rng.randint(5_000, 30_000)
    tx = rec.new_id()
    rec.add(unit, t, sid, "work.started", WorkStarted(
        transaction_id=tx, step=step.step, operation=step.operation, work_order=unit.work_order,
        product=unit.product, kind=unit.kind, recipe=step.recipe,
        recipe_revision=step.recipe_revision, operator=f"OP-{100 + step.step // 10}{rng.randint(1, 3)}",
    ))
    cycle = int(step.cycle_s * 1000 * rng.uniform(0.85, 1.15))
    outcome = OPERATIONS[step.station_type](ctx, unit, tx)
    n = len(outcome.events)
    for i, (event_type, body) in enumerate(outcome.events):
        rec.add(unit, t + cycle * (i + 1) // (n + 1), sid, event_type, body)
    t += cycle
    rec.add(unit, t, sid, "work.completed",
            WorkCompleted(transaction_id=tx, step=step.step, result=outcome.result))
    t += rng.randint(3_000, 15_000)
    rec.add(unit, t, sid, "unit.departed", UnitDeparted(step=step.step, lane=lane))
    return t, outcome


def _item(part: PartSpec, lot: Lot, *, serial: str | None = None, qty: int | None = None,
          slot: int | None = None, ref: str | None = None, parent: str | None = None) -> InstalledItem:
    return InstalledItem(lot=lot.lot_id, mpn=part.mpn, category=part.category, pn=part.pn,
                         serial=serial, qty=qty, slot=slot, ref=ref, parent=parent)


def _sig(x: float) -> float:
    """Six significant digits: what a tester reports, and stable in JSON."""
    return float(f"{x:.6g}")


# --- mainboard PCBA (steps 20-40) -------------------------------------------------------


def smt(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    items = []
    for comp in parts.BOARD_COMPONENTS:
        lot = ctx.stock.take_qty(comp.part, comp.qty)
        unit.placed[comp.ref] = lot
        items.append(_item(comp.part, lot, qty=comp.qty, ref=comp.ref))
    return Outcome([("materials.installed", MaterialsInstalled(transaction_id=tx, items=items))])


_AOI_DEFECTS = (("SOLDER_BRIDGE", "Solder"), ("INSUFFICIENT_SOLDER", "Solder"),
                ("TOMBSTONE", "Placement"), ("COMPONENT_SHIFT", "Placement"))
_AOI_REFS = ("U12", "C118", "R44", "J7", "U43", "C301")


def aoi(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    rng = ctx.rng
    if rng.random() >= ctx.product.yields.aoi_fail:
        return Outcome([("unit.inspected", UnitInspected(transaction_id=tx, method="AOI", result="Passed"))])
    (code, category), ref, defect = rng.choice(_AOI_DEFECTS), rng.choice(_AOI_REFS), ctx.defect_id()
    body = UnitInspected(transaction_id=tx, method="AOI", result="Failed", defects=[Defect(
        code=code, category=category, ref=ref, confidence=rng.randint(70, 99),
        image_ref=f"aoi-01/{unit.serial}/{defect}.png",
    )])
    failure = Failure(30, defect, "solder", f"reworked {code.lower().replace('_', ' ')} at {ref}", ref=ref)
    return Outcome([("unit.inspected", body)], "Failed", failure)


def ict(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    rng = ctx.rng
    failing = rng.randrange(len(parts.ICT_CHECKS)) if rng.random() < ctx.product.yields.ict_fail else None
    tests = []
    for i, check in enumerate(parts.ICT_CHECKS):
        lo, hi = check.nominal * (1 - check.tolerance), check.nominal * (1 + check.tolerance)
        if i == failing:
            value = check.nominal * (1 + rng.choice((-1, 1)) * check.tolerance * rng.uniform(1.3, 2.5))
        else:
            value = min(max(check.nominal * (1 + rng.gauss(0, check.tolerance / 4)), lo), hi)
        tests.append(TestResult(name=check.name, result="Failed" if i == failing else "Passed",
                                measurements=[Measurement(
                                    name=check.ref, value=_sig(value), unit=check.unit,
                                    expected=_sig(check.nominal), min=_sig(lo), max=_sig(hi))]))
    body = UnitTested(transaction_id=tx, method="ICT", result="Passed" if failing is None else "Failed",
                      fixture="FX-ICT-A-01", tests=tests)
    if failing is None:
        return Outcome([("unit.tested", body)])
    check = parts.ICT_CHECKS[failing]
    failure = Failure(40, ctx.defect_id(), "component",
                      f"{check.name} out of limits at {check.ref}; replaced {check.suspect_ref}",
                      ref=check.suspect_ref)
    return Outcome([("unit.tested", body)], "Failed", failure)


# --- server (steps 50-120) --------------------------------------------------------------


def kitting(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    """Picks the serialized parts for this unit (recorded when they are installed)."""
    take = ctx.stock.take_serial
    unit.kit = {
        "baseboard": [take(parts.BASEBOARD)],
        "gpu": [take(parts.GPU) for _ in range(parts.GPUS_PER_SERVER)],
        "chassis": [take(parts.CHASSIS)],
        **{p.category: [take(p) for _ in range(n)] for p, n in parts.INTEGRATION_PARTS},
    }
    unit.cable_lot = ctx.stock.take_qty(parts.CABLES, 1)
    return Outcome()


def gpu_install(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    bb_serial, bb_lot = unit.baseboard = unit.kit["baseboard"][0]
    unit.gpus = dict(enumerate(unit.kit["gpu"]))
    gpus = [_item(parts.GPU, lot, serial=s, slot=slot, parent=bb_serial) for slot, (s, lot) in unit.gpus.items()]
    return Outcome([
        ("materials.installed", MaterialsInstalled(
            transaction_id=tx, items=[_item(parts.BASEBOARD, bb_lot, serial=bb_serial)])),
        ("materials.installed", MaterialsInstalled(transaction_id=tx, items=gpus)),
    ])


def integration(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    mb = unit.mainboard
    assert mb is not None and unit.cable_lot is not None, "integration needs a mainboard and a kit"
    chassis_serial, chassis_lot = unit.kit["chassis"][0]
    items = [
        _item(parts.CHASSIS, chassis_lot, serial=chassis_serial),
        InstalledItem(lot=mb.work_order, mpn=parts.MAINBOARD_MPN, pn=parts.MAINBOARD_PN,
                      category=parts.MAINBOARD_CATEGORY, serial=mb.serial),
    ]
    for part, _ in parts.INTEGRATION_PARTS:
        parent = mb.serial if part.category in parts.ON_MAINBOARD else None
        items += [_item(part, lot, serial=s, slot=slot, parent=parent)
                  for slot, (s, lot) in enumerate(unit.kit[part.category])]
    items.append(_item(parts.CABLES, unit.cable_lot, qty=1))
    return Outcome([("materials.installed", MaterialsInstalled(transaction_id=tx, items=items))])


def firmware(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    assert unit.mainboard is not None
    targets = {"BMC": [unit.mainboard.serial], "BIOS": [unit.mainboard.serial],
               "VBIOS": [s for _, (s, _) in sorted(unit.gpus.items())],
               "NIC": [s for s, _ in unit.kit["nic"]]}
    return Outcome([
        ("firmware.flashed", FirmwareFlashed(component=img.component, image=img.image,
                                             version=img.version, sha256=img.sha256, target=t))
        for img in ctx.product.firmware for t in targets[img.component]
    ])


def burnin(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    """Per-GPU compute and memory results; a natural failure is one GPU below its floor."""
    rng, sku = ctx.rng, ctx.product.gpu
    slow_slot, slow_test = -1, ""
    if rng.random() < ctx.product.yields.burnin_fail:
        slow_slot = rng.randrange(parts.GPUS_PER_SERVER)
        slow_test = rng.choice(("gemm_stress", "memory_bandwidth"))
    gflops_min, bw_min = sku.gflops_target * 0.95, sku.mem_bw_floor_mbs
    gemm, bw = [], []
    for slot in sorted(unit.gpus):
        slow = slot == slow_slot
        g = sku.gflops_target * (rng.uniform(0.80, 0.93) if slow and slow_test == "gemm_stress"
                                 else rng.uniform(1.0, 1.06))
        b = bw_min * (rng.uniform(0.85, 0.97) if slow and slow_test == "memory_bandwidth"
                      else rng.uniform(1.02, 1.10))
        gemm.append(Measurement(name=f"gpu{slot}.gflops", value=round(g, 1), unit="GFLOPS",
                                expected=sku.gflops_target, min=round(gflops_min, 1)))
        bw.append(Measurement(name=f"gpu{slot}.mem_bw", value=round(b), unit="MB/s", min=bw_min))
    nccl = Measurement(name="busbw", value=round(sku.nccl_busbw_gbs * rng.uniform(0.97, 1.03), 1),
                       unit="GB/s", expected=sku.nccl_busbw_gbs,
                       min=round(sku.nccl_busbw_gbs * 0.95, 1))

    def result(name: str) -> Literal["Passed", "Failed"]:
        return "Failed" if slow_test == name else "Passed"

    body = UnitTested(
        transaction_id=tx, method="Burnin", result="Failed" if slow_test else "Passed",
        fixture="RACK-BI-01", tests=[
            TestResult(name="gemm_stress", result=result("gemm_stress"), measurements=gemm),
            TestResult(name="memory_bandwidth", result=result("memory_bandwidth"), measurements=bw),
            TestResult(name="nccl_all_reduce", result="Passed", measurements=[nccl]),
        ])
    if not slow_test:
        return Outcome([("unit.tested", body)])
    failure = Failure(90, ctx.defect_id(), "gpu",
                      f"GPU in slot {slow_slot} below floor in {slow_test}; replaced", slot=slow_slot)
    return Outcome([("unit.tested", body)], "Failed", failure)


def final_qa(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    rng = ctx.rng
    failing = rng.choice(("nic_link", "fan_speed")) if rng.random() < ctx.product.yields.final_qa_fail else None
    counts = {"gpu": len(unit.gpus), **{p.category: len(unit.kit[p.category]) for p, _ in parts.INTEGRATION_PARTS}}
    tests = [
        TestResult(name="power_on", result="Passed"),
        TestResult(name="bmc_reachable", result="Passed"),
        TestResult(name="inventory_match", result="Passed", measurements=[
            Measurement(name=f"{cat}_detected", value=n, unit="count", expected=n, min=n, max=n)
            for cat, n in counts.items()]),
        TestResult(name="nic_link", result="Failed" if failing == "nic_link" else "Passed"),
        TestResult(name="fan_speed", result="Failed" if failing == "fan_speed" else "Passed"),
    ]
    events: list[tuple[str, Body]] = [
        ("unit.inspected", UnitInspected(transaction_id=tx, method="Human", result="Passed")),
        ("unit.tested", UnitTested(transaction_id=tx, method="FCT", result="Failed" if failing else "Passed",
                                   fixture="FX-FCT-A-01", tests=tests)),
    ]
    if failing is None:
        return Outcome(events)
    note = "reseated NIC cable" if failing == "nic_link" else "reseated fan connector"
    return Outcome(events, "Failed", Failure(100, ctx.defect_id(), "functional", note))


def pack(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    n = int(unit.serial.rsplit("-", 1)[1])
    return Outcome([("unit.packed", UnitPacked(
        tamper_seal=f"TS-S{ctx.seed}-{n:06d}", carton=f"CTN-S{ctx.seed}-{n:06d}",
        order=f"SO-S{ctx.seed}-{ctx.batch(unit):04d}"))])


def ship(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    n, batch = int(unit.serial.rsplit("-", 1)[1]), ctx.batch(unit)
    return Outcome([("unit.shipped", UnitShipped(
        order=f"SO-S{ctx.seed}-{batch:04d}", carton=f"CTN-S{ctx.seed}-{n:06d}",
        shipment=f"SHP-S{ctx.seed}-{batch:04d}",
        destination=ctx.product.destinations[(batch - 1) % len(ctx.product.destinations)]))])


def repair(ctx: LineContext, unit: Unit, tx: str) -> Outcome:
    f = unit.failure
    assert f is not None, "repair needs a failure"
    done = unit.repairs[f.step] = unit.repairs.get(f.step, 0) + 1
    if done > ctx.product.yields.max_repairs_per_step or ctx.rng.random() < ctx.product.yields.repair_scrap:
        why = f"failed step {f.step} {done} times" if done > ctx.product.yields.max_repairs_per_step \
            else "damage found during repair"
        return Outcome([
            ("unit.repaired", UnitRepaired(result="Scrap", repairs=[f.defect], note=f"{f.note}: {why}")),
            ("unit.scrapped", UnitScrapped(reason=f"{why} (defect {f.defect})")),
        ], scrapped=True)
    events: list[tuple[str, Body]] = []
    if f.kind == "gpu" and f.slot is not None and unit.baseboard is not None:
        old_serial, old_lot = unit.gpus[f.slot]
        new_serial, new_lot = ctx.stock.take_serial(parts.GPU)
        unit.gpus[f.slot] = (new_serial, new_lot)
        events += [
            ("materials.uninstalled", MaterialsUninstalled(
                transaction_id=tx, reason="DefectiveMaterial", defect=f.defect, note=f.note, items=[
                    RemovedItem(serial=old_serial, lot=old_lot.lot_id, mpn=parts.GPU.mpn, slot=f.slot)])),
            ("materials.installed", MaterialsInstalled(transaction_id=tx, items=[
                _item(parts.GPU, new_lot, serial=new_serial, slot=f.slot, parent=unit.baseboard[0])])),
        ]
    elif f.kind == "component" and f.ref is not None:
        comp = next(c.suspect for c in parts.ICT_CHECKS if c.suspect_ref == f.ref)
        old_lot, new_lot = unit.placed[comp.ref], ctx.stock.take_qty(comp.part, 1)
        events += [
            ("materials.uninstalled", MaterialsUninstalled(
                transaction_id=tx, reason="DefectiveMaterial", defect=f.defect, note=f.note, items=[
                    RemovedItem(lot=old_lot.lot_id, mpn=comp.part.mpn, ref=f.ref)])),
            ("materials.installed", MaterialsInstalled(transaction_id=tx, items=[
                _item(comp.part, new_lot, qty=1, ref=f.ref)])),
        ]
    events.append(("unit.repaired", UnitRepaired(
        result="RepairSuccessful", repairs=[f.defect], return_step=f.step, note=f.note)))
    return Outcome(events)


OPERATIONS: dict[str, Callable[[LineContext, Unit, str], Outcome]] = {
    "smt": smt, "aoi": aoi, "ict": ict, "kitting": kitting, "gpu-install": gpu_install,
    "integration": integration, "firmware": firmware, "burnin": burnin, "final-qa": final_qa,
    "pack": pack, "shipping": ship, "repair": repair,
}
