"""SPC charts (streams/detect/spc.py): rules, frozen limits, the alarm, and the simulator."""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import replace

import pytest

from linetrace.stations.simulator.faults import parse_faults
from linetrace.stations.simulator.line import LineConfig, generate_line
from linetrace.streams.detect.spc_rates import (
    Result, binomial_tail, first_passes, fpy_findings, p_chart_findings,
)
from linetrace.streams.detect.spc import (
    Limits, Point, SpcConfig, SpcConfigError, baseline_limits, load_config, run_chart,
    signals, slope_t, transitions,
)

UNIT = Limits(centre=0.0, sigma=1.0, baseline=25, mr_bar=1.128)


def pts(values: list[float]) -> list[Point]:
    return [Point((f"2026-01-01T00:00:{i:02d}.000000+00:00", f"ev{i:04d}", i), v, f"U{i}",
                  "ict-01", f"ev{i:04d}") for i, v in enumerate(values)]


# --- the rules, one by one ------------------------------------------------------------------


@pytest.mark.parametrize("z, rule", [
    ([0.1, -0.2, 3.2], "we1"),
    ([0.1, -3.4], "we1"),
    ([0.3, 2.1, -0.4, 2.2], "we2"),
    ([0.3, 1.2, 1.5, 0.2, 1.1, 1.3], "we3"),
    ([0.2, 0.5, 0.1, 0.9, 0.3, 0.4, 0.2, 0.6], "we4"),
    ([-1.0, -0.6, -0.2, 0.1, 0.4, 0.9], "trend"),
    ([1.0, 0.6, 0.2, -0.1, -0.4, -0.9], "trend"),
    ([(-1) ** i * 0.5 for i in range(14)], "alternation"),
])
def test_each_rule_fires_on_its_pattern(z: list[float], rule: str) -> None:
    assert rule in signals(z)


@pytest.mark.parametrize("z, rule", [
    ([0.1, -0.2, 2.9], "we1"),
    ([2.1, -0.4, 0.3, 2.2], "we2"),  # 2 beyond, but not within 3
    ([-2.1, 0.5, 2.3], "we2"),  # beyond 2, but not on the same side
    ([1.2, 1.5, -0.2, 0.2, 1.1, 1.3], "we3"),  # only 3 of the last 5 beyond 1
    ([0.2, 0.5, 0.1, -0.1, 0.3, 0.4, 0.2, 0.6], "we4"),
    ([-1.0, -0.6, -0.2, 0.1, 0.4], "trend"),  # 5 points: too short
    ([-1.0, -0.6, -0.6, 0.1, 0.4, 0.9], "trend"),  # a tie breaks it
    ([(-1) ** i * 0.5 for i in range(13)], "alternation"),  # 13: too short
])
def test_each_rule_stays_quiet_off_its_pattern(z: list[float], rule: str) -> None:
    assert rule not in signals(z)


# --- limits ---------------------------------------------------------------------------------


def test_limits_are_the_baseline_mean_and_mr_bar_over_d2() -> None:
    lim = baseline_limits([10.0, 12.0, 11.0, 13.0])
    assert lim.centre == pytest.approx(11.5)
    assert lim.mr_bar == pytest.approx((2 + 1 + 2) / 3)
    assert lim.sigma == pytest.approx(lim.mr_bar / 1.128)
    assert lim.ucl == pytest.approx(11.5 + 3 * lim.sigma)


def test_limits_stay_frozen_whatever_the_points_they_judge() -> None:
    rng = random.Random(1)
    lim = baseline_limits([rng.gauss(0, 1) for _ in range(25)])
    run = run_chart(lim, pts([5.0 + 0.1 * i for i in range(40)]))
    assert run.limits is lim and run.state  # judged against the baseline, not the new data


def test_a_constant_baseline_gives_a_constant_chart() -> None:
    assert baseline_limits([8.0] * 25).constant


# --- the alarm ------------------------------------------------------------------------------


def test_isolated_failures_beyond_the_limits_do_not_alarm() -> None:
    values = [0.1, -0.3, 7.0, 0.2, 0.4, -6.5, 0.0, 0.3, 8.0, -0.2, 0.1]
    run = run_chart(UNIT, pts(values))
    assert any("we1" in j.signals for j in run.judged)
    assert not transitions(run, 0)


def test_five_points_in_a_row_beyond_the_same_limit_alarm() -> None:
    run = run_chart(UNIT, pts([0.1, -0.2, 3.5, 3.8, 4.4, 3.2, 5.1]))
    tr = transitions(run, 0)
    assert [t.active for t in tr] == [True]
    assert tr[0].at.alarm == ("we1",) and tr[0].at.point.unit == "U6"
    assert [j.point.unit for j in tr[0].involved] == ["U2", "U3", "U4", "U5", "U6"]


def test_four_in_a_row_or_alternating_sides_do_not_alarm() -> None:
    assert not transitions(run_chart(UNIT, pts([3.5, 3.8, 4.4, 3.1, 0.1, 3.2, -3.5, 3.3])), 0)


def _rising(start: float, steps: list[float]) -> list[float]:
    out = [start]
    for d in steps:
        out.append(out[-1] + d)
    return out


def test_a_ten_point_trend_alarms_and_a_nine_point_one_does_not() -> None:
    # steadily rising but scattered (no significant line: the `slope` rule stays quiet)
    nine = _rising(-2.0, [0.05, 0.9, 0.1, 0.7, 0.02, 0.8, 0.1, 0.6])
    assert not transitions(run_chart(UNIT, pts([0.5, *nine, -0.5])), 0)
    tr = transitions(run_chart(UNIT, pts([0.5, *nine, nine[-1] + 0.05])), 0)
    assert tr and tr[0].active and tr[0].at.alarm == ("trend",)
    assert len(tr[0].involved) == 10


def test_an_eight_point_linear_drift_inside_the_limits_alarms() -> None:
    rng = random.Random(5)
    drift = [0.12 * k + rng.gauss(0, 0.02) for k in range(8)]  # 0.84 sigma in all
    before = [rng.gauss(0, 1) for _ in range(30)]
    tr = transitions(run_chart(UNIT, pts([*before, *drift])), 0)
    assert tr and tr[0].active and tr[0].at.alarm == ("slope",)
    assert tr[0].at.point.unit == "U37"  # the drift's 8th board
    assert [j.point.unit for j in tr[0].involved] == [f"U{i}" for i in range(30, 38)]
    # a nonconforming board (a natural failure far out) inside the drift is left out
    failed = pts([*before, *drift[:4], 7.5, *drift[4:]])
    failed[34] = replace(failed[34], conforming=False)
    tr = transitions(run_chart(UNIT, failed), 0)
    assert tr and tr[0].at.alarm == ("slope",) and tr[0].at.point.unit == "U38"
    assert "U34" not in [j.point.unit for j in tr[0].involved]


def test_seven_drifting_points_a_flat_line_or_random_rising_points_do_not_alarm() -> None:
    assert not transitions(run_chart(UNIT, pts([0.12 * k for k in range(7)])), 0)
    assert not transitions(run_chart(UNIT, pts([0.3] * 20)), 0)
    assert not transitions(run_chart(UNIT, pts([0.01 * k for k in range(9)])), 0)  # < 0.5 sigma
    rng = random.Random(3)  # in control: t > 20 about once in a million points
    z = [rng.gauss(0, 1) for _ in range(20_000)]
    assert max(slope_t(z[i - 8:i])[0] for i in range(8, len(z))) < 20


def test_a_shift_inside_the_limits_signals_but_never_alarms() -> None:
    rng = random.Random(7)
    run = run_chart(UNIT, pts([1.2 + rng.gauss(0, 0.6) for _ in range(200)]))
    assert {"we3", "we4"} <= {r for j in run.judged for r in j.signals}
    assert not transitions(run, 0)


def test_back_in_control_after_ten_calm_points() -> None:
    run = run_chart(UNIT, pts([3.5, 3.8, 4.4, 3.2, 3.3] + [0.1 * (-1) ** i for i in range(9)]))
    assert [t.active for t in transitions(run, 0)] == [True]
    run.add(pts([0.0] * 14)[13])
    tr = transitions(run, 0)
    assert [t.active for t in tr] == [True, False] and len(tr[1].involved) == 10


def test_transitions_only_among_the_new_points() -> None:
    run = run_chart(UNIT, pts([3.5, 3.8, 4.4, 3.2, 3.9, 3.6]))
    assert not transitions(run, 5)  # already out of control before the new point


# --- plant data -----------------------------------------------------------------------------


def test_the_packaged_config_charts_ict_and_holds_nothing() -> None:
    c = load_config()
    assert c.charted("ict") and not c.charted("burnin") and not c.hold
    assert (c.baseline, c.sustain, c.rtn_points) == (25, 5, 10)


def test_config_holds_named_charts_or_a_whole_station_type() -> None:
    c = SpcConfig.from_json('{"hold": ["ict/*", "aoi/X1"]}')
    assert c.holds("ict/TP1") and c.holds("aoi/X1") and not c.holds("aoi/X2")


@pytest.mark.parametrize("text", ['[]', '{"baseline": 3}', '{"hold": ["TP1"]}', "{",
                                  '{"sustain": 0}'])
def test_a_malformed_config_is_refused_with_what_to_fix(text: str) -> None:
    with pytest.raises(SpcConfigError) as e:
        SpcConfig.from_json(text)
    assert e.value.code == "config.invalid"


# --- the simulator: clean runs, natural failures, ict-drift ------------------------------------


def chart_points(units: int, seed: int, faults: str = "none") -> dict[str, list[Point]]:
    plan = generate_line(LineConfig(units=units, seed=seed, product="A",
                                    faults=parse_faults(faults), burnin_seconds=5))
    out: dict[str, list[Point]] = defaultdict(list)
    events = sorted((e for u in plan.units for e in u.events), key=lambda e: (e.time, e.event_id))
    for e in events:
        if e.event_type == "unit.tested" and e.station_id.startswith("ict"):
            for i, m in enumerate(x for t in e.body.tests for x in t.measurements):
                ok = (m.min is None or m.value >= m.min) and (m.max is None or m.value <= m.max)
                out[m.name].append(Point((e.time.isoformat(), e.event_id, i), m.value,
                                         e.subject, e.station_id, e.event_id, ok))
    return out


def alarms(charts: dict[str, list[Point]], baseline: int = 25) -> dict[str, list[str]]:
    """Chart -> the units whose points put it out of control, as the stage judges them."""
    found: dict[str, list[str]] = {}
    for name, ps in charts.items():
        conforming = [i for i, p in enumerate(ps) if p.conforming][:baseline]
        if len(conforming) < baseline:
            continue
        lim = baseline_limits([ps[i].value for i in conforming])
        tr = [t for t in transitions(run_chart(lim, ps[conforming[-1] + 1:]), 0) if t.active]
        if tr:
            found[name] = [t.at.point.unit for t in tr]
    return found


@pytest.mark.parametrize("seed", [11, 12])
def test_a_clean_run_with_its_natural_failures_puts_no_chart_out_of_control(seed: int) -> None:
    charts = chart_points(300, seed)
    assert len(charts) == 6 and all(len(v) > 250 for v in charts.values())
    assert sum(not p.conforming for v in charts.values() for p in v) > 5  # natural failures
    assert alarms(charts) == {}


@pytest.mark.parametrize("spec, units, chart", [
    ("ict-drift:26", 36, "TP1"),  # the default: 8 % of the tolerance per test
    ("ict-drift:26@slope=0.04@noise=0.02", 44, "TP1"),  # the slowest, noisiest the bench varies
    ("ict-drift:26@check=2@slope=-0.08", 36, "TP3"),  # downwards, on another check
    ("ict-drift:26@slope=0.03@noise=0.006@length=8", 44, "TP1"),  # 8 boards, 0.84 sigma
    ("ict-drift:26@check=2@slope=-0.049@length=8", 44, "TP3"),
])
def test_ict_drift_puts_the_drifting_chart_out_of_control_and_no_other(
        spec: str, units: int, chart: str) -> None:
    # (a run ends before the drift fails every board: the unconducted simulator would
    # rebuild a failing PCBA for its server forever)
    found = alarms(chart_points(units, 3, spec))
    assert list(found) == [chart]
    first = int(found[chart][0].rsplit("-", 1)[1])
    assert 26 < first <= 26 + 14  # within a few boards of the drift's start


def test_a_tiny_trend_inside_the_noise_is_a_near_miss() -> None:
    assert alarms(chart_points(120, 4, "ict-wobble:26")) == {}


# --- first-pass yield and the p-chart (streams/detect/spc_rates.py) ---------------------------


def results(fails: list[bool], station: str = "ict-01", first: int = 0) -> list[Result]:
    return [Result(f"U{first + i}", station, f"ev{first + i:05d}", f) for i, f in enumerate(fails)]


def test_binomial_tail() -> None:
    assert binomial_tail(0, 10, 0.3) == 1.0
    assert binomial_tail(10, 10, 0.5) == pytest.approx(0.5 ** 10)
    assert binomial_tail(1, 5, 0.2) == pytest.approx(1 - 0.8 ** 5)


def test_first_pass_yield_alarms_when_a_station_fails_far_above_its_baseline() -> None:
    rng = random.Random(3)
    steady = [rng.random() < 0.07 for _ in range(150)]
    assert fpy_findings(results(steady), {f"ev{i:05d}" for i in range(150)}) == []
    bad = steady + [rng.random() < 0.4 for _ in range(60)]
    found = fpy_findings(results(bad), {f"ev{i:05d}" for i in range(150, 210)})
    assert found and found[0].active and found[0].subject == "ict-01"
    assert found[0].details["first_pass_yield"] < found[0].details["baseline_yield"]


def test_first_pass_yield_counts_only_a_units_first_result() -> None:
    retests = results([True] * 5) + results([False] * 5)  # the same units, retested
    assert len(first_passes(retests)) == 5


def test_p_chart_flags_a_subgroup_above_its_limit_and_clears_on_the_next() -> None:
    rng = random.Random(4)
    base = [rng.random() < 0.05 for _ in range(200)]
    spike = [i < 12 for i in range(25)]
    calm = [False] * 25
    rs = results(base + spike + calm)
    found = p_chart_findings("ict", rs, {r.event_id for r in rs})
    assert [(f.active, f.at.event_id) for f in found] == [(True, "ev00224"), (False, "ev00249")]
    assert found[0].details["defect_rate"] == pytest.approx(12 / 25)


def test_clean_runs_raise_only_rare_rate_findings() -> None:
    plan = generate_line(LineConfig(units=300, seed=21, product="A", burnin_seconds=5))
    by_type: dict[str, list[Result]] = defaultdict(list)
    events = sorted((e for u in plan.units for e in u.events), key=lambda e: (e.time, e.event_id))
    for e in events:
        if e.event_type in ("unit.tested", "unit.inspected"):
            by_type[e.station_id.rsplit("-", 1)[0]].append(
                Result(e.subject, e.station_id, e.event_id, e.body.result == "Failed"))
    found = [f for st, rs in by_type.items()
             for f in (*fpy_findings(rs, {r.event_id for r in rs}),
                       *p_chart_findings(st, rs, {r.event_id for r in rs})) if f.active]
    assert len(found) <= 1  # low priority; natural failures rarely cluster
