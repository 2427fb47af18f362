"""Delivers a station's spool to the broker: in order, `acks=all`, retrying forever.

Each round takes the oldest pending rows (a window), cuts them into one record batch per
partition and sends one produce request per leader. A partition has at most one batch in
flight and the next round starts only after this one is settled, so a partition never holds
a later event of ours without every earlier one: the order ingest rule 4 checks.

Confirmation. A produce request only goes over a connection the sender has *confirmed*:
after any connection is (re)opened, before anything is sent on it, the sender asks the broker
for the cluster id and, for every partition it has written to, reads the record at the end
offset it recorded on its last acknowledgement (minus one). If the broker no longer holds it
(the embedded broker restarted empty, or another cluster answers), the retained rows of that
partition become pending again and are resent, in their original order and bytes, before
anything newer. Real Kafka never loses acknowledged records, so there this never replays.
Topics whose partition count differs from CONTRACTS.md are never written; the sender waits.

A quiet station checks too. While nothing is pending, the sender asks the broker it last
wrote to for metadata every `watch_interval_s` (1 s): a connection that had to be reopened,
or a cluster id other than the one that acknowledged our events (the embedded broker takes a
new one at every start), runs the same confirmation, so what a restarted broker lost is
replayed without waiting for the station's next event.

Logging: an outage is logged once when it starts (WARNING) and once when the broker answers
again (INFO, with its length and the attempts that failed); a long one is reminded every
`remind_s`. A replay is one WARNING line.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from aiokafka.errors import KafkaError

from linetrace.schemas.topics import ALL_TOPICS

from .broker_link import (
    OFFSET_OUT_OF_RANGE, UNKNOWN_TOPIC_OR_PARTITION, BrokerLink, ClusterView, Connection,
    error_name,
)
from .outbox import Outbox
from .spool import Spooled, TopicPartition

log = logging.getLogger("linetrace.stations.client")


class _Retry(Exception):
    """This round failed; back off and try again (the reason is logged, rate-limited)."""


@dataclass
class SenderStats:
    sent: int = 0
    rounds: int = 0
    replayed: int = 0
    confirmations: int = 0
    watches: int = 0        # idle checks of the broker while nothing was pending
    outages: int = 0
    last_error: str | None = None


@dataclass
class _Outage:
    since: float
    reason: str
    failures: int = 1
    reminded: float = 0.0


class Sender:
    def __init__(self, station_id: str, outbox: Outbox, link: BrokerLink, *,
                 window_events: int = 1000, window_bytes: int = 900 * 1024,
                 retry_backoff_s: float = 0.1, max_retry_backoff_s: float = 2.0,
                 topic_poll_s: float = 0.5, purge_interval_s: float = 60.0,
                 watch_interval_s: float = 1.0, remind_s: float = 300.0,
                 topic_grace_s: float = 1.0) -> None:
        self.station_id = station_id
        self.outbox = outbox
        self.link = link
        self.window_events = window_events
        self.window_bytes = window_bytes
        self.retry_backoff_s = retry_backoff_s
        self.max_retry_backoff_s = max_retry_backoff_s
        self.topic_poll_s = topic_poll_s
        self.purge_interval_s = purge_interval_s
        self.watch_interval_s = watch_interval_s
        self.remind_s = remind_s
        self.topic_grace_s = topic_grace_s
        self.stats = SenderStats()
        self.progress = asyncio.Event()   # set after every round that acknowledged something
        self._trusted: dict[int, Connection] = {}
        self._view: ClusterView | None = None
        self._warned: dict[str, float] = {}
        self._outage: _Outage | None = None
        self._next_watch = 0.0
        self.stopped = False  # aiokafka's close() can swallow a cancellation: also a flag

    async def stop(self, task: asyncio.Task[None]) -> None:
        self.stopped = True
        self.progress.set()
        self.outbox.appended.set()
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=1.0)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.error("station %s: the sender had stopped: %r", self.station_id, exc)

    # --- the loop -----------------------------------------------------------------------

    async def run(self) -> None:
        backoff = self.retry_backoff_s
        next_purge = time.monotonic() + self.purge_interval_s
        while not self.stopped:
            try:
                sent = await self._round()
                backoff = self.retry_backoff_s
            except (_Retry, KafkaError, OSError, asyncio.TimeoutError) as e:
                reason = str(e) if str(e).startswith(type(e).__name__) or isinstance(e, _Retry) \
                    else f"{type(e).__name__}: {e}"
                self.stats.last_error = reason
                self._failed(reason)
                if isinstance(e, (KafkaError, OSError, asyncio.TimeoutError)):
                    await self._reset()
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_retry_backoff_s)
                continue
            if self._outage is not None and self.link.connected:  # the broker answered
                self._recovered()
            if time.monotonic() >= next_purge:
                await self.outbox.purge()
                next_purge = time.monotonic() + self.purge_interval_s
            if sent == 0:
                self.outbox.appended.clear()
                if self.outbox.spool.pending == 0:
                    try:
                        await asyncio.wait_for(self.outbox.appended.wait(), min(
                            self.watch_interval_s, self.purge_interval_s))
                    except TimeoutError:
                        pass

    async def _reset(self) -> None:
        """Forget every connection: the next round reconnects and confirms first."""
        self._trusted.clear()
        self._view = None
        await self.link.close()

    def _failed(self, reason: str) -> None:
        """A round failed: say so when the outage starts, then only remind now and then."""
        now = time.monotonic()
        o = self._outage
        if o is None:
            self._outage = _Outage(now, reason, reminded=now)
            self.stats.outages += 1
            log.warning("station %s: delivery paused (%s); events are kept in the spool and "
                        "sent when the broker answers (%d waiting); retrying quietly",
                        self.station_id, reason, self.outbox.spool.pending)
            return
        o.failures += 1
        o.reason = reason
        if now - o.reminded >= self.remind_s:
            o.reminded = now
            log.warning("station %s: delivery still paused after %.0f s (%d attempts; last: %s); "
                        "%d event(s) wait in the spool", self.station_id, now - o.since,
                        o.failures, reason, self.outbox.spool.pending)

    def _recovered(self) -> None:
        o, self._outage = self._outage, None
        if o is not None:
            log.info("station %s: the broker answers again after %.1f s (%d failed attempt(s); "
                     "last: %s); %d event(s) wait in the spool", self.station_id,
                     time.monotonic() - o.since, o.failures, o.reason,
                     self.outbox.spool.pending)

    def _warn(self, what: str, message: str, every_s: float = 30.0) -> None:
        now = time.monotonic()
        if now - self._warned.get(what, -every_s) >= every_s:
            self._warned[what] = now
            log.warning(message)

    # --- one round ----------------------------------------------------------------------

    async def _round(self) -> int:
        """Send one window; the number of rows acknowledged (-1: confirmed, go again)."""
        rows = await self.outbox.next_pending(self.window_events, self.window_bytes)
        if not rows:
            return await self._watch()
        await self.link.connect()
        topics = {r.topic for r in rows}
        view = self._view
        if view is None or any(view.partitions.get(t) != ALL_TOPICS[t] for t in topics):
            view = await self._describe(topics | {t for t, _ in await self.outbox.marks()})
        batches: dict[TopicPartition, list[Spooled]] = defaultdict(list)
        for r in rows:
            batches[(r.topic, r.partition)].append(r)
        by_node: dict[int, dict[TopicPartition, list[Spooled]]] = defaultdict(dict)
        for tp, batch in batches.items():
            by_node[self._leader(view, tp)][tp] = batch
        conns = await self.link.connections(set(by_node))
        if any(self._trusted.get(n) is not c for n, c in conns.items()):
            await self._confirm(view, conns)
            return -1
        results = await asyncio.gather(
            *(self.link.produce(conns[n], sub) for n, sub in by_node.items()))
        acked: list[tuple[int, int]] = []
        ends: dict[TopicPartition, int] = {}
        failed: list[str] = []
        for landed in results:
            for tp, res in landed.items():
                sent = batches.get(tp)
                if sent is None:
                    continue
                if res.ok:
                    acked += [(r.id, res.base_offset + i) for i, r in enumerate(sent)]
                    ends[tp] = res.base_offset + len(sent)
                else:
                    failed.append(f"{tp[0]}[{tp[1]}]: {error_name(res.error)}")
                    if res.error == UNKNOWN_TOPIC_OR_PARTITION or res.exception().invalid_metadata:
                        self._view = None
        answered = {tp for landed in results for tp in landed}
        failed += [f"{t}[{p}]: no answer" for t, p in batches if (t, p) not in answered]
        if acked:
            await self.outbox.record_acks(acked, ends, view.cluster_id)
            self.stats.sent += len(acked)
            self.stats.rounds += 1
            self.progress.set()
        if failed:
            raise _Retry("the broker refused " + ", ".join(sorted(failed)[:5])
                         + (" ..." if len(failed) > 5 else ""))
        return len(acked)

    async def _watch(self) -> int:
        """Nothing to send: every `watch_interval_s`, make sure the broker we last wrote to
        still holds what it acknowledged (-1: it did not, the lost rows are pending again)."""
        now = time.monotonic()
        if now < self._next_watch:
            return 0
        self._next_watch = now + self.watch_interval_s
        marks = await self.outbox.marks()
        if not marks:
            return 0
        self.stats.watches += 1
        await self.link.connect()
        view = await self._describe({t for t, _ in marks})
        conns = await self.link.connections({self._leader(view, tp) for tp in marks})
        known = await self.outbox.cluster_id()
        moved = known is not None and view.cluster_id is not None and known != view.cluster_id
        if not moved and all(self._trusted.get(n) is c for n, c in conns.items()):
            return 0
        replayed = self.stats.replayed
        await self._confirm(view, conns)
        return -1 if self.stats.replayed > replayed else 0

    def _leader(self, view: ClusterView, tp: TopicPartition) -> int:
        node = view.leaders.get(tp, -1)
        if node < 0:
            self._view = None
            raise _Retry(f"no leader for {tp[0]}[{tp[1]}] yet")
        return node

    async def _describe(self, topics: Iterable[str]) -> ClusterView:
        """Metadata of `topics`, waiting (and saying why) while a count is wrong."""
        wanted = sorted(set(topics))
        since = time.monotonic()
        while True:
            view = await self.link.describe(wanted)
            wrong = {t: view.partitions.get(t) for t in wanted
                     if view.partitions.get(t) != ALL_TOPICS[t]}
            if not wrong:
                self._view = view
                return view
            # A restarted embedded broker creates the topics within a second: only a count
            # that stays wrong is worth a warning.
            settled = time.monotonic() - since >= self.topic_grace_s
            for t, found in wrong.items() if settled else ():
                self._warn(f"topic {t}", (
                    f"station {self.station_id}: waiting for topic {t}: it has {found or 'no'} "
                    f"partition(s), linetrace needs {ALL_TOPICS[t]} (the embedded broker "
                    "auto-creates topics with 4; `linetrace broker` recreates them with the "
                    "right count at start)"))
            await asyncio.sleep(self.topic_poll_s)

    async def _confirm(self, view: ClusterView, conns: dict[int, Connection]) -> None:
        """Check that the broker behind `conns` still holds what it acknowledged to us;
        make what it lost pending again. Then trust these connections."""
        self.stats.confirmations += 1
        marks = await self.outbox.marks()
        if any(view.partitions.get(t) != ALL_TOPICS[t] for t, _ in marks):
            view = await self._describe({t for t, _ in marks} | set(view.partitions))
        lost: set[TopicPartition] = set()
        known = await self.outbox.cluster_id()
        why = "it does not hold them"
        if known is not None and view.cluster_id is not None and known != view.cluster_id:
            why = f"its cluster id is {view.cluster_id!r}, was {known!r}: a new broker"
            lost = set(marks)
        else:
            wanted: dict[int, dict[TopicPartition, int]] = defaultdict(dict)
            for tp, end in marks.items():
                wanted[self._leader(view, tp)][tp] = max(end - 1, 0)
            conns = {**conns, **await self.link.connections(set(wanted) - set(conns))}
            for node, at in wanted.items():
                found = await self.link.read_at(conns[node], at)
                for tp, offset in at.items():
                    f = found.get(tp)
                    if f is None or f.error not in (0, OFFSET_OUT_OF_RANGE):
                        raise _Retry(f"cannot read {tp[0]}[{tp[1]}] back to confirm it: "
                                     + ("no answer" if f is None else error_name(f.error)))
                    if f.error == OFFSET_OUT_OF_RANGE or f.high_watermark < marks[tp]:
                        lost.add(tp)
                    elif (ours := await self.outbox.value_at(tp, offset)) is not None \
                            and f.value != ours:
                        lost.add(tp)
        if lost:
            n = await self.outbox.replay(lost)
            self.stats.replayed += n
            names = [f"{t}[{p}]" for t, p in sorted(lost)]
            log.warning(
                "station %s: the broker lost what it acknowledged on %d partition(s) (%s%s; "
                "%s); resending %d retained event(s) in their original order before anything "
                "newer", self.station_id, len(names), ", ".join(names[:4]),
                " ..." if len(names) > 4 else "", why, n)
        elif marks:
            log.info("station %s: broker confirmed (%d partition(s) intact)", self.station_id,
                     len(marks))
        self._trusted = dict(conns)
