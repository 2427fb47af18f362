"""Partitions whose records stopped reaching the ledger although the broker holds more.

A worker writes a partition's records only from where the ledger stands (`BatchProcessor.gaps`
seeks back when records start past it). That check runs on records that arrive: if the
consumer itself has moved past the ledger's position with nothing left to fetch behind it (a
seek to Kafka's committed offsets when those ran ahead of the ledger, records Faust dropped for
a partition it had paused), no record arrives, nothing is checked, and the partition's tail
waits forever (seen once in a full CI run: a restarted worker stored nothing more for 120 s
after seeking two partitions back). The watch notices that from outside the stream: the
ledger's position of a partition has not moved for `after_s` while the broker's end offset is
past it. The worker then seeks the partition back to the ledger's position; what it reads
again that is already stored is skipped as duplicate, so a false alarm costs a re-read, never
data.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field

Key = tuple[str, int]

#: How long a partition's position in the ledger may stand still, with records waiting past
#: it on the broker, before the worker reads it again from the ledger's position. Several
#: batch windows and a rebalance (EMBEDDED_TIMING) fit in it; a DB outage does not count (the
#: worker cannot read the positions then).
STALL_AFTER_S = 10.0

#: A high watermark older than this (the last fetch answer for the partition) is not evidence:
#: the broker may be away, and the watch waits for it rather than guess.
FRESH_S = 5.0


@dataclass
class StallWatch:
    after_s: float = STALL_AFTER_S
    _since: dict[Key, tuple[int, float]] = field(default_factory=dict)  # position, when seen

    def reset(self) -> None:
        """Nothing known (the ledger could not be read): every wait starts over."""
        self._since.clear()

    def observe(self, now: float, stored: Mapping[Key, int], ends: Mapping[Key, int | None],
                busy: Collection[Key] = ()) -> dict[Key, int]:
        """The partitions to read again from the ledger's position, with that position.

        `stored`: the ledger's next offset per assigned partition; `ends`: the broker's end
        offset (high watermark) from a recent fetch answer, None when there is none (not
        fetched yet, the broker away); `busy`: partitions whose batch is in the writer now
        (a slow write is not a stall: they wait, without starting over). A partition is due
        when its position stood still for `after_s` with records past it; after a rewind it
        gets `after_s` again before the next."""
        due: dict[Key, int] = {}
        for key in list(self._since):
            if key not in stored:  # no longer assigned here
                del self._since[key]
        for key, position in stored.items():
            end = ends.get(key)
            seen = self._since.get(key)
            if end is None or end <= position or seen is None or seen[0] != position:
                self._since[key] = (position, now)  # caught up, moving or unknown: start over
                continue
            if now - seen[1] >= self.after_s and key not in busy:
                due[key] = position
                self._since[key] = (position, now)
        return due
