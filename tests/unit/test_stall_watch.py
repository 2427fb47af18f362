"""The stall watch (streams/stall.py): a partition whose ledger position stands still while
the broker holds records past it is read again from that position; nothing else is."""

from __future__ import annotations

from linetrace.streams.stall import StallWatch

P0, P1 = ("line.events", 0), ("line.events", 1)


def test_a_partition_standing_still_behind_the_broker_is_due_after_the_wait() -> None:
    watch = StallWatch(after_s=10)
    assert watch.observe(0, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(9.9, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(10, {P0: 5}, {P0: 9}) == {P0: 5}
    # once rewound, it gets the whole wait again before the next rewind
    assert watch.observe(15, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(20, {P0: 5}, {P0: 9}) == {P0: 5}


def test_a_partition_that_moves_or_has_caught_up_is_never_due() -> None:
    watch = StallWatch(after_s=10)
    for t in range(0, 60, 2):  # moving: the position changes every observation
        assert watch.observe(t, {P0: t, P1: 7}, {P0: 100, P1: 7}) == {}
    # P1 caught up (end == position) for the whole minute: nothing to read
    assert watch.observe(60, {P0: 60, P1: 7}, {P0: 100, P1: 7}) == {}


def test_an_end_not_known_yet_starts_the_wait_over() -> None:
    watch = StallWatch(after_s=10)
    assert watch.observe(0, {P0: 3}, {P0: 9}) == {}
    assert watch.observe(8, {P0: 3}, {P0: None}) == {}
    assert watch.observe(12, {P0: 3}, {P0: 9}) == {}  # waited from 8, not from 0
    assert watch.observe(18, {P0: 3}, {P0: 9}) == {P0: 3}


def test_a_partition_moved_elsewhere_is_forgotten() -> None:
    watch = StallWatch(after_s=10)
    watch.observe(0, {P0: 3, P1: 4}, {P0: 9, P1: 9})
    watch.observe(5, {P1: 4}, {P1: 9})  # P0 revoked
    # assigned back later: its wait starts when it is seen again
    assert watch.observe(11, {P0: 3, P1: 4}, {P0: 9, P1: 9}) == {P1: 4}
    assert watch.observe(20, {P0: 3, P1: 4}, {P0: 9, P1: 9}) == {}
    assert watch.observe(21, {P0: 3, P1: 4}, {P0: 9, P1: 9}) == {P0: 3, P1: 4}


def test_a_partition_whose_batch_is_in_the_writer_waits_without_starting_over() -> None:
    watch = StallWatch(after_s=10)
    assert watch.observe(0, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(12, {P0: 5}, {P0: 9}, busy={P0}) == {}  # a slow write, not a stall
    assert watch.observe(14, {P0: 5}, {P0: 9}) == {P0: 5}  # idle now, still standing still


def test_after_the_ledger_could_not_be_read_every_wait_starts_over() -> None:
    """After a DB outage with a backlog the first read must not fire at once: the lane's
    retried batch is about to move the position."""
    watch = StallWatch(after_s=10)
    watch.observe(0, {P0: 5}, {P0: 9})
    watch.reset()  # the read failed at 5..25
    assert watch.observe(26, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(35, {P0: 5}, {P0: 9}) == {}
    assert watch.observe(36, {P0: 5}, {P0: 9}) == {P0: 5}
