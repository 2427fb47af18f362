"""Security alerts, pure parts: which far-from-clock times are absurd, a record's claimed time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from linetrace.ledger.security_alerts import absurd, momentary_end, record_time
from linetrace.ledger.alerts.conditions import Condition

NOW = datetime(2026, 12, 7, 2, 0, tzinfo=UTC)


def test_reset_rtcs_and_far_futures_are_absurd_other_days_are_not() -> None:
    for t in (datetime(1, 1, 1, tzinfo=UTC), datetime(1900, 1, 1, tzinfo=UTC),
              datetime(1970, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC),
              NOW + timedelta(days=8)):
        assert absurd(t, NOW), t
    for t in (datetime(2026, 2, 2, 6, tzinfo=UTC), NOW - timedelta(days=300),
              NOW + timedelta(days=6)):  # a simulated day, a long stop, a clock a bit ahead
        assert not absurd(t, NOW), t


def test_a_records_claimed_time_when_it_can_be_read() -> None:
    assert record_time(b'{"time":"2026-03-02T08:00:00Z"}') == datetime(2026, 3, 2, 8, tzinfo=UTC)
    assert record_time(b"not json") is None
    assert record_time(b'{"time":"yesterday"}') is None
    assert record_time(None) is None


def test_a_security_finding_ends_as_soon_as_it_is_found() -> None:
    c = Condition("security.quarantine", "burnin-01", True, NOW, "rejected-x")
    end = momentary_end(c)
    assert not end.active and (end.condition, end.subject, end.time, end.cause) == (
        c.condition, c.subject, c.time, c.cause)
