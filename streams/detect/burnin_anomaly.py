"""Burn-in anomaly detectors (DOMAIN.md §4 "Anomalies"): alerts, not verdicts. Pure logic.

One `RunState` per burn-in run (a plain dataclass), folded event by event (`fold`): the run's
`burnin.run` start (thresholds, inventory), its `burnin.telemetry` samples, its end. Each fold
returns the `Condition`s whose state changed (raised, or returned to normal), so the state is a
function of the run's stored events alone: `rebuild` (folding them again) gives the same state
as folding them as they arrived, and a replay raises the same alerts. Event time only.

The rules (thresholds in `Limits`, docs/detection.md says why):

- steady load: the median `util_pct` of the GPUs reporting is >= 90 and has been for
  `settle_s` (60 s, three thermal time constants of a cold plate: a load step is then 95 %
  settled). The peer, rise and drift rules only judge samples at steady load; a condition they
  raised keeps its state while the load is not steady (idling does not cure a cooling fault);
- peer deviation (`burnin.peer_deviation`): temperature - median of its siblings >= 8 C, or
  robust z-score 0.6745 (x - median) / MAD > 3.5, held for 60 s. The MAD is floored at
  `mad_floor_c` (1.5 C): temperatures are whole degrees and a healthy board's GPUs spread a
  few degrees by position, so a smaller MAD (0 when the siblings read the same degree) is
  resolution, not evidence. Cleared once the deviation is below 8 - 1 C and z <= 3.5;
- power or SM clock > 10 % and > 1 sigma (population s.d. of the siblings) off the median of
  its siblings for 10 s (`burnin.power_clock_deviation`, low); cleared below 8 %;
- thermal headroom: within 5 C of the run's slowdown threshold (`burnin.run` thresholds; the
  sample's `temp_margin_c` where the run gave none); cleared above 6 C, at any load;
- rate of rise: > 5 C over 10 s at constant load (steady, and the GPU's power within 10 %
  over the window); cleared at <= 4 C;
- single-bit ECC: any new `ecc_sbe_vol` over the run's first reading (low; active for the rest
  of the run);
- telemetry gap: consecutive events of the run more than 5 s apart on event time (raised at
  last + 5 s, cleared by the next event); the stage's tick raises it live from the line clock.
  Its parent is the station's `flow.station_down` alert: a rack that is down does not also
  raise one gap per unit in it (the engine suppresses it while the station is down);
- GPU missing: a GPU of the run's inventory (or one seen before) absent from the samples for
  more than 5 s while its siblings report (high; active until the run ends);
- drift: the GPU's peer residual (temperature - sibling median) at steady load, against its
  own baseline (mean of its first `drift_base_n` steady residuals; sigma from their moving
  range / 1.128, floored at `drift_sigma_floor_c`): EWMA (lambda 0.2, limits L = 3 sigma
  asymptotic) and two-sided CUSUM (k 0.5 sigma, h 5 sigma, capped at 2h so it returns to
  normal soon after the GPU does). The baselines restart when the set of GPUs reporting
  changes (a GPU falling off the bus shifts every sibling median).

The run's end clears every condition of the run.
"""

from __future__ import annotations

import math
from typing import Any

from linetrace.ledger.alerts.conditions import Condition
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import Event, parse_time

from .burnin_state import (
    D2, DRIFT, GAP, HEADROOM, LIMITS, MAD_SCALE, MISSING, PEER, POWER_CLOCK, RISE, SBE, TYPES,
    GpuTrack, Limits, RunState, median, new_state, ranks, run_id_of, sd_without, sib_median,
    when,
)
from .flow import station_down_id

__all__ = ["DRIFT", "GAP", "HEADROOM", "LIMITS", "MISSING", "PEER", "POWER_CLOCK", "RISE", "SBE",
           "TYPES", "GpuTrack", "Limits", "RunState", "fold", "new_state", "rebuild",
           "run_id_of"]

class _Folder:
    """Folds one event into a state, collecting the conditions that changed."""

    def __init__(self, state: RunState, event: Event, t: float, limits: Limits) -> None:
        self.s, self.ev, self.t, self.lim = state, event, t, limits
        self.out: list[Condition] = []

    def change(self, condition: str, subject: str, active: bool, *, time: float | None = None,
            cause: str | None = None, message: str = "", gpu: int | None = None,
            parent: str | None = None, **details: Any) -> None:
        key = f"{subject}\x00{condition}"
        if (key in self.s.active) == active:
            return
        if active:
            self.s.active[key] = condition
        else:
            del self.s.active[key]
        track = self.s.gpus.get(gpu) if gpu is not None else None
        if track is not None:
            (track.on.add if active else track.on.discard)(condition)
            details["gpu_serial"] = track.serial
            details["gpu_index"] = gpu
        details["run_id"] = self.s.run_id
        self.out.append(Condition(
            condition=condition, subject=subject, active=active,
            time=when(self.t if time is None else time), cause=cause or self.ev.id,
            message=message if active else "", details=details, unit=self.s.serial,
            station=self.s.station or None, parent=parent))

    def subject(self, gpu: int) -> str:
        sub = self.s.subjects.get(gpu)
        if sub is None:
            sub = self.s.subjects[gpu] = f"{self.s.serial}/gpu{gpu}"
        return sub

    def gap(self) -> None:
        s, lim = self.s, self.lim
        if s.last_time is not None and self.t - s.last_time > lim.gap_s:
            self.change(GAP, s.serial, True, time=s.last_time + lim.gap_s, cause=s.last_event,
                        parent=station_down_id(s.station) if s.station else None,
                        message=f"no burn-in telemetry from {s.serial} for more than "
                                f"{lim.gap_s:g} s", last=when(s.last_time).isoformat())
        if f"{s.serial}\x00{GAP}" in s.active:
            self.change(GAP, s.serial, False)

    def start(self, body: b.BurninRun) -> None:
        s = self.s
        s.started = self.t
        if body.thresholds is not None:
            s.slowdown_c = body.thresholds.slowdown_c
        s.expected = {g.gpu_index: g.serial for g in body.inventory}

    def end(self) -> None:
        for key, condition in sorted(self.s.active.items()):
            subject = key.split("\x00", 1)[0]
            gpu = subject.rsplit("/gpu", 1)[1] if "/gpu" in subject else None
            self.change(condition, subject, False,
                        gpu=int(gpu) if gpu is not None and gpu.isdigit() else None)
        self.s.ended = True

    def telemetry(self, samples: list[b.GpuSample]) -> None:
        s, lim, t = self.s, self.lim, self.t
        if not samples:
            return
        if len(samples) != s.reporting:
            s.reporting = len(samples)
            for track in s.gpus.values():
                track.reset_drift()
        utils = [x.util_pct for x in samples]
        if median(utils) >= lim.loaded_util_pct:
            if s.steady_since is None:
                s.steady_since = t
        else:
            s.steady_since = None
        steady = s.steady_since is not None and t - s.steady_since >= lim.settle_s
        present: set[int] = set()
        for x in samples:
            i = x.gpu_index
            present.add(i)
            g = s.gpus.get(i)
            if g is None:
                g = s.gpus[i] = GpuTrack(serial=x.gpu_serial, last_seen=t, sbe_base=x.ecc_sbe_vol)
            g.last_seen = t
            self.ecc(i, g, x.ecc_sbe_vol)
            self.headroom(i, g, x)
            if not steady:
                g.window.clear()
            else:
                self.rise(i, g, x)
        self.missing(present)
        if steady and len(samples) > lim.min_siblings:
            self.peers(samples)

    def ecc(self, i: int, g: GpuTrack, sbe: int) -> None:
        if g.sbe_base < 0:  # first sample of a GPU first known as missing
            g.sbe_base = sbe
        if sbe < g.sbe_base + g.sbe_new:  # the volatile counter was reset: rebase
            g.sbe_base = sbe - g.sbe_new
        new = sbe - g.sbe_base
        if new > g.sbe_new:
            g.sbe_new = new
        if g.sbe_new > 0 and SBE not in g.on:
            self.change(SBE, self.subject(i), True, gpu=i, new_sbe=g.sbe_new,
                        message=f"GPU {i} of {self.s.serial} reported {g.sbe_new} new single-bit "
                                "ECC error(s) in this burn-in")

    def headroom(self, i: int, g: GpuTrack, x: b.GpuSample) -> None:
        slowdown = self.s.slowdown_c
        margin = slowdown - x.temp_c if slowdown is not None else x.temp_margin_c
        if margin is None:
            return
        if margin <= self.lim.headroom_c:
            if HEADROOM in g.on:
                return
            self.change(HEADROOM, self.subject(i), True, gpu=i, temp_c=x.temp_c, margin_c=margin,
                        message=f"GPU {i} of {self.s.serial} at {x.temp_c:g} C, {margin:g} C "
                                "from its slowdown threshold")
        elif margin > self.lim.headroom_c + self.lim.deadband_c and HEADROOM in g.on:
            self.change(HEADROOM, self.subject(i), False, gpu=i, temp_c=x.temp_c, margin_c=margin)

    def rise(self, i: int, g: GpuTrack, x: b.GpuSample) -> None:
        lim, t, w = self.lim, self.t, g.window
        w.append((t, x.temp_c, x.power_w))
        while w[0][0] < t - lim.rise_window_s:
            w.popleft()
        t0, temp0, power0 = w[0]
        if t - t0 < lim.rise_window_s - 0.5:
            return  # less than a full window of steady samples yet
        if power0 > 0 and abs(x.power_w - power0) > lim.rise_power_rel * power0:
            return  # the load changed: not constant load
        rise = x.temp_c - temp0
        if rise > lim.rise_c:
            if RISE in g.on:
                return
            self.change(RISE, self.subject(i), True, gpu=i, rise_c=rise, window_s=t - t0,
                        message=f"GPU {i} of {self.s.serial} rose {rise:g} C in {t - t0:g} s "
                                "at constant load")
        elif rise <= lim.rise_c - lim.deadband_c and RISE in g.on:
            self.change(RISE, self.subject(i), False, gpu=i, rise_c=rise)

    def missing(self, present: set[int]) -> None:
        s, lim = self.s, self.lim
        known = set(s.expected) | set(s.gpus)
        for i in sorted(known - present):
            g = s.gpus.get(i)
            last = g.last_seen if g is not None else s.started
            if last is None or self.t - last <= lim.gap_s or (g is not None and MISSING in g.on):
                continue
            if g is None:
                g = s.gpus[i] = GpuTrack(serial=s.expected[i], last_seen=last, sbe_base=-1)
            self.change(MISSING, self.subject(i), True, gpu=i,
                        last_seen=when(last).isoformat(),
                        message=f"GPU {i} ({g.serial}) of {s.serial} is missing from the burn-in "
                                f"telemetry since {when(last).isoformat()} while its siblings "
                                "report")

    def peers(self, samples: list[b.GpuSample]) -> None:
        temps = [x.temp_c for x in samples]
        powers = [x.power_w for x in samples]
        clocks = [x.sm_clock_mhz for x in samples]
        st, rt = ranks(temps)
        sp, rp = ranks(powers)
        sc, rc = ranks(clocks)
        for j, x in enumerate(samples):
            i = x.gpu_index
            g = self.s.gpus[i]
            med = sib_median(st, rt[j])
            dev = x.temp_c - med
            self.hot(i, g, temps, j, med, dev)
            self.power_clock(i, g, j, powers, sib_median(sp, rp[j]), clocks,
                             sib_median(sc, rc[j]))
            self.drift(i, g, dev)

    def hot(self, i: int, g: GpuTrack, temps: list[float], j: int, med: float,
            dev: float) -> None:
        lim, t = self.lim, self.t
        active = PEER in g.on
        need = lim.peer_dev_c - (lim.deadband_c if active else 0.0)
        z = 0.0
        if dev > lim.peer_z * lim.mad_floor_c / MAD_SCALE or dev >= need:
            mad = median([abs(v - med) for k, v in enumerate(temps) if k != j])
            z = MAD_SCALE * dev / max(mad, lim.mad_floor_c)
        if dev >= need or z > lim.peer_z:
            if g.hot_since is None:
                g.hot_since = t
            if t - g.hot_since >= lim.peer_hold_s and not active:
                self.change(PEER, self.subject(i), True, gpu=i, deviation_c=dev,
                            robust_z=round(z, 2),
                            sibling_median_c=med, since=when(g.hot_since).isoformat(),
                            message=f"GPU {i} of {self.s.serial} runs {dev:g} C above the median "
                                    f"of its siblings ({med:g} C) at steady load for "
                                    f"{t - g.hot_since:g} s")
        else:
            g.hot_since = None
            if active:
                self.change(PEER, self.subject(i), False, gpu=i, deviation_c=dev)

    def power_clock(self, i: int, g: GpuTrack, j: int, powers: list[float], pmed: float,
                    clocks: list[float], cmed: float) -> None:
        lim, t = self.lim, self.t
        p_rel = abs(powers[j] - pmed) / pmed if pmed > 0 else 0.0
        c_rel = abs(clocks[j] - cmed) / cmed if cmed > 0 else 0.0
        off = ""
        if p_rel > lim.pc_rel and abs(powers[j] - pmed) > sd_without(powers, j):
            off = "power"
        elif c_rel > lim.pc_rel and abs(clocks[j] - cmed) > sd_without(clocks, j):
            off = "SM clock"
        if off:
            if g.pc_since is None:
                g.pc_since = t
            if t - g.pc_since >= lim.pc_hold_s and POWER_CLOCK not in g.on:
                self.change(POWER_CLOCK, self.subject(i), True, gpu=i, power_w=powers[j],
                            sibling_power_w=pmed, sm_clock_mhz=clocks[j], sibling_sm_clock_mhz=cmed,
                            message=f"GPU {i} of {self.s.serial}: {off} off its siblings' median "
                                    f"(power {powers[j]:g} W vs {pmed:g} W, SM clock "
                                    f"{clocks[j]:g} MHz vs {cmed:g} MHz)")
            return
        g.pc_since = None
        if p_rel < lim.pc_clear_rel and c_rel < lim.pc_clear_rel and POWER_CLOCK in g.on:
            self.change(POWER_CLOCK, self.subject(i), False, gpu=i, power_w=powers[j],
                        sm_clock_mhz=clocks[j])

    def drift(self, i: int, g: GpuTrack, x: float) -> None:
        lim = self.lim
        if g.base_n < lim.drift_base_n:
            if g.last_resid is not None:
                g.mr_sum += abs(x - g.last_resid)
            g.last_resid = x
            g.base_n += 1
            g.base_sum += x
            if g.base_n == lim.drift_base_n:
                g.mu = g.base_sum / g.base_n
                mr = g.mr_sum / (g.base_n - 1) if g.base_n > 1 else 0.0
                g.sigma = max(mr / D2, lim.drift_sigma_floor_c)
                g.ewma = g.mu
            return
        sigma, mu, k, h = g.sigma, g.mu, lim.drift_k, lim.drift_h
        lam = lim.drift_lambda
        g.ewma = lam * x + (1 - lam) * g.ewma
        zx = (x - mu) / sigma
        g.cusum_hi = min(max(0.0, g.cusum_hi + zx - k), 2 * h)
        g.cusum_lo = min(max(0.0, g.cusum_lo - zx - k), 2 * h)
        limit = lim.drift_l * sigma * math.sqrt(lam / (2 - lam))
        ewma_out = abs(g.ewma - mu) > limit
        out = ewma_out or g.cusum_hi > h or g.cusum_lo > h
        if out:
            if DRIFT in g.on:
                return
            self.change(DRIFT, self.subject(i), True, gpu=i, residual_c=round(x, 2),
                        baseline_c=round(mu, 2),
                        sigma_c=round(sigma, 2), ewma_c=round(g.ewma, 2),
                        cusum_hi=round(g.cusum_hi, 2), cusum_lo=round(g.cusum_lo, 2),
                        message=f"GPU {i} of {self.s.serial} drifts from its siblings: "
                                f"{x - mu:+.1f} C from its baseline offset {mu:+.1f} C "
                                f"({'EWMA' if ewma_out else 'CUSUM'})")
        elif g.cusum_hi <= h and g.cusum_lo <= h and DRIFT in g.on:
            self.change(DRIFT, self.subject(i), False, gpu=i, residual_c=round(x, 2))


def fold(state: RunState, event: Event, limits: Limits = LIMITS) -> list[Condition]:
    """Fold one event of the run into `state` (in place); the conditions that changed. An
    event at or before the last one folded (by stationseq) is ignored: folding is idempotent."""
    seq = event.seq if event.seq is not None else state.last_seq + 1
    if seq <= state.last_seq or state.ended:
        return []
    t = parse_time(event.envelope.time).timestamp()
    f = _Folder(state, event, t, limits)
    body = event.body
    if isinstance(body, b.BurninRun):
        if body.phase == "start":
            f.start(body)
        else:
            f.gap()
            f.end()
    elif isinstance(body, b.BurninTelemetry):
        if state.started is None:
            state.started = t  # the start event was never seen: count from the first sample
        f.gap()
        f.telemetry(body.samples)
    state.station = state.station or event.source
    state.last_time, state.last_event, state.last_seq = t, event.id, seq
    return f.out


def rebuild(events: list[Event], limits: Limits = LIMITS) -> RunState | None:
    """The state of a run folded from its stored events (in stationseq order)."""
    state: RunState | None = None
    for ev in events:
        if ev.type not in TYPES:
            continue
        if state is None:
            state = new_state(ev)
        fold(state, ev, limits)
    return state
