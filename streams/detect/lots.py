"""Lot clustering (DOMAIN.md §5; issue 12), pure: is one component lot failing burn-in far
above the plant's baseline?

The unit of evidence is one GPU of the lot with a burn-in verdict (`burnin.verdict`'s per-GPU
`result`): tested, and failed if any verdict failed that GPU. Counting GPUs rather than units
attributes each failure to the lot of the GPU that failed: a server failing burn-in because
of a GPU of lot Y says nothing against lot X beside it, and a server's unit-level failure
(no GPU named) counts against no lot.

The test, over the lot's last `window` tested GPUs (by the time of their latest verdict), with
`k` failed among those `n`:

    k >= min_failures   AND   P(X >= k | X ~ Binomial(n, p0)) < alpha

with `p0` the plant's baseline per-GPU failure rate on known-good lots (plant data,
`ledger/data/lot_clustering.json`). The floor keeps one or two failures (a near miss) from
ever firing, whatever `n`; the tail probability says how unlikely `k` is for a lot as good as
the baseline, so 3 failures in the first 8 GPUs fire while 3 spread over 20 do not. With the
shipped policy (p0 = 1.25 %, window 20, floor 3, alpha 5e-4): 3 failures fire for n <= 13,
4 for n <= 20; a good lot of 16 GPUs fires with probability about 5e-4.

A lot found clustering raises `lot.failure_cluster` (subject: the lot; latched) and is held:
linetrace places a lot hold (`hold.placed`, scope lot, category quality, code
`lot.failure_cluster`), cascading to every unit that contains the lot and has not shipped.
Once held the lot is not judged again: while the hold is in force quality is looking at it,
and once quality ended it (released with two signatures, after review) the lot is theirs;
holding it again on the failures they reviewed, or on each further failure of a lot they chose
to use, would be a nuisance alarm. Failing units are still routed to repair by their verdicts.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from math import comb

from linetrace.ledger.alerts.conditions import Condition
from linetrace.ledger.plant_data import LotPolicy

FAILURE_CLUSTER = "lot.failure_cluster"
HOLD_CODE = "lot.failure_cluster"


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p), exactly (n is small: a window of GPUs)."""
    if k <= 0:
        return 1.0
    if k > n:
        return 0.0
    return min(1.0, sum(comb(n, i) * p ** i * (1 - p) ** (n - i) for i in range(k, n + 1)))


@dataclass(frozen=True)
class GpuOutcome:
    """One GPU of the lot with a burn-in verdict: failed in any, and its latest verdict."""

    serial: str
    unit: str
    failed: bool
    last: datetime  # time of its latest verdict
    verdict: str  # id of that verdict event


@dataclass(frozen=True)
class Cluster:
    """The test's figures for one lot."""

    lot: str
    tested: int  # n: GPUs in the window
    failed: int  # k
    p_value: float
    fires: bool
    failed_gpus: tuple[str, ...]
    units: tuple[str, ...]  # the units the failed GPUs were tested in


def gpu_outcomes(verdicts: Iterable[tuple[str, str, datetime, Mapping[str, bool]]],
                 lot_serials: set[str]) -> list[GpuOutcome]:
    """Per GPU of the lot, from verdicts given as (verdict id, unit, time, {gpu serial:
    failed}): failed in any verdict, latest verdict."""
    by: dict[str, GpuOutcome] = {}
    for vid, unit, t, gpus in sorted(verdicts, key=lambda v: (v[2], v[0])):
        for serial, failed in gpus.items():
            if serial not in lot_serials:
                continue
            prev = by.get(serial)
            by[serial] = GpuOutcome(serial, unit if failed or prev is None or not prev.failed
                                    else prev.unit,
                                    failed or (prev is not None and prev.failed), t, vid)
    return list(by.values())


def judge(lot: str, outcomes: Sequence[GpuOutcome], policy: LotPolicy) -> Cluster:
    """The test (module docstring) over the lot's last `policy.window` tested GPUs."""
    recent = sorted(outcomes, key=lambda o: (o.last, o.serial))[-policy.window:]
    n = len(recent)
    failed = [o for o in recent if o.failed]
    k = len(failed)
    p = binomial_tail(k, n, policy.baseline)
    return Cluster(lot=lot, tested=n, failed=k, p_value=p,
                   fires=k >= policy.min_failures and p < policy.alpha,
                   failed_gpus=tuple(sorted(o.serial for o in failed)),
                   units=tuple(sorted({o.unit for o in failed})))


def cluster_condition(c: Cluster, policy: LotPolicy, mpn: str | None, cause: str,
                      time: datetime, hold_id: str, held: Sequence[str]) -> Condition:
    """The active `lot.failure_cluster` finding for a lot that fires."""
    what = f"lot {c.lot}" + (f" ({mpn})" if mpn else "")
    return Condition(
        condition=FAILURE_CLUSTER, subject=c.lot, active=True, time=time, cause=cause,
        message=f"{c.failed} of the last {c.tested} GPUs from {what} failed burn-in "
                f"(baseline {policy.baseline:.2%}: P = {c.p_value:.1e}); the lot is held "
                f"({hold_id}, {len(held)} unit(s))",
        details={"lot": c.lot, "mpn": mpn, "failed": c.failed, "tested": c.tested,
                 "p_value": c.p_value, "baseline": policy.baseline, "alpha": policy.alpha,
                 "window": policy.window, "failed_gpus": list(c.failed_gpus),
                 "units": list(c.units), "hold_id": hold_id, "held_units": list(held)},
        lot=c.lot)
