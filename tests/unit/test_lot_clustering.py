"""Lot clustering (streams/detect/lots.py) on plain data: the binomial test, near misses, the
window, the attribution of failures to the lot of the GPU that failed."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from math import comb

import pytest

from linetrace.ledger.alerts.conditions import CATALOGUE
from linetrace.ledger.plant_data import LotPolicy, lot_policy
from linetrace.stations.simulator.products import PRODUCTS
from linetrace.streams.detect import lots

T0 = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)
POLICY = LotPolicy(baseline=0.0125, window=20, min_failures=3, alpha=5e-4)


def outcomes(results: list[bool], lot: str = "LOT-GPU-1") -> list[lots.GpuOutcome]:
    """GPUs tested in order (one verdict each), failed where True."""
    return [lots.GpuOutcome(f"{lot}-GPU-{i:03d}", f"SRV-{i // 8}", failed,
                            T0 + timedelta(minutes=i), f"v{i}")
            for i, failed in enumerate(results)]


def test_the_binomial_tail_is_exact() -> None:
    assert lots.binomial_tail(0, 5, 0.1) == 1.0
    assert lots.binomial_tail(6, 5, 0.1) == 0.0
    assert lots.binomial_tail(3, 20, 0.01) == pytest.approx(
        1 - sum(comb(20, i) * 0.01 ** i * 0.99 ** (20 - i) for i in range(3)))
    assert lots.binomial_tail(5, 5, 0.5) == pytest.approx(1 / 32)


def test_the_shipped_policy_is_the_documented_one() -> None:
    assert lot_policy() == POLICY
    assert CATALOGUE[lots.FAILURE_CLUSTER].priority == "high"
    assert CATALOGUE[lots.FAILURE_CLUSTER].latched


def test_half_the_gpus_of_a_lot_failing_is_a_cluster() -> None:
    found = lots.judge("LOT-GPU-1", outcomes([True, False] * 4), POLICY)
    assert found.fires and (found.failed, found.tested) == (4, 8)
    assert found.p_value < POLICY.alpha and len(found.failed_gpus) == 4


@pytest.mark.parametrize("failures", [1, 2])
def test_one_or_two_failures_never_fire_however_few_gpus_were_tested(failures: int) -> None:
    for n in range(failures, 21):
        results = [True] * failures + [False] * (n - failures)
        assert not lots.judge("LOT-GPU-1", outcomes(results), POLICY).fires


def test_three_failures_fire_early_in_a_lot_but_not_spread_over_twenty() -> None:
    early = [True, False, False, True, False, False, True, False]
    assert lots.judge("L", outcomes(early), POLICY).fires  # 3 of 8: P ~ 1e-4
    spread = [i in (0, 9, 19) for i in range(20)]
    found = lots.judge("L", outcomes(spread), POLICY)  # 3 of 20: P ~ 2e-3
    assert not found.fires and found.p_value > POLICY.alpha


def test_only_the_lots_last_window_of_gpus_counts() -> None:
    old_failures = [True] * 4 + [False] * 20
    found = lots.judge("L", outcomes(old_failures), POLICY)
    assert (found.tested, found.failed) == (20, 0) and not found.fires


def test_a_gpu_fails_once_whatever_its_verdicts_and_other_lots_gpus_do_not_count() -> None:
    verdicts = [
        ("v1", "SRV-1", T0, {"G1": True, "G2": False, "X9": True}),
        ("v2", "SRV-1", T0 + timedelta(hours=2), {"G1": False, "G2": False}),  # after repair
    ]
    found = lots.gpu_outcomes(verdicts, {"G1", "G2"})
    by = {o.serial: o for o in found}
    assert set(by) == {"G1", "G2"}
    assert by["G1"].failed and not by["G2"].failed
    assert by["G1"].last == T0 + timedelta(hours=2) and by["G1"].unit == "SRV-1"


def test_good_lots_at_the_simulators_natural_rate_almost_never_fire_and_bad_lots_do() -> None:
    """The simulated line: ~10 % of units fail burn-in on one of 8 GPUs (1.25 % per GPU); a
    bad lot fails each GPU with 30-60 % (`bad-lot@p`). Lots of 16 GPUs, judged after each."""
    rng = random.Random(12)

    def fires(p: float) -> bool:
        results: list[bool] = []
        for _ in range(16):
            results.append(rng.random() < p)
            if lots.judge("L", outcomes(results), POLICY).fires:
                return True
        return False

    good = sum(fires(0.0125) for _ in range(4000))
    assert good <= 8  # <= 0.2 % of good lots (expected ~0.05 %)
    for p in (0.45, 0.6):
        assert sum(fires(p) for _ in range(400)) >= 0.95 * 400
    assert sum(fires(0.3) for _ in range(400)) >= 0.75 * 400


def test_the_simulators_gpu_lots_are_what_the_window_assumes() -> None:
    """A GPU lot of the simulated plant spans about two servers (16 GPUs): the window of 20
    GPUs covers a whole lot."""
    gpu = PRODUCTS["A"].part("gpu")
    assert gpu.lot_size <= POLICY.window


def test_the_condition_names_the_lot_the_figures_and_the_hold() -> None:
    found = lots.judge("LOT-GPU-1", outcomes([True] * 4 + [False] * 4), POLICY)
    c = lots.cluster_condition(found, POLICY, "699-21010-0210-000", "v7", T0, "HOLD-X",
                               ["SRV-0"])
    assert c.subject == "LOT-GPU-1" and c.lot == "LOT-GPU-1" and c.active
    assert c.details["failed"] == 4 and c.details["tested"] == 8
    assert c.details["hold_id"] == "HOLD-X" and "HOLD-X" in c.message
