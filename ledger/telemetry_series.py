"""A unit's burn-in telemetry as chart series: per run, per GPU, over time, with the GPU off
its peers marked (the console's `GET /api/v1/units/{serial}/telemetry`, docs/console.md).

The document (`telemetry_series`)::

    {"serial": "SRV-...",
     "runs": [                                   # chronological, by the run's start
       {"run": RUN_ID, "station": "burnin-01", "sku": "B200" | null,
        "start": RFC3339, "end": RFC3339 | null,  # the burnin.run start / end (null: running)
        "verdict": "Passed" | "Failed" | null,    # linetrace's burnin.verdict on the run
        "verdict_id": ID | null,
        "thresholds": {"slowdown_c", "shutdown_c", "max_operating_c"} | null,
        "events": N,                              # burnin.telemetry events read
        "pruned": N,                              # telemetry rows pruned under retention
                                                  # (no bytes, so no samples; counted
                                                  # against the runs left without samples)
        "downsampled": bool,                      # true when a GPU had > MAX_POINTS samples
        "gpus": [
          {"index": 0, "serial": "GPU-..." | null,
           "outlier": bool,                       # off its peers (below)
           "why": [str, ...],                     # each reason it is; [] when it is not
           "peak_delta_c": float | null,          # its highest temperature above the median
                                                  # of its siblings at steady load
           "samples": [{"t": seconds since start, "temp_c", "power_w", "sm_clock_mhz",
                        "mem_clock_mhz" | null, "util" | null}, ...]}]}]}

A GPU is an outlier (`why` says which of these held):

- its temperature ran >= PEER_DELTA_C (8 C) above the median of its siblings, at steady load
  (the median utilization of the GPUs reporting >= 90 % for SETTLE_S, 60 s), for SUSTAIN_S
  (30 s) or more without a break: the rule of docs/detection.md's peer deviation, computed
  here from the samples (`peer_outliers`, pure);
- linetrace's verdict on the run failed it (`burnin.verdict` gpus[].result Failed);
- an anomaly alert about it in this run compared it with its siblings (peer deviation, power or
  clock deviation, drift).

At most MAX_POINTS (600) samples per GPU: a longer run is averaged over consecutive groups of
samples (each point the mean of its group's values and times).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import msgspec
from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas.topics import TELEMETRY

from .alerts.models import Alert
from .genealogy import iso
from .models import EventRow
from .telemetry_store import is_pruned
from .unit_state import aware
from .verdicts import verdicts_of

MAX_POINTS = 600
PEER_DELTA_C = 8.0
SUSTAIN_S = 30.0
SETTLE_S = 60.0
STEADY_UTIL = 90.0
#: Anomaly alerts that compare a GPU with its siblings (streams/detect/burnin_anomaly.py).
PEER_CONDITIONS = ("burnin.peer_deviation", "burnin.power_clock_deviation", "burnin.drift")


class _Sample(msgspec.Struct):
    gpu_index: int
    temp_c: float
    power_w: float
    sm_clock_mhz: float
    gpu_serial: str | None = None
    mem_clock_mhz: float | None = None
    util_pct: float | None = None


class _Data(msgspec.Struct):
    run_id: str
    samples: list[_Sample] = []


class _Telemetry(msgspec.Struct):
    data: _Data


_DECODER = msgspec.json.Decoder(_Telemetry)


@dataclass
class Point:
    """One GPU's reading in one telemetry event."""

    t: float  # seconds since the run's start
    temp_c: float
    power_w: float
    sm_clock_mhz: float
    mem_clock_mhz: float | None
    util: float | None


@dataclass
class _Run:
    run: str
    station: str
    start: datetime | None = None
    end: datetime | None = None
    sku: str | None = None
    thresholds: dict[str, Any] | None = None
    inventory: dict[int, str] = field(default_factory=dict)
    # (event time, [samples]) per telemetry event, in stored order
    events: list[tuple[datetime, list[_Sample]]] = field(default_factory=list)
    pruned: int = 0


# --- the pure parts -----------------------------------------------------------------------


def _median(xs: Sequence[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


@dataclass(frozen=True)
class PeerFinding:
    """What the peer rule saw of one GPU: its longest run >= PEER_DELTA_C above its siblings'
    median at steady load (seconds), and its highest deviation there."""

    index: int
    sustained_s: float
    peak_delta_c: float | None

    @property
    def outlier(self) -> bool:
        return self.sustained_s >= SUSTAIN_S


def peer_outliers(events: Sequence[tuple[float, dict[int, tuple[float, float | None]]]]
                  ) -> dict[int, PeerFinding]:
    """The peer rule over a run's telemetry: `events` in time order, each (seconds, {GPU index:
    (temperature C, utilization % or None)}). Pure. Every GPU seen gets a finding."""
    streak_from: dict[int, float] = {}
    longest: dict[int, float] = {}
    peak: dict[int, float] = {}
    steady_since: float | None = None
    for t, gpus in events:
        utils = [u for _, u in gpus.values() if u is not None]
        loaded = bool(utils) and _median(utils) >= STEADY_UTIL
        if not loaded:
            steady_since = None
        elif steady_since is None:
            steady_since = t
        steady = loaded and steady_since is not None and t - steady_since >= SETTLE_S
        for i in gpus:
            longest.setdefault(i, 0.0)
        if not steady or len(gpus) < 3:
            streak_from.clear()
            continue
        temps = {i: temp for i, (temp, _) in gpus.items()}
        for i, temp in temps.items():
            delta = temp - _median([v for j, v in temps.items() if j != i])
            peak[i] = max(peak.get(i, delta), delta)
            if delta >= PEER_DELTA_C:
                since = streak_from.setdefault(i, t)
                longest[i] = max(longest[i], t - since)
            else:
                streak_from.pop(i, None)
        for i in list(streak_from):
            if i not in temps:
                del streak_from[i]
    return {i: PeerFinding(i, longest[i], round(peak[i], 1) if i in peak else None)
            for i in sorted(longest)}


def downsample(points: Sequence[Point], limit: int = MAX_POINTS) -> list[Point]:
    """At most `limit` points: consecutive groups averaged (values and times)."""
    if len(points) <= limit:
        return list(points)
    size = math.ceil(len(points) / limit)
    out = []
    for k in range(0, len(points), size):
        group = points[k:k + size]
        out.append(Point(t=_mean([p.t for p in group]) or 0.0,
                         temp_c=_mean([p.temp_c for p in group]) or 0.0,
                         power_w=_mean([p.power_w for p in group]) or 0.0,
                         sm_clock_mhz=_mean([p.sm_clock_mhz for p in group]) or 0.0,
                         mem_clock_mhz=_mean([p.mem_clock_mhz for p in group]),
                         util=_mean([p.util for p in group])))
    return out


def _mean(xs: Iterable[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return sum(vals) / len(vals) if vals else None


def _r(x: float | None, digits: int = 2) -> float | None:
    return None if x is None else round(x, digits)


def point_json(p: Point) -> dict[str, Any]:
    return {"t": round(p.t, 3), "temp_c": _r(p.temp_c), "power_w": _r(p.power_w),
            "sm_clock_mhz": _r(p.sm_clock_mhz), "mem_clock_mhz": _r(p.mem_clock_mhz),
            "util": _r(p.util)}


# --- reading the ledger -------------------------------------------------------------------


def _runs(session: Session, serial: str) -> list[_Run]:
    runs: dict[str, _Run] = {}
    rows = session.execute(
        select(EventRow.type, EventRow.time, EventRow.source, EventRow.value)
        .where(EventRow.subject == serial, EventRow.topic == TELEMETRY,
               EventRow.type.in_(("burnin.run", "burnin.telemetry")))
        .order_by(EventRow.time, EventRow.seq))
    pruned_rows = 0
    for typ, t, source, value in rows:
        at = aware(t)
        if is_pruned(value):
            pruned_rows += 1  # whose run is unknown without the bytes: counted per unit below
            continue
        if typ == "burnin.run":
            data = json.loads(value)["data"]
            run = runs.setdefault(data["run_id"], _Run(data["run_id"], source))
            if data.get("phase") == "start":
                run.start, run.sku = at, data.get("sku")
                run.thresholds = data.get("thresholds")
                run.inventory = {g["gpu_index"]: g["serial"] for g in data.get("inventory", [])}
            else:
                run.end = at
            continue
        try:
            ev = _DECODER.decode(value)
        except (msgspec.DecodeError, msgspec.ValidationError):
            continue  # not a telemetry body this reader knows (never stored by ingest)
        run = runs.setdefault(ev.data.run_id, _Run(ev.data.run_id, source))
        run.events.append((at, ev.data.samples))
    out = sorted(runs.values(), key=lambda r: (r.start or (r.events[0][0] if r.events else
                                                          r.end or datetime.max), r.run))
    if pruned_rows and out:
        # Pruned rows carry no run id; retention prunes whole runs, so they belong to the
        # runs left without samples (else to the last run).
        empty = [r for r in out if not r.events] or out[-1:]
        for r in empty:
            r.pruned = pruned_rows // len(empty)
    return out


def _peer_alerts(session: Session, serial: str) -> dict[tuple[str, int], list[str]]:
    """(run id, GPU index) -> what the peer-comparing anomaly alerts said of it."""
    out: dict[tuple[str, int], list[str]] = {}
    for a in session.scalars(select(Alert).where(Alert.unit == serial,
                                                 Alert.condition.in_(PEER_CONDITIONS))
                             .order_by(Alert.raised, Alert.alert_id)):
        details = a.details or {}
        run, gpu = details.get("run_id"), details.get("gpu_index")
        if isinstance(run, str) and isinstance(gpu, int):
            text = f"alert {a.alert_id} {a.condition}" + (f": {a.message}" if a.message else "")
            out.setdefault((run, gpu), []).append(text)
    return out


def telemetry_series(session: Session, serial: str) -> dict[str, Any]:
    """The unit's burn-in runs as chart series (module docstring). A unit never burned in
    has `runs: []`; the caller checks the unit exists."""
    verdicts = {v.body.run_id: v for v in verdicts_of(session, serial)}
    alerts = _peer_alerts(session, serial)
    docs = []
    for run in _runs(session, serial):
        start = run.start or (run.events[0][0] if run.events else None)
        series: dict[int, list[Point]] = {}
        serials = dict(run.inventory)
        peer_input = []
        for at, samples in run.events:
            t = (at - start).total_seconds() if start is not None else 0.0
            readings: dict[int, tuple[float, float | None]] = {}
            for s in samples:
                series.setdefault(s.gpu_index, []).append(Point(
                    t=t, temp_c=s.temp_c, power_w=s.power_w, sm_clock_mhz=s.sm_clock_mhz,
                    mem_clock_mhz=s.mem_clock_mhz, util=s.util_pct))
                readings[s.gpu_index] = (s.temp_c, s.util_pct)
                if s.gpu_serial and s.gpu_index not in serials:
                    serials[s.gpu_index] = s.gpu_serial
            peer_input.append((t, readings))
        peers = peer_outliers(peer_input)
        verdict = verdicts.get(run.run)
        failed: dict[int, list[str]] = {}
        if verdict is not None:
            for g in verdict.body.gpus:
                if g.result == "Failed":
                    failed[g.gpu_index] = [r.message for r in verdict.body.reasons
                                           if r.gpu_index == g.gpu_index] or [
                        "linetrace's burn-in verdict failed it"]
        gpus = []
        for index in sorted(set(series) | set(serials) | set(failed)):
            why: list[str] = []
            finding = peers.get(index)
            if finding is not None and finding.outlier:
                why.append(f"ran >= {PEER_DELTA_C:g} C above the median of its siblings at "
                           f"steady load for {finding.sustained_s:g} s (peak "
                           f"{finding.peak_delta_c:+g} C)")
            why += [f"verdict: {m}" for m in failed.get(index, [])]
            why += alerts.get((run.run, index), [])
            points = series.get(index, [])
            gpus.append({"index": index, "serial": serials.get(index), "outlier": bool(why),
                         "why": why,
                         "peak_delta_c": finding.peak_delta_c if finding else None,
                         "samples": [point_json(p) for p in downsample(points)]})
        docs.append({
            "run": run.run, "station": run.station, "sku": run.sku, "start": iso(start),
            "end": iso(run.end), "verdict": verdict.body.result if verdict else None,
            "verdict_id": verdict.event.id if verdict else None,
            "thresholds": run.thresholds, "events": len(run.events), "pruned": run.pruned,
            "downsampled": any(len(p) > MAX_POINTS for p in series.values()),
            "gpus": gpus})
    return {"serial": serial, "runs": docs}
