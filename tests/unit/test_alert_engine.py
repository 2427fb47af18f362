"""Pure parts of the alert engine: the ISA-18.2 state of an alert's flags, flood periods and
the peak 10-minute count, the flood alert's findings, message ids and shapes, `--state`."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from linetrace.ledger.alerts.conditions import CATALOGUE, alert_id
from linetrace.ledger.alerts.engine import state_of
from linetrace.ledger.alerts.kpi import Flood, sweep
from linetrace.ledger.alerts.messages import alert_message, message_id
from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.alerts.views import AlertError, AlertView, check_state
from linetrace.ledger.outbox import MESSAGE_ID_HEADER
from linetrace.schemas.topics import ALERTS
from linetrace.streams.detect.alert_tick import FLOOD_ID, flood_conditions

T = datetime(2026, 3, 1, 8, 0, tzinfo=UTC)


def _alert(**flags: object) -> Alert:
    base: dict[str, object] = {"active": False, "acked": True, "suppressed": False,
                               "out_of_service": False, "shelved_until": None}
    base.update(flags)
    return Alert(**base)


@pytest.mark.parametrize(("flags", "state"), [
    ({}, "normal"),
    ({"active": True, "acked": False}, "unacknowledged"),
    ({"active": True, "acked": True}, "acknowledged"),
    ({"active": False, "acked": False}, "rtn_unacknowledged"),
    ({"active": True, "acked": True, "suppressed": True}, "suppressed"),
    ({"active": False, "suppressed": True}, "normal"),  # a cleared child is not suppressed
    ({"active": True, "acked": False, "shelved_until": T}, "shelved"),
    ({"active": True, "acked": False, "shelved_until": T, "out_of_service": True},
     "out_of_service"),
])
def test_the_state_is_a_function_of_the_flags(flags: dict[str, object], state: str) -> None:
    assert state_of(_alert(**flags)) == state


def _times(*seconds: float) -> list[datetime]:
    return [T + timedelta(seconds=s) for s in seconds]


def test_eleven_alarms_in_ten_minutes_start_a_flood_at_the_eleventh() -> None:
    ten = _times(*range(0, 100, 10))
    floods, peak = sweep(ten, T + timedelta(minutes=5))
    assert floods == [] and peak == 10  # ten is not a flood: more than 10 is
    floods, peak = sweep(ten + _times(100), T + timedelta(minutes=5))
    assert floods == [Flood(T + timedelta(seconds=100), None, 11)] and peak == 11


def test_a_flood_ends_when_the_count_falls_below_five_not_before() -> None:
    times = _times(*range(0, 120, 10))  # 12 alarms at 0, 10, ..., 110 s
    floods, _ = sweep(times, T + timedelta(hours=1))
    # the count falls to 4 when the 8th alarm (70 s) is 10 minutes old
    assert floods == [Flood(T + timedelta(seconds=100), T + timedelta(seconds=670), 12)]
    going, _ = sweep(times, T + timedelta(seconds=669))  # not yet seen to end
    assert going == [Flood(T + timedelta(seconds=100), None, 12)]


def test_an_alarm_exactly_ten_minutes_old_has_left_the_window() -> None:
    times = _times(0, 600)
    _, peak = sweep(times, T + timedelta(hours=1))
    assert peak == 1


def test_two_bursts_make_two_floods_and_the_peak_is_the_largest_window() -> None:
    burst = list(range(0, 60, 5))  # 12 in a minute
    times = _times(*burst, *[3600 + s for s in burst], 3610.5, 3611)
    floods, peak = sweep(times, T + timedelta(hours=3))
    assert [f.start for f in floods] == [T + timedelta(seconds=50),
                                        T + timedelta(seconds=3640)]  # 2 extra in it
    assert [f.peak for f in floods] == [12, 14] and peak == 14


def test_the_flood_alert_is_raised_at_each_start_and_cleared_at_each_end() -> None:
    one = Flood(T, T + timedelta(minutes=12), 13)
    two = Flood(T + timedelta(hours=1), None, 11)
    got = flood_conditions([one, two], going=None, after=None)
    assert [(c.active, c.time, c.cause) for c in got] == [
        (True, T, "flood:2026-03-01T08:00:00.000Z"),
        (False, one.end, "flood-end:2026-03-01T08:12:00.000Z"),
        (True, two.start, "flood:2026-03-01T09:00:00.000Z")]
    assert all(alert_id(c.condition, c.subject) == FLOOD_ID for c in got)
    assert CATALOGUE[got[0].condition].priority == "low"  # a clean run shows nothing higher


def test_the_flood_alert_shows_is_cleared_once_and_older_floods_are_not_raised_again() -> None:
    old = Flood(T, T + timedelta(minutes=12), 13)
    shown = Flood(T + timedelta(hours=1), T + timedelta(hours=1, minutes=11), 12)
    got = flood_conditions([old, shown], going=shown.start, after=None)
    assert [(c.active, c.time) for c in got] == [(False, shown.end)]
    assert flood_conditions([old], going=None, after=old.end) == []


def _view(**kw: object) -> AlertView:
    base: dict[str, object] = dict(
        id=alert_id("flow.station_down", "ST-3"), condition="flow.station_down",
        subject="ST-3", priority="medium", state="unacknowledged", occurrences=2, raised=T,
        updated=T, message="station is down", action="send maintenance", active=True,
        acknowledged=False, station="ST-3", details={"e10": "unscheduled_down"})
    base.update(kw)
    return AlertView(**base)  # type: ignore[arg-type]


def test_the_contract_fields_come_first_with_rfc3339_times() -> None:
    doc = _view().to_json()
    assert list(doc)[:10] == ["id", "condition", "subject", "priority", "state",
                              "occurrences", "raised", "updated", "message", "action"]
    assert doc["raised"] == "2026-03-01T08:00:00.000Z" and doc["priority"] == "medium"


def test_a_transition_message_is_keyed_by_the_alert_and_its_id_derives_from_its_cause() -> None:
    view = _view()
    m = alert_message(view, transition="raised", occurrence=2, time=T, cause="evt-1")
    assert m.topic == ALERTS and m.key == view.id.encode()
    assert m.message_id == message_id(view.id, 2, "raised", "evt-1")
    again = alert_message(view, transition="raised", occurrence=2, time=T, cause="evt-1")
    assert again == m  # a replay: same bytes, same id, stored once by the outbox
    assert len({m.message_id, message_id(view.id, 3, "raised", "evt-1"),
                message_id(view.id, 2, "cleared", "evt-1"),
                message_id(view.id, 2, "raised", "evt-2")}) == 4
    value = json.loads(m.value or b"")
    assert value["transition"] == "raised" and value["occurrence"] == 2
    assert value["time"] == "2026-03-01T08:00:00.000Z" and value["by"] is None
    assert value["details"] == {"e10": "unscheduled_down"} and value["station"] == "ST-3"
    assert MESSAGE_ID_HEADER not in dict(m.headers)  # the outbox adds it from message_id


def test_state_filter_is_one_of_the_isa_states_or_all() -> None:
    assert check_state("shelved") == "shelved" and check_state("all") == "all"
    assert check_state(None) is None
    with pytest.raises(AlertError) as e:
        check_state("open")
    assert e.value.code == "alert.unknown_state" and "rtn_unacknowledged" in e.value.message


def test_every_transition_message_matches_the_published_line_alerts_schema() -> None:
    from typing import get_args

    import msgspec
    from jsonschema import Draft202012Validator

    from linetrace.ledger.alerts.conditions import STATES
    from linetrace.ledger.alerts.engine import TRANSITIONS
    from linetrace.schemas import alert_message as am

    assert set(get_args(am.AlertState)) == set(STATES)
    assert set(get_args(am.Transition)) == set(TRANSITIONS)
    assert am.check() == []  # run `python -m linetrace.schemas.alert_message --write`
    schema = json.loads((am.SOURCE_DIR / am.FILE_NAME).read_text(encoding="utf-8"))
    validator = Draft202012Validator(schema)
    views = [_view(), _view(state="shelved", shelved_until=T + timedelta(hours=2),
                            acknowledged=True, unit="SRV-1", lot=None, details={})]
    for view, transition in zip(views, ("raised", "shelved"), strict=True):
        m = alert_message(view, transition=transition, occurrence=2, time=T, cause="c",
                          by="alice" if transition == "shelved" else None, note="n")
        doc = json.loads(m.value or b"")
        assert list(validator.iter_errors(doc)) == []
        msgspec.json.decode(m.value or b"", type=am.AlertMessage)
    bad = {**json.loads(alert_message(views[0], transition="raised", occurrence=1, time=T,
                                      cause="c").value or b""), "state": "open"}
    assert list(validator.iter_errors(bad))
