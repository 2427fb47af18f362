"""The telemetry series' pure parts (ledger/telemetry_series.py): the peer rule that marks the
GPU off its siblings, and the downsampling to at most 600 points a GPU."""

from __future__ import annotations

from linetrace.ledger.telemetry_series import (
    MAX_POINTS, Point, downsample, peer_outliers,
)

Events = list[tuple[float, dict[int, tuple[float, float | None]]]]


def run(seconds: int, hot: dict[int, float], *, util: float = 100.0, start_hot: float = 0.0,
        gpus: int = 8) -> Events:
    """`seconds` 1 Hz events of `gpus` GPUs at 60-63 C (by position), the `hot` ones that
    many C warmer from `start_hot` s on."""
    return [(float(t), {i: (60.0 + i % 4 + (hot.get(i, 0.0) if t >= start_hot else 0.0), util)
                        for i in range(gpus)}) for t in range(seconds)]


def test_a_gpu_ten_degrees_above_its_siblings_at_steady_load_is_an_outlier() -> None:
    found = peer_outliers(run(200, {5: 10.0}))
    assert sorted(found) == list(range(8))
    assert [i for i, f in found.items() if f.outlier] == [5]
    assert found[5].sustained_s >= 130 and found[5].peak_delta_c is not None
    assert found[5].peak_delta_c >= 8


def test_a_warm_gpu_and_a_short_hot_spell_are_not() -> None:
    assert not any(f.outlier for f in peer_outliers(run(300, {2: 6.0})).values())
    # 10 C hot for the last 20 s only: shorter than the 30 s the rule asks for.
    assert not any(f.outlier for f in peer_outliers(run(200, {2: 10.0}, start_hot=180))
                   .values())


def test_only_steady_load_counts() -> None:
    # Idle GPUs (util 5 %) 12 C apart are not judged; nor is the first minute of load.
    assert not any(f.outlier for f in peer_outliers(run(300, {1: 12.0}, util=5.0)).values())
    assert not any(f.outlier for f in peer_outliers(run(85, {1: 12.0})).values())
    assert peer_outliers(run(95, {1: 12.0}))[1].outlier  # settled at 60 s, hot 35 s after


def test_two_gpus_have_no_peers_to_be_judged_against() -> None:
    assert not any(f.outlier for f in peer_outliers(run(300, {0: 20.0}, gpus=2)).values())


def test_downsample_keeps_short_series_and_averages_long_ones() -> None:
    short = [Point(float(t), 60.0, 700.0, 1900.0, None, 99.0) for t in range(MAX_POINTS)]
    assert downsample(short) == short
    long = [Point(float(t), 60.0 + t % 2, 700.0, 1900.0, 2600.0, None) for t in range(1500)]
    out = downsample(long)
    assert len(out) <= MAX_POINTS and len(out) == 500  # groups of 3
    assert out[0].t == 1.0 and out[0].temp_c == (60 + 61 + 60) / 3
    assert out[-1].t == 1498.0 and out[0].mem_clock_mhz == 2600.0 and out[0].util is None
    assert [p.t for p in out] == sorted(p.t for p in out)
