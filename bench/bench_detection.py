"""Quality of detection (issue 12): precision and recall of every detector against the truth.

Every simulator fault (DOMAIN.md §9) runs at several seeds with its magnitude, onset, GPU and
target drawn from the seed (`@vary`, docs/simulator.md "Varied faults and near misses"),
beside near misses (a warm GPU, a telemetry hiccup, an ICT wobble, a lot with one failure, a
golden re-flash, a slow unit, a station in standby), forged records (a station's events
re-signed with another key) and clean runs. Each run goes through the real worker pipeline
in-process: the simulator's events, signed by enrolled stations, are screened
(`BatchProcessor.screen_all`: schema, signature) and written batch by batch
(`write_isolating`: the writer, the route stage, every detector stage, the alert engine) on a
fresh SQLite ledger, with every stage's tick after each batch at the batch's event time (a
line running at real speed). Then the `alerts` table and `burnin_verdicts` are read and
scored against `LinePlan.truth`:

- an alert is a true positive when it names what a fault of the run struck (its unit, GPU,
  lot or station, and its GPU index or ICT measurement when the subject names one) and its
  condition is one that fault explains (`PRIMARY`, `ALSO`); anything else is a false
  positive, near misses and clean runs included;
- recall counts, per condition, the strikes whose fault it is the primary detector of
  (`PRIMARY`) that some alert of that condition names;
- two things that are not faults are in the truth too, so their correct alerts are not
  counted false: the simulator's natural single-bit ECC errors (found in the plan's
  telemetry: `burnin.ecc_sbe`, DOMAIN §4 "warn"), and the units whose events were forged
  (quarantined, they leave the unit's route incomplete: `flow.route_violation` on it and on
  the server that installs it);
- the burn-in verdict is scored per run against the simulated station's own result (a run
  the simulator failed, by a fault or naturally, must fail), and per fault: the struck
  unit's first run must fail.

Also the clean run at `--clean-units` (1,000) units: alerts by priority (goal: no medium or
high). Usage:

    .venv/bin/python -m bench.bench_detection [--seeds 5] [--clean-units 1000] [--docs FILE]
    .venv/bin/python -m bench.bench_detection --quick        # 1 seed, small runs, no 1,000
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.records import SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event
from linetrace.schemas.topics import ALL_TOPICS, TOPIC_OF_TYPE, partition_of
from linetrace.stations.simulator import (
    FAULTS, LineConfig, LinePlan, SimEvent, generate_line, parse_faults, station_roster,
)
from linetrace.stations.simulator.faults import NEAR_MISSES, Strike
from linetrace.stations.simulator.parts import ICT_CHECKS
from linetrace.streams.processor import BatchProcessor
from linetrace.streams.route_stage import tick_routes

#: The condition(s) that must find each fault (recall is counted on these).
PRIMARY: dict[str, tuple[str, ...]] = {
    "hot-gpu": ("burnin.peer_deviation",),
    "ecc-dbe": (),  # the verdict's (hard fail), no alert condition
    "fatal-xid": (),  # the verdict's
    "gpu-off-bus": ("burnin.gpu_missing",),
    "bad-lot": ("lot.failure_cluster",),
    "ict-drift": ("spc.out_of_control",),
    "skip-step": ("flow.route_violation",),
    "unknown-lot": ("supply.unknown_lot",),
    "cloned-serial": ("supply.cloned_serial",),
    "avl-violation": ("supply.avl_violation",),
    "firmware-mismatch": ("supply.firmware_mismatch",),
    "stuck-unit": ("flow.stuck_unit",),
    "station-down": ("flow.station_down",),
    "forged": ("security.quarantine",),
    #: not a fault: the simulator's natural single-bit ECC rate (DOMAIN §4: warn), found in
    #: the plan's telemetry so the bench does not count its low alert as a false one
    "natural-sbe": ("burnin.ecc_sbe",),
}
#: Conditions a fault also explains when they name what it struck (not false positives).
ALSO: dict[str, tuple[str, ...]] = {
    "hot-gpu": ("burnin.thermal_headroom", "burnin.temp_rise", "burnin.drift",
                "burnin.power_clock_deviation"),
    "gpu-off-bus": ("burnin.telemetry_gap", "burnin.power_clock_deviation"),
    "fatal-xid": ("burnin.gpu_missing",),
    "bad-lot": ("spc.first_pass_yield", "spc.defect_rate"),
    "ict-drift": ("spc.first_pass_yield", "spc.defect_rate"),
    "station-down": ("flow.stuck_unit", "burnin.telemetry_gap"),
    "stuck-unit": ("flow.station_down",),
    "skip-step": ("flow.stuck_unit",),
    "cloned-serial": ("supply.cloned_serial",),
    #: a quarantined record leaves its unit's route incomplete (and the server installing it)
    "forged": ("flow.route_violation", "flow.stuck_unit"),
}
#: Faults whose struck unit's first burn-in must get a failing verdict.
VERDICT_FAULTS = ("hot-gpu", "ecc-dbe", "fatal-xid", "gpu-off-bus")
_ICT_NAMES = {c.ref for c in ICT_CHECKS} | {c.name for c in ICT_CHECKS}
_GPU = re.compile(r"gpu(\d+)\b")


@dataclass(frozen=True)
class Scenario:
    kind: str  # fault, near, clean
    name: str
    seed: int
    units: int
    spec: str  # --faults SPEC

    @property
    def label(self) -> str:
        return f"{self.name}@{self.seed}"


@dataclass
class Outcome:
    scenario: Scenario
    truth: list[Strike]
    alerts: list[dict[str, Any]]
    verdicts: dict[tuple[str, str], str]  # (serial, run id) -> Passed / Failed
    station_runs: dict[tuple[str, str], bool]  # (serial, run id) -> the station failed it
    events: int
    seconds: float
    error: str = ""


# --- scenarios ---------------------------------------------------------------------------

def _rng(*what: object) -> random.Random:
    return random.Random(":".join(["bench-detect", *map(str, what)]))


def scenarios(seeds: Iterable[int], quick: bool) -> list[Scenario]:
    """Per seed: every fault varied (target drawn too), every near miss, forged records, one
    clean run. Sizes give the statistical detectors a baseline before the fault starts."""
    out: list[Scenario] = []
    small = 6 if quick else 8
    for seed in seeds:
        for f in FAULTS:
            r = _rng(f, seed)
            units, target = small, r.randint(1, small)
            if f == "cloned-serial":
                target = r.randint(2, small)
            elif f == "bad-lot":
                units = 16 if quick else 24
                target = r.randint(2, units // 3)  # 16 GPUs a lot: 2 servers each
            elif f == "ict-drift":  # after the chart's baseline (25 boards, spc.json), and
                target = r.randint(27, 30)  # ending well inside the run (retests and
                units = target + 20  # reworked boards number boards beyond the servers)
            elif f == "avl-violation":
                units, target = 12, r.randint(1, 2)  # 30 PSUs a lot: 7 servers
            elif f == "station-down":
                target = r.randint(1, small - 2)
            out.append(Scenario("fault", f, seed, units, f"{f}:{target}@vary"))
        for n in NEAR_MISSES:
            r = _rng(n, seed)
            units, target = small, r.randint(1, small)
            if n == "ict-wobble":
                target = r.randint(28, 32)
                units = target + 14
            elif n == "lot-one-failure":
                units = 16 if quick else 24
                target = r.randint(2, units // 3)
            elif n == "golden-reflash":
                units, target = 16, 1
            elif n == "station-standby":
                target = r.randint(1, small - 2)
            out.append(Scenario("near", n, seed, units, f"{n}:{target}@vary"))
        out.append(Scenario("forged", "forged", seed, small, "none"))
        out.append(Scenario("clean", "clean", seed, 12 if quick else 24, "none"))
    return out


# --- the ledger and the records ----------------------------------------------------------

def station_key(station: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"detect " + station.encode())
                                                .digest())


def template(tmp: Path) -> Path:
    """A ledger with every station of products A and B enrolled; copied for each run."""
    data = tmp / "template"
    (data / "keys").mkdir(parents=True)
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    for sid, kind in station_roster("mix"):
        enroll_station(ledger, plant, sid, kind, station_key(sid).public_key())
    ledger.close()
    return data


def records(stream: list[SimEvent], forge: set[int] = frozenset()  # type: ignore[assignment]
            ) -> list[tuple[datetime, SourceRecord]]:
    """The stations' signed records, in the order the simulator sends them; the events at
    indexes `forge` signed with a key that is not their station's (forged)."""
    seq: Counter[str] = Counter()
    offsets: Counter[tuple[str, int]] = Counter()
    out = []
    for i, e in enumerate(stream):
        seq[e.station_id] += 1
        value = encode_event(event_type=e.event_type, source=e.station_id, subject=e.subject,
                             body=e.body, time=e.time, stationseq=seq[e.station_id],
                             event_id=e.event_id)
        key = station_key(e.station_id) if i not in forge else station_key(f"forger-{i}")
        topic = TOPIC_OF_TYPE[e.event_type]
        part = partition_of(e.subject.encode(), ALL_TOPICS[topic])
        out.append((e.time, SourceRecord(topic, part, offsets[(topic, part)], e.subject.encode(),
                                         value, signing.sign_value(value, key))))
        offsets[(topic, part)] += 1
    return out


def replay(plan: LinePlan, data: Path, batch: int = 400, forge: set[int] | None = None) -> int:
    """Write the plan's records through the worker's batch processor (every stage), ticking
    every stage after each batch at its last event time. Returns the records written."""
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    proc = BatchProcessor(ledger, "127.0.0.1:1", SystemContext(plant_key=plant), line_speed=0.0)
    recs = records(plan.stream(), forge or set())
    try:
        for i in range(0, len(recs), batch):
            chunk = recs[i:i + batch]
            cands, rejections = proc.screen_all([r for _, r in chunk])
            positions: dict[tuple[str, int], int] = {}
            for _, r in chunk:
                assert r.partition is not None and r.offset is not None
                key = (r.topic, r.partition)
                positions[key] = max(positions.get(key, 0), r.offset + 1)
            proc.write_isolating(cands, rejections, positions)
            tick_routes(ledger, proc.pipeline, proc.ctx, chunk[-1][0])
        tick_routes(ledger, proc.pipeline, proc.ctx, recs[-1][0])
    finally:
        proc.writer.shutdown(wait=True)
        ledger.close()
    return len(recs)


def read_alerts(db: Path) -> list[dict[str, Any]]:
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(r) for r in conn.execute("SELECT * FROM alerts")]


def read_verdicts(db: Path) -> dict[tuple[str, str], str]:
    with sqlite3.connect(db) as conn:
        return {(s, r): res for s, r, res in conn.execute(
            "SELECT serial, run_id, result FROM burnin_verdicts")}


def station_runs(plan: LinePlan) -> dict[tuple[str, str], bool]:
    """(serial, run id) -> whether the simulated station failed that burn-in run."""
    out: dict[tuple[str, str], bool] = {}
    for u in plan.units:
        run = None
        for e in u.events:
            if e.event_type == "burnin.run":
                d = msgspec.to_builtins(e.body)
                if d["phase"] == "start":
                    run = str(d["run_id"])
            elif e.event_type == "work.completed" and run is not None and e.station_id.startswith(
                    "burnin"):
                out[(u.serial, run)] = msgspec.to_builtins(e.body)["result"] == "Failed"
                run = None
    return out


def natural_sbe(plan: LinePlan) -> list[Strike]:
    """The GPUs whose single-bit ECC counter rose during a burn-in run (natural rate)."""
    out = []
    for u in plan.units:
        first: dict[tuple[str, int], int] = {}
        hit: set[tuple[str, int]] = set()
        for e in u.events:
            if e.event_type != "burnin.telemetry":
                continue
            d = msgspec.to_builtins(e.body)
            for smp in d["samples"]:
                sbe = smp.get("ecc_sbe_vol", 0)  # 0, the default, is left out
                key = (d["run_id"], smp["gpu_index"])
                first.setdefault(key, sbe)
                if sbe > first[key] and key not in hit:
                    hit.add(key)
                    out.append(Strike("natural-sbe", unit=u.serial, gpu=smp["gpu_index"],
                                      gpu_serial=smp["gpu_serial"]))
    return out


def run_one(sc: Scenario, base: Path, tmp: Path) -> Outcome:
    t0 = time.perf_counter()
    data = tmp / sc.label.replace("@", "-")
    shutil.copytree(base, data)
    try:
        plan = generate_line(LineConfig(units=sc.units, seed=sc.seed,
                                         faults=parse_faults(sc.spec)))
    except Exception as e:  # a target the run never reached: say so, score nothing
        return Outcome(sc, [], [], {}, {}, 0, 0.0, error=str(e))
    truth = list(plan.truth)
    forge: set[int] = set()
    if sc.kind == "forged":
        stream = plan.stream()
        r = _rng("forged", sc.seed)
        station = r.choice(sorted({e.station_id for e in stream if e.event_type != "station.state"
                                   and not e.station_id.startswith("receiving")}))
        mine = [i for i, e in enumerate(stream) if e.station_id == station]
        forge = set(r.sample(mine, min(len(mine), r.randint(1, 3))))
        hit = {stream[i].subject for i in forge}
        hit |= {u.serial for u in plan.servers if u.mainboard is not None
                and u.mainboard.serial in hit}
        truth.append(Strike("forged", station=station, details={"records": len(forge),
                                                                 "units": sorted(hit)}))
    truth += natural_sbe(plan)
    try:
        n = replay(plan, data, forge=forge)
        alerts = read_alerts(data / "ledger.db")
        verdicts = read_verdicts(data / "ledger.db")
    finally:
        shutil.rmtree(data, ignore_errors=True)
    return Outcome(sc, truth, alerts, verdicts, station_runs(plan), n, time.perf_counter() - t0)


# --- scoring -----------------------------------------------------------------------------

def names(alert: dict[str, Any], s: Strike) -> bool:
    """Does the alert name what strike `s` struck (and, when its subject names a GPU index or
    an ICT measurement, the same one)?"""
    subject = str(alert.get("subject") or "")
    text = " ".join(str(alert.get(k) or "") for k in ("subject", "unit", "station", "lot"))
    tokens = [s.unit, s.gpu_serial, s.lot, s.station, s.details.get("also_in"),
              *(s.details.get("units") or ())]  # type: ignore[misc]
    if s.fault == "ict-drift":
        tokens = [str(s.details.get("ref")), str(s.details.get("check"))]
    if not any(t and str(t) in text for t in tokens):
        return False
    gpu = _GPU.search(subject)
    if gpu is not None and s.gpu is not None and s.unit and s.unit in subject:
        return int(gpu.group(1)) == s.gpu
    named = [n for n in _ICT_NAMES if n in subject]
    if named and s.fault == "ict-drift":
        return any(n in (s.details.get("ref"), s.details.get("check")) for n in named)
    return True


@dataclass
class Score:
    alerts: int = 0
    tp: int = 0
    fp: int = 0
    truths: int = 0
    found: int = 0
    by_priority: Counter[str] = field(default_factory=Counter)
    false: list[str] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)

    @property
    def precision(self) -> float | None:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else None

    @property
    def recall(self) -> float | None:
        return self.found / self.truths if self.truths else None


def score(outcomes: list[Outcome]) -> tuple[dict[str, Score], Score]:
    per: dict[str, Score] = defaultdict(Score)
    verdict = Score()
    for o in outcomes:
        if o.error:
            continue
        faults = [s for s in o.truth if not s.near_miss]
        for a in o.alerts:
            c = str(a["condition"])
            sc = per[c]
            sc.alerts += 1
            sc.by_priority[str(a["priority"])] += 1
            if any(c in PRIMARY.get(s.fault, ()) + ALSO.get(s.fault, ()) and names(a, s)
                   for s in faults):
                sc.tp += 1
            else:
                sc.fp += 1
                sc.false.append(f"{o.scenario.label}: {a['subject']} ({a['priority']}, "
                                f"{a['state']})")
        seen: set[tuple[str, str]] = set()
        for s in faults:
            for c in PRIMARY.get(s.fault, ()):
                key = (s.fault, c)
                if key in seen:  # a fault counts once per run (ict-drift strikes once)
                    continue
                seen.add(key)
                per[c].truths += 1
                if any(a["condition"] == c and names(a, s) for a in o.alerts):
                    per[c].found += 1
                else:
                    per[c].missed.append(f"{o.scenario.label}: {_what(s)}")
        for key, failed in o.station_runs.items():
            got = o.verdicts.get(key)
            verdict.alerts += got is not None
            if got == "Failed":
                verdict.tp += failed
                verdict.fp += not failed
                if not failed:
                    verdict.false.append(f"{o.scenario.label}: {key[0]} run {key[1][:8]}")
            if failed:
                verdict.truths += 1
                verdict.found += got == "Failed"
                if got != "Failed":
                    verdict.missed.append(f"{o.scenario.label}: {key[0]} run {key[1][:8]} "
                                          f"({got or 'no verdict'})")
    return dict(per), verdict


def fault_recall(outcomes: list[Outcome]) -> list[tuple[str, int, int, list[str]]]:
    """Per fault: runs, runs where its primary detector (or the verdict) found what it struck."""
    rows: dict[str, list[Any]] = {}
    for o in outcomes:
        if o.scenario.kind not in ("fault", "forged") or o.error:
            continue
        row = rows.setdefault(o.scenario.name, [0, 0, []])
        strikes = [s for s in o.truth if s.fault == o.scenario.name][:1]
        if not strikes:
            continue
        s = strikes[0]
        row[0] += 1
        ok = any(a["condition"] in PRIMARY[s.fault] and names(a, s) for a in o.alerts)
        if s.fault in VERDICT_FAULTS:
            runs = [k for k in o.station_runs if k[0] == s.unit]
            first = runs[0] if runs else None
            ok_verdict = first is not None and o.verdicts.get(first) == "Failed"
            ok = ok_verdict and (ok or not PRIMARY[s.fault])
        row[1] += ok
        if not ok:
            row[2].append(f"{o.scenario.label} {_what(s)}")
    return [(f, r[0], r[1], r[2]) for f, r in sorted(rows.items())]


def _what(s: Strike) -> str:
    parts = [s.fault, s.unit or "", f"gpu{s.gpu}" if s.gpu is not None else "", s.lot or "",
             s.station or ""]
    keep = {k: (round(v, 2) if isinstance(v, float) else v) for k, v in s.details.items()
            if k in ("delta", "onset", "onset_s", "p", "slope", "check", "stall", "duration",
                     "component", "xid_code", "count")}
    return " ".join(p for p in parts if p) + (f" {keep}" if keep else "")


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


# --- the clean run at scale --------------------------------------------------------------

def clean_at_scale(units: int, seed: int, base: Path, tmp: Path) -> tuple[Counter[str], Counter[
        tuple[str, str]], int, float]:
    t0 = time.perf_counter()
    data = tmp / f"clean-{units}"
    shutil.copytree(base, data)
    plan = generate_line(LineConfig(units=units, seed=seed))
    n = replay(plan, data, batch=1000)
    alerts = read_alerts(data / "ledger.db")
    shutil.rmtree(data, ignore_errors=True)
    return (Counter(str(a["priority"]) for a in alerts),
            Counter((str(a["condition"]), str(a["priority"])) for a in alerts), n,
            time.perf_counter() - t0)


# --- report ------------------------------------------------------------------------------

def report(outcomes: list[Outcome], per: dict[str, Score], verdict: Score,
           faults: list[tuple[str, int, int, list[str]]]) -> str:
    lines = ["| detector (condition) | alerts | TP | FP | struck | found | precision | recall |",
             "|---|---|---|---|---|---|---|---|"]
    for c in sorted(set(per) | {x for v in PRIMARY.values() for x in v}):
        s = per.get(c, Score())
        lines.append(f"| `{c}` | {s.alerts} | {s.tp} | {s.fp} | {s.truths} | {s.found} | "
                     f"{_pct(s.precision)} | {_pct(s.recall)} |")
    lines.append(f"| burn-in verdict (per run, fail = positive) | {verdict.alerts} | "
                 f"{verdict.tp} | {verdict.fp} | {verdict.truths} | {verdict.found} | "
                 f"{_pct(verdict.precision)} | {_pct(verdict.recall)} |")
    lines += ["", "| fault | runs | found | recall | missed |", "|---|---|---|---|---|"]
    for f, runs, found, missed in faults:
        lines.append(f"| `{f}` | {runs} | {found} | {_pct(found / runs if runs else None)} | "
                     f"{'; '.join(missed[:3])} |")
    return "\n".join(lines)


def failures(per: dict[str, Score], verdict: Score, limit: int = 8) -> str:
    out = []
    for c, s in sorted(per.items()):
        if s.false:
            out.append(f"- `{c}` false positives ({len(s.false)}): " + "; ".join(s.false[:limit]))
        if s.missed:
            out.append(f"- `{c}` missed ({len(s.missed)}): " + "; ".join(s.missed[:limit]))
    if verdict.false:
        out.append(f"- verdict failed a run the station passed ({len(verdict.false)}): "
                   + "; ".join(verdict.false[:limit]))
    if verdict.missed:
        out.append(f"- verdict passed (or never decided) a run the station failed "
                   f"({len(verdict.missed)}): " + "; ".join(verdict.missed[:limit]))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=5, help="seeds per fault (default 5)")
    ap.add_argument("--first-seed", type=int, default=1201)
    ap.add_argument("--clean-units", type=int, default=1000, help="0 skips the clean run at scale")
    ap.add_argument("--quick", action="store_true", help="1 seed, small runs, no clean run at scale")
    ap.add_argument("--only", default="", help="comma-separated scenario names (faults, near "
                    "misses, forged, clean)")
    ap.add_argument("--ict-length", type=int, default=0,
                    help="boards an ict-drift lasts (`@length=N`; default: drawn, 8-12)")
    ap.add_argument("--json", type=Path, help="write every outcome's alerts and truth here")
    args = ap.parse_args(argv)
    if args.quick:
        args.seeds, args.clean_units = 1, 0
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    todo = scenarios(seeds, args.quick)
    if args.ict_length:
        todo = [replace(s, spec=f"{s.spec}@length={args.ict_length}", units=s.units + 6)
                if s.name == "ict-drift" else s for s in todo]
    if args.only:
        keep = set(args.only.split(","))
        todo = [s for s in todo if s.name in keep]
    outcomes: list[Outcome] = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-detect-") as tmpdir:
        tmp = Path(tmpdir)
        base = template(tmp)
        for i, sc in enumerate(todo, 1):
            o = run_one(sc, base, tmp)
            outcomes.append(o)
            got = Counter(str(a["condition"]) for a in o.alerts)
            print(f"[{i}/{len(todo)}] {sc.label:28s} {sc.units:3d} units {o.events:6d} records "
                  f"{o.seconds:5.1f}s  {o.error or dict(sorted(got.items()))}", flush=True)
        scale = None
        if args.clean_units:
            scale = clean_at_scale(args.clean_units, args.first_seed, base, tmp)
    per, verdict = score(outcomes)
    faults = fault_recall(outcomes)
    print()
    print(report(outcomes, per, verdict, faults))
    print()
    print(failures(per, verdict) or "no false positive, nothing missed")
    if scale is not None:
        prio, conds, n, secs = scale
        print(f"\nclean run, {args.clean_units} units (seed {args.first_seed}): {n} records in "
              f"{secs:.0f} s; alerts by priority {dict(prio)}; by condition {dict(conds)}")
    print(f"\n{len(todo)} runs in {time.perf_counter() - started:.0f} s; skipped: "
          f"{[o.scenario.label for o in outcomes if o.error]}")
    if args.json:
        args.json.write_text(json.dumps([{
            "scenario": o.scenario.label, "spec": o.scenario.spec, "units": o.scenario.units,
            "error": o.error, "truth": [msgspec.to_builtins(replace(s, details=dict(s.details)))
                                        for s in o.truth],
            "alerts": [{k: v for k, v in a.items() if k in (
                "condition", "subject", "priority", "state", "unit", "station", "lot")}
                for a in o.alerts],
            "verdicts": {f"{k[0]} {k[1]}": v for k, v in o.verdicts.items()},
            "station_runs": {f"{k[0]} {k[1]}": v for k, v in o.station_runs.items()},
        } for o in outcomes], indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
