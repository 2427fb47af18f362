"""The plant's Merkle log in SQL (LEDGER.md): leaves, complete subtrees, head, checkpoints.

Leaves are appended by the batch writer inside the transaction that stores the events, under
a lock on the single `log_head` row (PostgreSQL: SELECT ... FOR UPDATE; SQLite: the
transaction already began with BEGIN IMMEDIATE), so two workers never assign the same index.
Every complete subtree's hash is stored as it is completed (`merkle.append_leaves`), which
makes the root and any proof O(log n) row reads, fetched in one query. Rows are only ever
inserted; `verify-ledger` recomputes everything from the leaf bytes to detect edits.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, LargeBinary, String, Table, Text
from sqlalchemy import Select, and_, bindparam, func, insert, or_, select, update
from sqlalchemy.orm import Mapped, Session, mapped_column

from linetrace.schemas.envelope import SYSTEM_SOURCE, Event
from linetrace.schemas.topics import LEAF_TOPICS, TOPIC_OF_TYPE

from .proof import merkle
from .proof.checkpoints import ConsistencyLink, write_checkpoints
from .db import Ledger
from .errors import LedgerError
from .proof.leaf import Leaf, cause_src, chain_of, station_src
from .models import Base, EventRow
from .proof.note import Checkpoint, Signer, VerifierKey, sign_checkpoint
from .records import Candidate
from .sql import in_values, insert_ignore

_CHUNK = 200  # terms per query: SQLite parses an OR chain as one expression of this depth


class LogCorrupted(LedgerError):
    """The stored log contradicts its own last checkpoint: it was edited."""

    code = "log.corrupted"


class LogHead(Base):
    """The one row every append locks: the log's size."""

    __tablename__ = "log_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)


class LogLeaf(Base):
    """A leaf's exact bytes, the event it was made from, and the chain it extends."""

    __tablename__ = "log_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    event_seq: Mapped[int] = mapped_column(BigInteger, unique=True)  # events.seq
    chain_topic: Mapped[str] = mapped_column(String(64))
    subject: Mapped[str] = mapped_column(String(128))
    data: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (Index("ix_log_leaves_chain", "subject", "chain_topic", "idx"),)


class LogSubtree(Base):
    """Hash of the complete subtree (level, idx); level 0 holds the leaf hashes."""

    __tablename__ = "log_subtrees"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogCheckpoint(Base):
    """A signed checkpoint and the consistency proof from the previous one."""

    __tablename__ = "log_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    root: Mapped[bytes] = mapped_column(LargeBinary)
    note: Mapped[str] = mapped_column(Text)
    created: Mapped[datetime]
    prev_size: Mapped[int | None] = mapped_column(BigInteger)
    consistency: Mapped[bytes] = mapped_column(LargeBinary)  # concatenated 32-byte hashes


def is_leaf_bearing(event: Event) -> bool:
    """CONTRACTS.md: events on line.events/receipts/stations, and every system event."""
    return event.source == SYSTEM_SOURCE or TOPIC_OF_TYPE.get(event.type) in LEAF_TOPICS


def leaf_for(c: Candidate, unit_prev: bytes | None) -> Leaf:
    ev = c.event
    if ev.source == SYSTEM_SOURCE and c.cause is not None:
        src = cause_src(c.cause)
    else:
        src = station_src(c.record.topic, c.record.partition, c.record.offset)
    return Leaf(ev.value, c.keyid, c.signature, unit_prev, src)


class SqlSubtrees:
    """`merkle.BatchSubtreeReader` over `log_subtrees`: one query for any set of rows."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, level: int, index: int) -> bytes:
        found = self.get_many([(level, index)])
        if (level, index) not in found:
            raise KeyError((level, index))
        return found[(level, index)]

    def get_many(self, keys: Sequence[merkle.SubtreeKey]) -> Mapping[merkle.SubtreeKey, bytes]:
        """One query per chunk: `level = L AND idx IN (...)` per level, OR'd (a batch's chain
        heads are all level 0, a frontier one per level)."""
        out: dict[merkle.SubtreeKey, bytes] = {}
        for i in range(0, len(keys), _CHUNK):
            by_level: dict[int, list[int]] = {}
            for level, idx in keys[i : i + _CHUNK]:
                by_level.setdefault(level, []).append(idx)
            rows = self.session.execute(
                select(LogSubtree.level, LogSubtree.idx, LogSubtree.hash).where(or_(*(
                    and_(LogSubtree.level == level,
                         in_values(self.session, LogSubtree.idx, idxs))
                    for level, idxs in sorted(by_level.items())))))
            out.update({(r[0], r[1]): r[2] for r in rows})
        return out


def lock_head(session: Session) -> int:
    """Take the log-head lock for this transaction; returns the current tree size."""
    q = select(LogHead.size).where(LogHead.id == 1)
    if session.get_bind().dialect.name == "postgresql":
        q = q.with_for_update()
    size = session.execute(q).scalar_one_or_none()
    if size is None:
        insert_ignore(session, LogHead.__table__, [{"id": 1, "size": 0}])  # type: ignore[arg-type]
        size = session.execute(q).scalar_one()
    return size


def tree_size(session: Session) -> int:
    return session.execute(select(LogHead.size).where(LogHead.id == 1)).scalar_one_or_none() or 0


def event_seqs(session: Session, keys: Sequence[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """events.seq of rows this transaction just stored (the writer keeps them in
    `session.info["event_seqs"]`), else one query."""
    known: dict[tuple[str, str], int] = session.info.get("event_seqs", {})
    out = {k: known[k] for k in keys if k in known}
    missing = [k for k in keys if k not in out]
    for i in range(0, len(missing), _CHUNK):
        part = missing[i : i + _CHUNK]
        rows = session.execute(select(EventRow.source, EventRow.event_id, EventRow.seq).where(
            EventRow.source.in_({k[0] for k in part}),
            EventRow.event_id.in_({k[1] for k in part})))
        out.update({(r[0], r[1]): r[2] for r in rows})
    return out


def chain_heads(session: Session, chains: Sequence[tuple[str, str]]
                ) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(topic, subject) -> (index, leaf hash) of the chain's last leaf, for those that exist."""
    last: dict[tuple[str, str], int] = {}
    for i in range(0, len(chains), _CHUNK):
        part = set(chains[i : i + _CHUNK])
        rows = session.execute(  # both INs use the (subject, chain_topic, idx) index
            select(LogLeaf.chain_topic, LogLeaf.subject, func.max(LogLeaf.idx))
            .where(in_values(session, LogLeaf.subject, sorted({s for _, s in part})),
                   LogLeaf.chain_topic.in_(sorted({t for t, _ in part})))
            .group_by(LogLeaf.chain_topic, LogLeaf.subject))
        last.update({(r[0], r[1]): r[2] for r in rows if (r[0], r[1]) in part})
    hashes = SqlSubtrees(session).get_many([(0, idx) for idx in last.values()])
    return {chain: (idx, hashes[(0, idx)]) for chain, idx in last.items()}


def append_events(session: Session, stored: Sequence[Candidate]) -> list[tuple[int, bytes]]:
    """Append the leaf-bearing events among `stored` to the log, under the head lock.

    Returns (index, leaf hash) of each leaf appended, in order.
    """
    items = [c for c in stored if is_leaf_bearing(c.event)]
    if not items:
        return []
    size = lock_head(session)
    session.flush()  # the events' rows get their seq
    seqs = event_seqs(session, [(c.event.source, c.event.id) for c in items])
    chains = list(dict.fromkeys(chain_of(c.event) for c in items))
    heads = {k: h for k, (_, h) in chain_heads(session, chains).items()}
    leaf_rows: list[dict[str, Any]] = []
    hashes: list[bytes] = []
    for n, c in enumerate(items):
        chain = chain_of(c.event)
        data = leaf_for(c, heads.get(chain)).encode()
        digest = merkle.leaf_hash(data)
        heads[chain] = digest
        hashes.append(digest)
        leaf_rows.append({"idx": size + n, "event_seq": seqs[(c.event.source, c.event.id)],
                          "chain_topic": chain[0], "subject": chain[1], "data": data})
    frontier = SqlSubtrees(session).get_many(merkle.root_keys(size))
    rows = merkle.append_leaves(size, hashes, lambda level, idx: frontier[(level, idx)])
    leaves: Table = LogLeaf.__table__  # type: ignore[assignment]
    subtrees: Table = LogSubtree.__table__  # type: ignore[assignment]
    # Core inserts (not the ORM's bulk path, which builds an insert command per row)
    session.execute(insert(leaves), leaf_rows)
    session.execute(insert(subtrees), [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in rows])
    session.execute(update(LogHead).where(LogHead.id == 1).values(size=size + len(items)))
    return [(size + n, h) for n, h in enumerate(hashes)]


# --- Roots and proofs --------------------------------------------------------------------------


def root_at(session: Session, size: int) -> bytes:
    return merkle.root(size, SqlSubtrees(session))


def inclusion(session: Session, index: int, size: int) -> list[bytes]:
    return merkle.inclusion_proof(index, size, SqlSubtrees(session))


def consistency(session: Session, size1: int, size2: int) -> list[bytes]:
    return merkle.consistency_proof(size1, size2, SqlSubtrees(session))


def leaves_of_events(session: Session, event_seqs: Sequence[int]) -> dict[int, tuple[int, bytes]]:
    """events.seq -> (leaf index, leaf bytes) for the events that bear leaves."""
    out: dict[int, tuple[int, bytes]] = {}
    for i in range(0, len(event_seqs), _CHUNK):
        rows = session.execute(select(LogLeaf.event_seq, LogLeaf.idx, LogLeaf.data)
                               .where(LogLeaf.event_seq.in_(event_seqs[i : i + _CHUNK])))
        out.update({r[0]: (r[1], r[2]) for r in rows})
    return out


def event_leaf(session: Session, event_id: str, *, source: str | None = None,
               subject: str | None = None) -> LogLeaf | None:
    """The leaf of an event, by its id and its source or subject (None: not in the log yet)."""
    shape = (source is not None, subject is not None)
    q = _EVENT_LEAF.get(shape)
    if q is None:  # built once per shape: then only bound (a seal asks for several)
        built = (select(LogLeaf).join(EventRow, EventRow.seq == LogLeaf.event_seq)
                 .where(EventRow.event_id == bindparam("event_id")))
        if source is not None:
            built = built.where(EventRow.source == bindparam("source"))
        if subject is not None:
            built = built.where(EventRow.subject == bindparam("subject"))
        q = _EVENT_LEAF[shape] = built.order_by(LogLeaf.idx).limit(1)
    return session.scalars(q, {"event_id": event_id, "source": source,
                               "subject": subject}).first()


_EVENT_LEAF: dict[tuple[bool, bool], Select[LogLeaf]] = {}


def chain_leaves(session: Session, topic: str, subject: str, upto: int | None = None
                 ) -> list[LogLeaf]:
    """A chain's leaves in log order (up to index `upto`, inclusive)."""
    q = select(LogLeaf).where(LogLeaf.subject == subject, LogLeaf.chain_topic == topic)
    if upto is not None:
        q = q.where(LogLeaf.idx <= upto)
    return list(session.scalars(q.order_by(LogLeaf.idx)))


# --- Checkpoints -------------------------------------------------------------------------------


def _split_hashes(blob: bytes) -> list[bytes]:
    return [blob[i : i + merkle.HASH_SIZE] for i in range(0, len(blob), merkle.HASH_SIZE)]


def stored_checkpoints(session: Session, *, upto: int | None = None) -> list[LogCheckpoint]:
    q = select(LogCheckpoint).order_by(LogCheckpoint.size)
    if upto is not None:
        q = q.where(LogCheckpoint.size <= upto)
    return list(session.scalars(q))


def latest_checkpoint(session: Session) -> LogCheckpoint | None:
    return session.scalars(
        select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)).first()


def links_of(rows: Sequence[LogCheckpoint]) -> list[ConsistencyLink]:
    """The stored consistency proofs between successive checkpoints."""
    return [ConsistencyLink(r.prev_size, r.size, tuple(_split_hashes(r.consistency)))
            for r in rows if r.prev_size is not None]


def maybe_checkpoint(ledger: Ledger, signer: Signer, every_leaves: int = 1000,
                     every_seconds: float = 60.0, *, now: datetime | None = None
                     ) -> LogCheckpoint | None:
    """Sign and store a checkpoint if the log grew by `every_leaves` leaves, or grew at all and
    the last checkpoint is `every_seconds` old. For the worker to call after a batch commits,
    and for `linetrace checkpoint` (every_leaves=1). Returns the new checkpoint, or None.

    Runs under the head lock, and proves the new tree consistent with the previous checkpoint
    before signing: the log never signs two checkpoints that contradict each other.
    """
    now = now or datetime.now(UTC)
    with ledger.transaction() as session:
        size = lock_head(session)
        last = latest_checkpoint(session)
        if size == 0 or (last is not None and size <= last.size):
            return None
        if last is not None and size - last.size < every_leaves:
            created = last.created if last.created.tzinfo else last.created.replace(tzinfo=UTC)
            if (now - created).total_seconds() < every_seconds:
                return None
        root = root_at(session, size)
        proof: list[bytes] = []
        if last is not None:
            proof = consistency(session, last.size, size)
            try:
                merkle.verify_consistency(last.size, size, proof, last.root, root)
            except LedgerError as e:
                raise LogCorrupted(f"the stored log does not extend checkpoint {last.size} ({e}); "
                                   "refusing to sign; run `linetrace verify-ledger`") from None
        note = sign_checkpoint(Checkpoint(signer.name, size, root), signer)
        row = LogCheckpoint(size=size, root=root, note=note, created=now,
                            prev_size=last.size if last else None, consistency=b"".join(proof))
        session.add(row)
        return row


def export_checkpoints(ledger: Ledger, directory: Path, verifier: VerifierKey) -> int:
    """Write every stored checkpoint and the proofs between successive ones (proof/checkpoints.py
    layout) for customers and witnesses to keep; returns how many checkpoints."""
    with ledger.reader() as session:
        rows = stored_checkpoints(session)
    return write_checkpoints(directory, verifier, [(r.size, r.note) for r in rows],
                             links_of(rows))
