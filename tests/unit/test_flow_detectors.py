"""Flow detectors, pure logic: route violations, stuck units (held, suppressed under a station
that is down), station down and back, fault storms."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from linetrace.ledger.alerts.conditions import CATALOGUE, alert_id
from linetrace.streams.detect import flow

T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def test_every_flow_condition_is_in_the_catalogue_and_not_high() -> None:
    for name in (flow.ROUTE_VIOLATION, flow.STUCK_UNIT, flow.STATION_DOWN, flow.FAULT_STORM):
        assert CATALOGUE[name].priority == "medium"


# --- stations ---------------------------------------------------------------------------------


def test_sdt_and_usd_raise_station_down_prd_and_sby_clear_it_eng_and_nst_change_nothing() -> None:
    down = flow.station_state("final-qa-01", 4000, "fixture fault", at(0), "e1")
    assert down is not None and down.active and down.subject == "final-qa-01"
    assert down.condition == flow.STATION_DOWN and down.station == "final-qa-01"
    assert "SDT" in down.message and "fixture fault" in down.message
    usd = flow.station_state("final-qa-01", 5000, None, at(1), "e2")
    assert usd is not None and usd.active
    for state in (1000, 2000):
        up = flow.station_state("final-qa-01", state, None, at(2), "e3")
        assert up is not None and not up.active
    assert flow.station_state("final-qa-01", 3000, None, at(3), "e4") is None
    assert flow.station_state("final-qa-01", 6000, None, at(3), "e5") is None


def test_a_clean_line_reporting_producing_raises_nothing_active() -> None:
    found = [flow.station_state(f"st-{i}", 1000, "producing", at(i), f"e{i}") for i in range(12)]
    assert all(c is not None and not c.active for c in found)


def test_storm_raised_at_the_nth_fault_within_the_window_only() -> None:
    times = [at(m) for m in (0, 2, 4, 6)]
    assert flow.fault_storm("ict-01", times, at(6), "f4", occurred=True) is None
    times.append(at(8))
    storm = flow.fault_storm("ict-01", times, at(8), "f5", occurred=True)
    assert storm is not None and storm.active and storm.details["faults"] == 5
    assert storm.subject == "ict-01" and storm.condition == flow.FAULT_STORM


def test_faults_spread_wider_than_the_window_are_no_storm() -> None:
    times = [at(m) for m in (0, 3, 6, 9, 12)]  # five faults, but never five within 10 minutes
    assert flow.faults_within(times, at(12)) == 4
    assert flow.fault_storm("ict-01", times, at(12), "f", occurred=True) is None


def test_storm_ends_at_the_next_report_with_fewer_faults_in_the_window() -> None:
    times = [at(m) for m in (0, 1, 2, 3, 4)]
    assert flow.fault_storm("ict-01", times, at(5), "c1", occurred=False) is None  # still 5
    end = flow.fault_storm("ict-01", times, at(12), "c2", occurred=False)
    assert end is not None and not end.active


def test_storm_threshold_and_window_are_parameters() -> None:
    times = [at(0), at(0.5)]
    storm = flow.fault_storm("x", times, at(0.5), "f", occurred=True, n=2,
                             window=timedelta(minutes=1))
    assert storm is not None and storm.active


# --- stuck units ------------------------------------------------------------------------------


def stuck(serial: str, station: str | None = "gpu-install-01", cleared: datetime | None = None,
          since: datetime = T0) -> flow.Stuck:
    return flow.Stuck(serial=serial, step=60, since=since, station=station, max_cycle_s=2400,
                      detected=since + timedelta(seconds=3000), cleared=cleared)


def test_an_open_stuck_row_is_active_and_a_cleared_one_returns_to_normal() -> None:
    (active,) = flow.stuck_units([stuck("SRV-1")], held=(), down={})
    assert active.active and active.subject == "SRV-1" and active.parent is None
    assert active.unit == "SRV-1" and active.details["waited_s"] == 3000
    (cleared,) = flow.stuck_units([stuck("SRV-1", cleared=at(60))], held=(), down={})
    assert not cleared.active and cleared.time == at(60)
    assert cleared.cause == active.cause  # the same stay


def test_a_held_unit_is_not_stuck() -> None:
    (c,) = flow.stuck_units([stuck("SRV-1")], held={"SRV-1"}, down={})
    assert not c.active


def test_units_stuck_at_a_station_that_is_down_name_its_alert_as_parent() -> None:
    rows = [stuck("SRV-1", "final-qa-01"), stuck("SRV-2", "final-qa-01"),
            stuck("SRV-3", "pack-01")]
    found = {c.subject: c for c in flow.stuck_units(rows, held=(), down={"final-qa-01": at(0)})}
    parent = alert_id("flow.station_down", "final-qa-01")
    assert flow.station_down_id("final-qa-01") == parent
    assert found["SRV-1"].parent == parent and found["SRV-2"].parent == parent
    assert found["SRV-3"].parent is None
    assert all(c.active for c in found.values())


def test_the_latest_stay_wins_an_open_one_over_a_cleared_one() -> None:
    rows = [stuck("SRV-1", cleared=at(30)), stuck("SRV-1", since=at(100))]
    (c,) = flow.stuck_units(rows, held=(), down={})
    assert c.active and c.details["since"] == at(100).isoformat()


def test_the_same_stay_always_gets_the_same_cause() -> None:
    a = flow.stuck_units([stuck("SRV-1")], held=(), down={})[0].cause
    b = flow.stuck_units([stuck("SRV-1")], held=(), down={})[0].cause
    other = flow.stuck_units([stuck("SRV-1", since=at(1))], held=(), down={})[0].cause
    assert a == b != other and len(a) <= 64


# --- route violations -------------------------------------------------------------------------


def violation(serial: str, code: str, minute: float, event: str) -> flow.Violation:
    return flow.Violation(serial=serial, step=90, station="burnin-01", code=code,
                          message=f"{code} message", event_id=event, time=at(minute),
                          hold_id="HOLD-1")


def test_one_condition_per_unit_with_every_code() -> None:
    rows = [violation("SRV-1", "route.skipped_step", 1, "e1"),
            violation("SRV-1", "route.gate_failed", 1, "e1"),
            violation("SRV-2", "route.skipped_step", 2, "e2")]
    found = {c.subject: c for c in flow.route_violations(rows)}
    assert set(found) == {"SRV-1", "SRV-2"}
    one = found["SRV-1"]
    assert one.active and one.unit == "SRV-1" and one.cause == "e1" and one.time == at(1)
    assert one.details["codes"] == ["route.gate_failed", "route.skipped_step"]
    assert "HOLD-1" in one.action and "step 90" in one.message


def test_violation_ends_only_for_units_no_longer_held() -> None:
    ended = flow.violations_ended({"SRV-1": (at(5), "r1"), "SRV-2": (at(6), "r2")},
                                  still_held={"SRV-2"})
    assert [(c.subject, c.active, c.cause) for c in ended] == [("SRV-1", False, "r1")]


# --- stalls found from event history ------------------------------------------------------------


def ev(serial: str, etype: str, step: int | None, minute: float, eid: str,
       station: str = "gpu-install-01") -> flow.LineEvent:
    return flow.LineEvent(serial, etype, station, step, at(minute), eid)


LIMITS = {"SRV-1": {60: 3600, 70: 7200}}


def test_a_unit_silent_at_its_step_past_its_max_cycle_stalled() -> None:
    previous = {"SRV-1": ev("SRV-1", "work.started", 60, 0, "e1")}
    batch = [ev("SRV-1", "materials.installed", None, 130, "e2"),  # 130 min > 60 min
             ev("SRV-1", "work.completed", 60, 131, "e3")]
    (s,) = flow.stalls(previous, batch, LIMITS)
    assert (s.before.event_id, s.after.event_id, s.step, s.limit) == ("e1", "e2", 60, 3600)
    raised, cleared = flow.stall_conditions([s], held=(), down={})
    assert raised.active and raised.time == at(60) and raised.subject == "SRV-1"
    assert not cleared.active and cleared.time == at(130)
    assert raised.details["waited_s"] == 130 * 60


def test_no_stall_within_the_max_cycle_or_after_a_departure() -> None:
    batch = [ev("SRV-1", "work.started", 60, 0, "e1"), ev("SRV-1", "work.completed", 60, 59, "e2"),
             ev("SRV-1", "unit.departed", 60, 60, "e3"),
             ev("SRV-1", "unit.arrived", 70, 600, "e4")]  # waited between steps: not stuck
    assert flow.stalls({}, batch, LIMITS) == []


def test_the_step_is_carried_over_events_without_one() -> None:
    batch = [ev("SRV-1", "work.started", 60, 0, "e1"),
             ev("SRV-1", "materials.installed", None, 30, "e2"),
             ev("SRV-1", "work.completed", 60, 100, "e3")]  # 70 min after e2: over 60 at step 60
    (s,) = flow.stalls({}, batch, LIMITS)
    assert s.before.event_id == "e2" and s.step == 60


def test_a_unit_without_a_route_or_held_meanwhile_raises_nothing() -> None:
    batch = [ev("SRV-2", "work.started", 60, 0, "e1"), ev("SRV-2", "work.completed", 60, 200, "e2")]
    assert flow.stalls({}, batch, LIMITS) == []  # no route known for SRV-2
    held = flow.stalls({}, [ev("SRV-1", "work.started", 60, 0, "e1"),
                            ev("SRV-1", "work.completed", 60, 200, "e2")], LIMITS)
    assert flow.stall_conditions(held, held={"SRV-1"}, down={}) == []


def test_a_stall_at_a_station_that_is_down_names_its_alert() -> None:
    found = flow.stalls({}, [ev("SRV-1", "work.started", 60, 0, "e1"),
                             ev("SRV-1", "work.completed", 60, 200, "e2")], LIMITS)
    raised, _ = flow.stall_conditions(found, held=(), down={"gpu-install-01": at(0)})
    assert raised.parent == flow.station_down_id("gpu-install-01")
