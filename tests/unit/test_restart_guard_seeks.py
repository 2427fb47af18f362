"""BrokerRestartGuard's seek bookkeeping (streams/restart_guard.py), without a broker: which
seeks are applied, and which keep the record the broker-restart check reads back. The guard
against a real broker is tests/integration/test_restart_guard.py."""

from __future__ import annotations

from typing import Any

from linetrace.streams.restart_guard import BrokerRestartGuard

P0, P1, P2 = ("line.events", 0), ("line.events", 1), ("line.events", 2)


class Consumer:
    """The two calls `before_fetch` makes of an aiokafka consumer."""

    def __init__(self, assigned: set[Any]) -> None:
        self.assigned = assigned
        self.seeks: list[tuple[Any, int]] = []

    def assignment(self) -> set[Any]:
        return self.assigned

    def seek(self, tp: Any, offset: int) -> None:
        self.seeks.append((tp, offset))


def test_a_stall_watch_seek_keeps_the_record_the_restart_check_reads_back() -> None:
    """A seek of the stall watch during a broker outage must not leave the restart check
    with nothing to ask: it would call a broker that restarted empty intact."""
    guard = BrokerRestartGuard()
    guard.last = {P0: (7, b"d0"), P1: (9, b"d1")}
    guard.start_at({P0: 3}, keep_last=True)
    guard.start_at({P1: 4})  # an assignment's seek: the partition starts afresh
    consumer = Consumer({P0, P1})
    guard.before_fetch(consumer)
    assert sorted(consumer.seeks) == [(P0, 3), (P1, 4)]
    assert guard.last == {P0: (7, b"d0")}


def test_a_seek_for_a_partition_not_assigned_yet_waits_and_the_latest_wins() -> None:
    guard = BrokerRestartGuard()
    guard.start_at({P2: 5}, keep_last=True)
    consumer = Consumer({P0})
    guard.before_fetch(consumer)
    assert consumer.seeks == []  # kept for when it is assigned
    guard.start_at({P2: 2})  # a later seek replaces it, and with its own keep_last
    guard.last = {P2: (8, b"d2")}
    consumer.assigned = {P0, P2}
    guard.before_fetch(consumer)
    assert consumer.seeks == [(P2, 2)]
    assert guard.last == {}
    guard.before_fetch(consumer)
    assert consumer.seeks == [(P2, 2)]  # applied once
