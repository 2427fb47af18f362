"""The Merkle log in SQL: leaves appended by the writer, O(log n) proofs, checkpoints."""

from __future__ import annotations

import base64
import json
import random
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import rfc8785
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import event, select, update

from linetrace.ledger import log
from linetrace.ledger.proof import merkle
from linetrace.ledger.proof.checkpoints import read_checkpoints
from linetrace.ledger.db import Ledger
from linetrace.ledger.log import LogCorrupted, LogLeaf, LogSubtree
from linetrace.ledger.models import EventRow
from linetrace.ledger.proof.note import open_checkpoint
from linetrace.ledger.records import BatchOutcome, Candidate, SourceRecord
from linetrace.ledger.proof.leaf import Leaf, parse_leaf
from linetrace.ledger.writer import write_batch
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event
from linetrace.schemas.examples import EXAMPLE_STATION_KEY, example_event

from .test_log_line import SIGNER, line, station_candidates


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    lg = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield lg
    lg.close()


def write_in_random_batches(ledger: Ledger, cands: list[Candidate], seed: int = 1) -> None:
    rng = random.Random(seed)
    i = 0
    while i < len(cands):
        n = rng.randint(1, 30)
        assert not write_batch(ledger, cands[i : i + n]).rejections
        i += n


def all_leaves(ledger: Ledger) -> list[bytes]:
    with ledger.reader() as s:
        return list(s.scalars(select(LogLeaf.data).order_by(LogLeaf.idx)))


def test_root_and_proofs_from_sql_match_the_in_memory_tree(ledger: Ledger) -> None:
    write_in_random_batches(ledger, station_candidates(line(2)))
    data = all_leaves(ledger)
    tree = merkle.MemoryTree.from_data(data)
    rng = random.Random(3)
    with ledger.reader() as s:
        n = log.tree_size(s)
        assert n == len(data) == tree.size > 100
        assert log.root_at(s, n) == tree.root()
        for _ in range(40):
            size = rng.randint(1, n)
            index = rng.randrange(size)
            proof = log.inclusion(s, index, size)
            assert proof == tree.inclusion_proof(index, size)
            merkle.verify_inclusion(merkle.leaf_hash(data[index]), index, size, proof,
                                    tree.root(size))
            m = rng.randint(1, size)
            cproof = log.consistency(s, m, size)
            merkle.verify_consistency(m, size, cproof, tree.root(m), tree.root(size))


def test_a_proof_costs_one_query_whatever_the_tree_size(ledger: Ledger) -> None:
    write_in_random_batches(ledger, station_candidates(line(2)))
    statements: list[str] = []
    event.listen(ledger.engine, "before_cursor_execute",
                 lambda *a: statements.append(a[2]))
    with ledger.reader() as s:
        n = log.tree_size(s)
        statements.clear()
        log.inclusion(s, 5, n)
        log.consistency(s, 7, n)
        log.root_at(s, n)
    assert len(statements) == 3


def test_leaf_is_the_jcs_of_the_exact_value_signature_chain_link_and_kafka_position(
        ledger: Ledger) -> None:
    cands = station_candidates(line(1))[:40]
    write_batch(ledger, cands)
    data = all_leaves(ledger)
    first = json.loads(data[0])
    c = cands[0]
    assert first == {"v": 1, "value": base64.b64encode(c.event.value).decode(),
                     "keyid": c.keyid, "signature": base64.b64encode(c.signature).decode(),
                     "unit_prev": None, "src": {"topic": c.record.topic,
                                                "partition": c.record.partition,
                                                "offset": c.record.offset}}
    assert rfc8785.dumps(first) == data[0]
    previous: dict[str, bytes] = {}
    for raw in data:
        leaf = parse_leaf(raw)
        subject = decode_event(leaf.value).subject
        assert leaf.unit_prev == previous.get(subject)
        previous[subject] = merkle.leaf_hash(raw)


def test_telemetry_is_stored_but_bears_no_leaf(ledger: Ledger) -> None:
    value = example_event("burnin.telemetry")
    kid, sig = signing.read_signature(signing.sign_value(value, EXAMPLE_STATION_KEY))
    cand = Candidate(SourceRecord("line.telemetry", 0, 0, b"SRV-S7-000001", value),
                     decode_event(value), kid, sig)
    assert len(write_batch(ledger, [cand]).stored) == 1
    assert all_leaves(ledger) == []


def test_concurrent_writers_never_share_a_leaf_index(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    cands = station_candidates(line(2))
    ledgers = [Ledger(url), Ledger(url)]
    # Two workers never share a partition: each owns half of them (sharing one, a station's
    # numbers could be written out of order and rightly quarantined as seq.reordered).
    halves = [[c for c in cands if (c.record.partition % 4 == 3) == (i == 0)] for i in range(2)]
    assert all(sum(c.record.topic == "line.events" for c in h) > 50 for h in halves)
    outcomes: list[list[BatchOutcome]] = [[], []]
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            for k in range(0, len(halves[i]), 5):
                outcomes[i].append(write_batch(ledgers[i], halves[i][k : k + 5]))
        except BaseException as e:  # noqa: BLE001 - a thread's exception is reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i in range(2):  # what each writer put in is what it stored: nothing refused or lost
        assert [r.code for o in outcomes[i] for r in o.rejections] == []
        assert sum(o.duplicates for o in outcomes[i]) == 0
        assert [c.event.id for o in outcomes[i] for c in o.stored] == [
            c.event.id for c in halves[i]]
    data = all_leaves(ledgers[0])
    with ledgers[0].reader() as s:
        assert sorted(s.scalars(select(EventRow.event_id))) == sorted(c.event.id for c in cands)
        bearing = [e for e in s.scalars(select(EventRow))
                   if log.is_leaf_bearing(decode_event(e.value))]
        assert len(data) == len(bearing) > 100
        assert sorted(decode_event(parse_leaf(d).value).id for d in data) == sorted(
            e.event_id for e in bearing)  # one leaf per event: no index shared, none lost
        assert log.root_at(s, len(data)) == merkle.MemoryTree.from_data(data).root()
    for lg in ledgers:
        lg.close()


def test_checkpoints_every_n_leaves_or_t_seconds_each_consistent_with_the_last(
        ledger: Ledger, tmp_path: Path) -> None:
    cands = station_candidates(line(2))
    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    write_batch(ledger, cands[:30])
    first = log.maybe_checkpoint(ledger, SIGNER, every_leaves=50, every_seconds=60, now=t0)
    assert first is not None and first.size == 30 and first.prev_size is None
    write_batch(ledger, cands[30:40])
    assert log.maybe_checkpoint(ledger, SIGNER, 50, 60, now=t0 + timedelta(seconds=10)) is None
    second = log.maybe_checkpoint(ledger, SIGNER, 50, 60, now=t0 + timedelta(seconds=61))
    assert second is not None and (second.prev_size, second.size) == (30, 40)
    write_batch(ledger, cands[40:95])
    third = log.maybe_checkpoint(ledger, SIGNER, 50, 60, now=t0 + timedelta(seconds=62))
    assert third is not None and third.size == 95
    assert log.maybe_checkpoint(ledger, SIGNER, 1, 0, now=t0 + timedelta(hours=1)) is None
    cp = open_checkpoint(third.note, SIGNER.verifier)
    assert (cp.origin, cp.size) == (SIGNER.name, 95)

    assert log.export_checkpoints(ledger, tmp_path / "export", SIGNER.verifier) == 3
    checkpoints, links = read_checkpoints(tmp_path / "export", SIGNER.verifier)
    assert [c.size for c in checkpoints] == [30, 40, 95]
    assert [(k.size1, k.size2) for k in links] == [(30, 40), (40, 95)]
    roots = {c.size: c.root for c in checkpoints}
    for k in links:
        merkle.verify_consistency(k.size1, k.size2, k.proof, roots[k.size1], roots[k.size2])
    assert (tmp_path / "export" / "verifier-key.txt").read_text().strip() == str(SIGNER.verifier)


def test_no_checkpoint_is_signed_over_a_log_edited_since_the_last(ledger: Ledger) -> None:
    cands = station_candidates(line(1))
    write_batch(ledger, cands[:20])
    assert log.maybe_checkpoint(ledger, SIGNER, 1, 0) is not None
    write_batch(ledger, cands[20:30])
    with ledger.transaction() as s:  # someone rewrites an old subtree row
        s.execute(update(LogSubtree).where(LogSubtree.level == 4, LogSubtree.idx == 0)
                  .values(hash=b"\x00" * 32))
    with pytest.raises(LogCorrupted):
        log.maybe_checkpoint(ledger, SIGNER, 1, 0)


@settings(max_examples=200, deadline=None)
@given(value=st.binary(max_size=64), keyid=st.text(max_size=20),
       prev=st.none() | st.binary(min_size=32, max_size=32),
       src=st.one_of(
           st.fixed_dictionaries({"cause": st.text(max_size=40)}),
           st.fixed_dictionaries({"topic": st.text(max_size=20),
                                  "partition": st.none() | st.integers(-5, 2**31),
                                  "offset": st.none() | st.integers(0, 2**53 - 1)})))
def test_leaf_encoding_is_exactly_rfc8785_whatever_the_strings(
        value: bytes, keyid: str, prev: bytes | None, src: dict[str, object]) -> None:
    leaf = Leaf(value, keyid, b"\x07" * 64, prev, src)  # type: ignore[arg-type]
    data = leaf.encode()
    assert data == rfc8785.dumps(json.loads(data))
    assert parse_leaf(data) == leaf
