"""The evidence of each simulator fault (DOMAIN.md §9), found in a stream of events.

Test support, shared by the unit tests (events a `LinePlan` would send) and the integration
tests (events read back from the ledger), so both judge by the same definition. Each finder
returns what it found (unit, GPU, lot, station...), empty when the signature is absent; a clean
run must give nothing for every fault, and a run with faults exactly its faults.
"""

from __future__ import annotations

import json
import sqlite3
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from pathlib import Path
from statistics import median
from typing import Any

import msgspec

from linetrace.ledger.avl import ApprovedVendorList, default_avl
from linetrace.ledger.telemetry_store import decode
from linetrace.schemas.envelope import parse_time
from linetrace.schemas.routes import Route, RouteError
from linetrace.schemas.routes import route_for_unit as _route_for_unit
from linetrace.stations.burnin import FATAL_XIDS
from linetrace.stations.simulator import LinePlan, golden_firmware

THROTTLE_BITS = 0x8 | 0x20 | 0x40 | 0x80  # HW_SLOWDOWN, SW_THERMAL, HW_THERMAL, HW_POWER_BRAKE
SDT = 4000


@cache
def route_for_unit(product: str, kind: str) -> Route:
    return _route_for_unit(product, kind)


@dataclass(frozen=True)
class Ev:
    type: str
    source: str
    subject: str
    time: datetime
    data: dict[str, Any]


def from_plan(plan: LinePlan) -> list[Ev]:
    return [Ev(e.event_type, e.station_id, e.subject, e.time, msgspec.to_builtins(e.body))
            for e in plan.stream()]


def from_ledger(db: Path, like: str = "%") -> list[Ev]:
    """Every accepted event whose subject or source matches `like` (SQL LIKE), in time order."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute(
            "SELECT type, source, subject, value FROM events WHERE subject LIKE ? OR source LIKE ?"
            " ORDER BY time, seq", (like, like)).fetchall()
    out = []
    for typ, source, subject, value in rows:
        doc = json.loads(decode(value))  # telemetry rows are stored compressed
        out.append(Ev(typ, source, subject, parse_time(doc["time"]), doc["data"]))
    return out


def _runs(events: Iterable[Ev]) -> dict[tuple[str, str], list[Ev]]:
    runs: dict[tuple[str, str], list[Ev]] = defaultdict(list)
    for e in events:
        if e.type == "burnin.telemetry":
            runs[e.subject, e.data["run_id"]].append(e)
    return runs


def hot_gpu(events: list[Ev]) -> list[str]:
    """A GPU >= 8 C above the median of its siblings under load for 30+ s, then throttling."""
    found = []
    for (unit, _), samples in _runs(events).items():
        streak: dict[int, int] = defaultdict(int)
        hot: set[int] = set()
        for e in samples:
            temps = {s["gpu_index"]: s["temp_c"] for s in e.data["samples"]}
            for s in e.data["samples"]:
                i = s["gpu_index"]
                others = [t for j, t in temps.items() if j != i]
                loaded = s.get("util_pct", 0) >= 50
                if loaded and others and s["temp_c"] - median(others) >= 8:
                    streak[i] += 1
                    if streak[i] >= 30:
                        hot.add(i)
                else:
                    streak[i] = 0
                if i in hot and s.get("clocks_event_reasons", 0) & THROTTLE_BITS:
                    found.append(f"{unit} gpu{i}")
                    hot.discard(i)
    return sorted(set(found))


def ecc_dbe(events: list[Ev]) -> list[str]:
    found = set()
    for (unit, _), samples in _runs(events).items():
        first: dict[int, int] = {}
        for e in samples:
            for s in e.data["samples"]:
                i, dbe = s["gpu_index"], s.get("ecc_dbe_vol", 0)
                first.setdefault(i, dbe)
                if dbe > first[i]:
                    found.add(f"{unit} gpu{i}")
    return sorted(found)


def fatal_xid(events: list[Ev]) -> list[str]:
    return sorted({f"{e.subject} gpu{e.data['gpu_index']} xid {e.data['xid']}" for e in events
                   if e.type == "burnin.xid" and e.data["xid"] in FATAL_XIDS})


def gpu_off_bus(events: list[Ev]) -> list[str]:
    found = set()
    for (unit, _), samples in _runs(events).items():
        seen: set[int] = set()
        for e in samples:
            present = {s["gpu_index"] for s in e.data["samples"]}
            if present:
                found |= {f"{unit} gpu{i}" for i in seen - present}
            seen |= present
    return sorted(found)


def _burnin_gpu_failures(events: list[Ev]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """lot -> GPU serials burned in, lot -> GPU serials below a performance floor."""
    fitted: dict[str, dict[int, tuple[str, str]]] = defaultdict(dict)  # unit -> slot -> (s, lot)
    tested: dict[str, set[str]] = defaultdict(set)
    failed: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.type == "materials.installed":
            for it in e.data["items"]:
                if it.get("category") == "gpu" and it.get("slot") is not None:
                    fitted[e.subject][it["slot"]] = (it["serial"], it["lot"])
        elif e.type == "unit.tested" and e.data["method"] == "Burnin":
            perf = [t for t in e.data.get("tests", [])
                    if t["name"] in ("gemm_stress", "memory_bandwidth")]
            if not perf:
                continue
            for serial, lot in fitted[e.subject].values():
                tested[lot].add(serial)
            for t in perf:
                for m in t.get("measurements", []):
                    slot = int(m["name"].split(".")[0].removeprefix("gpu"))
                    if m.get("min") is not None and m["value"] < m["min"]:
                        serial, lot = fitted[e.subject][slot]
                        failed[lot].add(serial)
    return tested, failed


def bad_lot(events: list[Ev]) -> list[str]:
    """A GPU lot with >= 4 GPUs below a burn-in floor and >= 25 % of its GPUs failing
    (natural: about one GPU in a hundred)."""
    tested, failed = _burnin_gpu_failures(events)
    return sorted(f"{lot} {len(failed[lot])}/{len(tested[lot])}" for lot in failed
                  if len(failed[lot]) >= 4 and len(failed[lot]) >= 0.25 * len(tested[lot]))


def ict_drift(events: list[Ev], window: int = 6) -> list[str]:
    """Consecutive ICT results of one measurement moving one way in a straight line: `window`
    values strictly monotone, residual of a line fit below 1/100 of the limit band, drift
    across them >= 1/10 of it (natural noise is about 1/8 of the band)."""
    series: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for e in events:
        if e.type == "unit.tested" and e.data["method"] == "ICT":
            for t in e.data.get("tests", []):
                for m in t.get("measurements", []):
                    band = (m.get("max") or 0) - (m.get("min") or 0)
                    series[e.source, m["name"]].append((m["value"], band))
    found = set()
    for (station, name), values in series.items():
        for k in range(len(values) - window + 1):
            xs = [v for v, _ in values[k:k + window]]
            band = values[k][1]
            diffs = [b - a for a, b in zip(xs, xs[1:])]
            if band <= 0 or not (all(d > 0 for d in diffs) or all(d < 0 for d in diffs)):
                continue
            n = len(xs)
            mx, my = (n - 1) / 2, sum(xs) / n
            slope = sum((i - mx) * (x - my) for i, x in enumerate(xs)) / sum(
                (i - mx) ** 2 for i in range(n))
            resid = (sum((x - (my + slope * (i - mx))) ** 2 for i, x in enumerate(xs)) / n) ** 0.5
            if resid < band / 100 and abs(xs[-1] - xs[0]) >= band / 10:
                found.add(f"{station} {name}")
    return sorted(found)


def skip_step(events: list[Ev]) -> list[str]:
    """A unit arriving at a step without having completed a step its route requires first."""
    product: dict[str, tuple[str, str]] = {}
    done: dict[str, set[int]] = defaultdict(set)
    found = []
    for e in events:
        if e.type == "work.started":
            product[e.subject] = (e.data["product"], e.data.get("kind", "server"))
        elif e.type == "work.completed" and e.data["result"] in ("Completed", "Skipped"):
            done[e.subject].add(e.data["step"])
        elif e.type == "unit.arrived" and e.subject in product:
            try:
                route = route_for_unit(*product[e.subject])
            except RouteError:
                continue
            step = e.data["step"]
            if route.has_step(step) and (missing := route.missing_before(step, done[e.subject])):
                found.append(f"{e.subject} at {step} without {missing}")
    return found


def _units(events: list[Ev]) -> set[str]:
    return {e.subject for e in events if e.type == "work.started"}


def unknown_lot(events: list[Ev]) -> list[str]:
    received = {e.data["lot"] for e in events if e.type == "material.received"}
    units = _units(events)
    return sorted({f"{e.subject} {it['lot']}" for e in events if e.type == "materials.installed"
                   for it in e.data["items"]
                   if it.get("serial") not in units and it["lot"] not in received})


def cloned_serial(events: list[Ev]) -> list[str]:
    where: dict[str, set[str]] = defaultdict(set)
    for e in events:
        if e.type == "materials.installed":
            for it in e.data["items"]:
                if it.get("serial"):
                    where[it["serial"]].add(e.subject)
    return sorted(f"{s} in {sorted(u)}" for s, u in where.items() if len(u) > 1)


def avl_violation(events: list[Ev], avl: ApprovedVendorList | None = None) -> list[str]:
    """Receipts failing the AVL: `material.checked` Failed (ledger), or receipts judged here."""
    found = {f"{e.data['lot']} {e.data['supplier']}" for e in events
             if e.type == "material.checked" and e.data["result"] == "Failed"}
    if avl is not None:
        found |= {f"{e.data['lot']} {e.data['supplier']}" for e in events
                  if e.type == "material.received"
                  and avl.check(e.data["mpn"], e.data["supplier"]).result == "Failed"}
    return sorted(found)


def firmware_mismatch(events: list[Ev]) -> list[str]:
    golden = golden_firmware()
    return sorted({f"{e.subject} {e.data['image']}" for e in events
                   if e.type == "firmware.flashed"
                   and golden.get((e.data["image"], e.data["version"])) != e.data["sha256"]})


def stuck_unit(events: list[Ev]) -> list[str]:
    """A unit silent at a step (arrival to departure) longer than the step's max cycle time."""
    product: dict[str, tuple[str, str]] = {}
    arrived: dict[str, tuple[int, datetime]] = {}
    found = []
    for e in events:
        if e.type == "work.started":
            product[e.subject] = (e.data["product"], e.data.get("kind", "server"))
        elif e.type == "unit.arrived":
            arrived[e.subject] = (e.data["step"], e.time)
        elif e.type == "unit.departed" and e.subject in arrived and e.subject in product:
            step, since = arrived.pop(e.subject)
            route = route_for_unit(*product[e.subject])
            if route.has_step(step) and (e.time - since).total_seconds() > route.step(step).max_cycle_s:
                found.append(f"{e.subject} at {step} for {(e.time - since).total_seconds():.0f} s")
    return found


def station_down(events: list[Ev]) -> list[str]:
    """A station reporting SDT; the finding says whether it then kept silent until its next
    state report."""
    found = []
    for k, e in enumerate(events):
        if e.type == "station.state" and e.data["state"] == SDT:
            later = [x for x in events[k + 1:] if x.source == e.source]
            silent = not later or later[0].type == "station.state"
            found.append(f"{e.source} SDT{' then silent' if silent else ' but kept emitting'}")
    return found


FINDERS: dict[str, Callable[[list[Ev]], list[str]]] = {
    "hot-gpu": hot_gpu, "ecc-dbe": ecc_dbe, "fatal-xid": fatal_xid, "gpu-off-bus": gpu_off_bus,
    "bad-lot": bad_lot, "ict-drift": ict_drift, "skip-step": skip_step,
    "unknown-lot": unknown_lot, "cloned-serial": cloned_serial,
    "avl-violation": lambda evs: avl_violation(evs, default_avl()),
    "firmware-mismatch": firmware_mismatch, "stuck-unit": stuck_unit,
    "station-down": station_down,
}


def signatures(events: list[Ev]) -> dict[str, list[str]]:
    """Fault -> what shows it, for every fault whose signature is in `events`."""
    out = {name: find(events) for name, find in FINDERS.items()}
    return {name: found for name, found in out.items() if found}
