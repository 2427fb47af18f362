"""Write lanes (streams/lane.py) on a real ledger: the next batch is screened while the previous
one is written, batches are written in the order read, a batch past a hole is refused, and the
position check survives another lane clearing what the worker knows (issue 10)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger
from linetrace.streams.lane import WriteLane
from linetrace.streams.processor import BatchProcessor

from .test_db_outage import ends, enrolled, ids, positions, records, rejected, stored_ids

pytestmark = pytest.mark.integration


def processor(ledger: Ledger) -> BatchProcessor:
    proc = BatchProcessor(ledger, "127.0.0.1:1", screen_thread=True)
    proc.incarnation = "test"
    return proc


def test_a_lane_screens_the_next_batch_while_the_writer_stores_the_previous(
        db_url: str, tmp_path: Path) -> None:
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    batches = [records(40), records(40, first=41), records(40, first=81)]
    written: list[list[str]] = []
    gate = threading.Event()
    real = proc.write_isolating

    def slow_write(candidates, rejections, positions_):  # type: ignore[no-untyped-def]
        gate.wait(30)  # the first write waits until the second batch has been screened
        written.append(sorted(c.event.id for c in candidates))
        return real(candidates, rejections, positions_)

    proc.write_isolating = slow_write  # type: ignore[method-assignment]
    real_screen = proc.screen_batch

    async def screen_and_open(recs, *rest):  # type: ignore[no-untyped-def]
        out = await real_screen(recs, *rest)
        if recs is batches[1]:
            gate.set()  # screened while batch 0 sat in the writer
        return out

    proc.screen_batch = screen_and_open  # type: ignore[method-assignment]

    async def scenario() -> None:
        lane = WriteLane(proc)
        for batch in batches:
            assert await lane.submit(batch) == {}
        await lane.drain()
        await proc.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert written == [ids(b) for b in batches]  # one after another, in order
        assert stored_ids(ledger) == sorted(i for b in batches for i in ids(b))
        want: dict[tuple[str, int], int] = {}
        for b in batches:
            want.update(ends(b))
        assert positions(ledger) == want
    finally:
        ledger.close()


def test_a_batch_past_the_ledgers_position_is_not_written(db_url: str, tmp_path: Path) -> None:
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    first, later = records(30), records(30, first=31)

    async def scenario() -> dict[tuple[str, int], int]:
        lane = WriteLane(proc)
        assert await lane.submit(first) == {}
        behind = await lane.submit(_past(later, ends(first)))
        await lane.drain()
        await proc.stop()
        return behind

    try:
        behind = asyncio.run(asyncio.wait_for(scenario(), 120))
        assert behind and all(o == ends(first).get(k, 0) for k, o in behind.items())
        assert stored_ids(ledger) == ids(first)
        assert positions(ledger) == ends(first)
    finally:
        ledger.close()


def _past(batch, where):  # type: ignore[no-untyped-def]
    """The batch's records moved past where the ledger stands by 5 offsets (a hole)."""
    from dataclasses import replace

    return [replace(r, offset=where.get((r.topic, r.partition), 0) + 5 + i)
            for i, r in enumerate(batch)]


def test_the_position_check_survives_another_lane_forgetting_positions(
        db_url: str, tmp_path: Path) -> None:
    """A rebalance seen by one consumer clears what the worker knows while another lane's
    check waits for the ledger: the check asks again instead of failing (a KeyError once
    crashed an agent here)."""
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    a, b = records(20), records(20, first=21)
    real = proc.stored_next
    calls = 0

    def stored_next_and_forget(keys):  # type: ignore[no-untyped-def]
        nonlocal calls
        calls += 1
        out = real(keys)
        if calls == 1:
            proc.forget_positions()  # as another lane's rebalance would, meanwhile
        return out

    async def scenario() -> None:
        lane = WriteLane(proc)
        assert await lane.submit(a) == {}
        await lane.drain()
        proc.stored_next = stored_next_and_forget  # type: ignore[method-assignment]
        proc._next.pop(next(iter(ends(b))))  # one partition unknown: the ledger is asked
        assert await lane.submit(b) == {}
        await lane.drain()
        await proc.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert calls >= 1
        assert stored_ids(ledger) == sorted(ids(a) + ids(b))
    finally:
        ledger.close()


def test_a_batch_holding_records_from_before_and_after_a_seek_back_writes_only_the_stream_from_the_seek(
        db_url: str, tmp_path: Path) -> None:
    """After a restart the consumer first fetches from Kafka's committed offsets (ahead of the
    ledger when a worker died between Kafka's commit and the ledger's), then the worker seeks
    back to the ledger's positions; one batch can hold both fetches. The records fetched
    before the seek must not be written ahead of those before them: they would be stored
    past a hole, and the earlier ones quarantined as reordered when they came (a worker
    killed at kill-before-write left 25 of 60 events quarantined so)."""
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    everything = records(40)
    head = ends(everything[:20])  # where a dead worker's Kafka commit stood
    stale = [r for r in everything if r.offset >= head.get((r.topic, r.partition), 0)]
    mixed = stale + everything  # the fetch from the commit, then the one from the seek

    async def scenario() -> None:
        lane = WriteLane(proc)
        assert await lane.submit(mixed) == {}
        await lane.drain()
        await proc.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert rejected(ledger) == []
        assert stored_ids(ledger) == ids(everything)
        assert positions(ledger) == ends(everything)
    finally:
        ledger.close()


def test_records_read_again_below_the_ledgers_position_never_move_it_back(
        db_url: str, tmp_path: Path) -> None:
    """A restarted worker reads again from Kafka's committed offsets (behind the ledger when a
    worker died between the ledger's commit and Kafka's). A batch of only those records stores
    nothing new and must leave the positions where they are: moved back, the next records
    looked as if they started past a hole, and the worker kept seeking back (measured: a
    position at 4 set back to 3 by such a batch). A broker that restarted empty (another
    incarnation) still replaces them."""
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    everything = records(40)
    again = everything[:10]  # offsets below where the ledger stands

    async def scenario() -> tuple[dict[tuple[str, int], int], dict[tuple[str, int], int]]:
        lane = WriteLane(proc)
        assert await lane.submit(everything) == {}
        await lane.drain()
        assert await lane.submit(again) == {}
        await lane.drain()
        after_again = positions(ledger)
        proc.incarnation = "restarted"  # offsets begin at 0 again in the new log
        proc.forget_positions()
        assert await lane.submit(again) == {}
        await lane.drain()
        await proc.stop()
        return after_again, positions(ledger)

    try:
        after_again, after_restart = asyncio.run(asyncio.wait_for(scenario(), 120))
        assert after_again == ends(everything)
        assert after_restart == {**ends(everything), **ends(again)}
        assert stored_ids(ledger) == ids(everything) and rejected(ledger) == []
    finally:
        ledger.close()


def test_a_batch_read_before_the_worker_forgot_its_positions_does_not_teach_it_old_ones(
        db_url: str, tmp_path: Path) -> None:
    """A rebalance or a broker restart clears what the worker knows of the ledger's positions
    (`forget_positions`) while another lane's batch, read before, is still being written. That
    batch's ends must not come back as what the worker knows: after a broker restart they are
    offsets of the old log, too high for the new one, and the position check would let a hole
    in the new log through."""
    ledger = enrolled(db_url, tmp_path / "keys")
    proc = processor(ledger)
    batch = records(20)

    async def scenario() -> None:
        screened = await proc.screen_batch(batch)  # read in this generation
        proc.forget_positions()                    # meanwhile: a rebalance elsewhere
        await proc.write_screened(screened)
        await proc.stop()

    try:
        asyncio.run(asyncio.wait_for(scenario(), 120))
        assert stored_ids(ledger) == ids(batch)
        assert positions(ledger) == ends(batch)  # the ledger holds the data and its positions
        assert proc._next == {}  # the worker asks the ledger again before trusting any
    finally:
        ledger.close()
