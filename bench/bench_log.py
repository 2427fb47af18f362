"""The Merkle log (issue 5, Bench): proofs at 1 M leaves, and what appending costs the writer.

For SQLite (temporary file) and PostgreSQL (fresh schema, dropped afterwards):

- a log of `--leaves` leaves is seeded (subtree rows computed in memory, bulk-inserted), then
  inclusion-proof generation through `log.inclusion` (one query of O(log n) rows; goal p99
  < 5 ms), its verification, and consistency-proof generation are timed over random leaves;
- the batch writer stores `--events` signed events with the log, and again with the log append
  switched off; the time spent inside `append_events` (head lock, hashing, inserts) is set
  beside plain executemany inserts of exactly the same leaf and subtree rows.

    .venv/bin/python -m bench.bench_log                    # 1,000,000 leaves
    .venv/bin/python -m bench.bench_log --leaves 100000    # smoke run
"""

from __future__ import annotations

import argparse
import hashlib
import random
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import delete, insert, select

if __package__ in (None, ""):  # run as a script: make `bench` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from linetrace.ledger import log, writer  # noqa: E402
from linetrace.ledger.proof import merkle  # noqa: E402
from linetrace.ledger.db import Ledger  # noqa: E402
from linetrace.ledger.log import LogHead, LogLeaf, LogSubtree  # noqa: E402
from linetrace.ledger.records import Candidate  # noqa: E402

from bench import measure, writer_load  # noqa: E402

PG_DEFAULT = "postgresql://postgres@127.0.0.1:5432/test"


@contextmanager
def databases(pg: str, tmp: Path, name: str) -> Iterator[list[tuple[str, str]]]:
    """(label, url) of a fresh SQLite file and, if reachable, a fresh PostgreSQL schema."""
    dbs = [("sqlite", f"sqlite:///{tmp / f'{name}.db'}")]
    schema = f"bench_log_{uuid.uuid4().hex[:10]}"
    conn = None
    if pg:
        try:
            conn = psycopg.connect(pg, autocommit=True, connect_timeout=3)
            conn.execute(f"CREATE SCHEMA {schema}")
            dbs.append(("postgresql", f"{pg}?options=-csearch_path%3D{schema}"))
        except psycopg.Error as e:
            print(f"(PostgreSQL skipped: {e})")
    try:
        yield dbs
    finally:
        if conn is not None:
            conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()


def seed_tree(ledger: Ledger, leaves: int) -> merkle.MemoryTree:
    """A log of `leaves` synthetic leaf hashes: subtree rows and head (proofs need no more)."""
    t = time.perf_counter()
    tree = merkle.MemoryTree(hashlib.sha256(i.to_bytes(8, "big")).digest() for i in range(leaves))
    rows = [{"level": lv, "idx": ix, "hash": tree.get(lv, ix)}
            for lv in range(leaves.bit_length()) for ix in range(leaves >> lv)]
    built = time.perf_counter() - t
    with ledger.transaction() as s:
        for i in range(0, len(rows), 50_000):
            s.execute(insert(LogSubtree), rows[i : i + 50_000])
        s.execute(insert(LogHead), [{"id": 1, "size": leaves}])
    print(f"  seeded {leaves:,} leaves ({len(rows):,} subtree rows): hashing {built:.1f} s, "
          f"insert {time.perf_counter() - t - built:.1f} s")
    return tree


def proofs(ledger: Ledger, tree: merkle.MemoryTree, samples: int) -> dict[str, measure.Latency]:
    n = tree.size
    rng = random.Random(5)
    picks = [rng.randrange(n) for _ in range(samples)]
    olds = [rng.randint(1, n - 1) for _ in range(samples)]
    root = tree.root()
    made: dict[int, list[bytes]] = {}
    with ledger.reader() as s:
        for i in picks[:50]:  # warm the connection and the cache
            log.inclusion(s, i, n)

        def gen(i: int) -> None:
            made[i] = log.inclusion(s, i, n)

        gen_t = timed(picks, gen)
        cons_t = timed(olds, lambda m: log.consistency(s, m, n))
    leaf_hashes = tree.leaf_hashes
    ver_t = timed(picks, lambda i: merkle.verify_inclusion(leaf_hashes[i], i, n, made[i], root))
    return {"inclusion proof, generate": measure.latency(gen_t),
            "inclusion proof, verify": measure.latency(ver_t),
            "consistency proof, generate": measure.latency(cons_t)}


def timed(keys: Sequence[int], fn: Callable[[int], Any]) -> list[float]:
    out = []
    for k in keys:
        t = time.perf_counter()
        fn(k)
        out.append(time.perf_counter() - t)
    return out


def write_all(ledger: Ledger, cands: Sequence[Candidate], batch: int) -> float:
    """Events/s of the batch writer, without system events (no plant context): the log's own
    cost, not the HBOMs' (sealing needs the log, so it cannot run in the comparison)."""
    t = time.perf_counter()
    for n in range(0, len(cands), batch):
        out = writer.write_batch(ledger, cands[n : n + batch])
        if out.rejections:
            raise RuntimeError(f"writer rejected bench events: {out.rejections[0].message}")
    return len(cands) / (time.perf_counter() - t)


def append_rates(url_log: str, url_plain: str, cands: Sequence[Candidate], batch: int,
                 keys_dir: Path) -> list[tuple[str, float]]:
    """Writer events/s with and without the log; append_events vs plain inserts, leaves/s."""
    spent = [0.0]
    real = log.append_events

    def timed_append(session: Any, stored: Sequence[Candidate]) -> list[tuple[int, bytes]]:
        session.flush()  # the writer's own pending rows are not the log's cost
        t = time.perf_counter()
        try:
            return real(session, stored)
        finally:
            spent[0] += time.perf_counter() - t

    def no_log(session: Any, stored: Sequence[Candidate]) -> list[tuple[int, bytes]]:
        return []

    with_log, without = Ledger(url_log), Ledger(url_plain)
    writer_load.enroll(with_log, keys_dir)
    writer_load.enroll(without, keys_dir)
    try:
        log.append_events = timed_append
        a = write_all(with_log, cands, batch)
        log.append_events = no_log
        b = write_all(without, cands, batch)
    finally:
        log.append_events = real
    with with_log.reader() as s:
        leaves = [dict(r._mapping) for r in s.execute(select(*LogLeaf.__table__.columns))]
        subtrees = [dict(r._mapping) for r in s.execute(select(*LogSubtree.__table__.columns))]
    with without.transaction() as s:  # enrolment appended leaves before the switch-off
        s.execute(delete(LogLeaf))
        s.execute(delete(LogSubtree))
    t = time.perf_counter()
    for i in range(0, len(leaves), batch):  # the same rows, same batches, no lock, no hashing
        lo, hi = i, i + batch
        with without.transaction() as s:
            s.execute(insert(LogLeaf), leaves[lo:hi])
            part = [r for r in subtrees if lo <= ((r["idx"] + 1) << r["level"]) - 1 < hi]
            if part:
                s.execute(insert(LogSubtree), part)
    plain = time.perf_counter() - t
    with_log.close()
    without.close()
    n = len(leaves)
    return [("writer with the log, events/s", a),
            ("writer without the log, events/s", b),
            ("append_events under the head lock, leaves/s", n / spent[0]),
            ("plain inserts of the same leaf + subtree rows, leaves/s", n / plain)]


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--leaves", type=int, default=1_000_000)
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--events", type=int, default=10_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--pg", default=PG_DEFAULT, help="PostgreSQL URL ('' to skip)")
    args = ap.parse_args(argv)
    cands = writer_load.candidates(0, 200, args.events, 50)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        with databases(args.pg, tmp, "proofs") as dbs:
            for label, url in dbs:
                print(f"{label}: proofs in a log of {args.leaves:,} leaves "
                      f"({args.samples} random leaves; p50 / p99 ms)")
                ledger = Ledger(url)
                tree = seed_tree(ledger, args.leaves)
                for what, lat in proofs(ledger, tree, args.samples).items():
                    print(f"  {what:<34} {lat}")
                ledger.close()
        with databases(args.pg, tmp, "log") as logs, databases(args.pg, tmp, "plain") as plains:
            for (label, url_log), (_, url_plain) in zip(logs, plains, strict=True):
                print(f"{label}: appending {len(cands):,} events in batches of {args.batch} "
                      "(one writer)")
                for what, rate in append_rates(url_log, url_plain, cands, args.batch,
                                               tmp / f"keys-{label}"):
                    print(f"  {what:<56} {rate:>10,.0f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
