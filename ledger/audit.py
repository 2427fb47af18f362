"""`linetrace verify-ledger`: check the whole database against its own leaves and checkpoints.

The leaves are the record; everything else is checked against them:
- the tree is recomputed from the leaf bytes (O(n)) and compared with every stored subtree
  row, the head, every stored checkpoint (signature, root, consistency proof) and every
  checkpoint held elsewhere (`--checkpoints DIR`): a log rewritten and re-signed with the
  plant key still disagrees with checkpoints customers already hold;
- each leaf must match its `events` row (bytes, key id, signature, source position) and every
  leaf-bearing event row must have a leaf;
- the genealogy tables, the people (`users`, `user_keys`, `console_keys`) and the holds (`holds`,
  `hold_approvals`, `hold_units`) are rebuilt from the leaf values into a scratch in-memory
  SQLite with the writer's own projections and compared row by row on natural keys (surrogate
  ids differ between databases), so an edited, inserted or deleted row is reported by table
  and key; a `hold_units` row the route stage added (a unit that installed a part of a held
  lot or MPN) is not a projection of a leaf, and must instead be justified by its install
  leaf;
- they are rebuilt again with the partitions read one after another, in ascending and then in
  descending order (each partition's events in their own order, keys and system events
  first): the genealogy must be a function of the events, never of the order in which the
  worker happened to consume partitions, so any difference is reported (`order`);
- every sealed HBOM must still hash to what its `unit.sealed` leaf says, and every pending
  system event must still be waiting for an event the ledger does not hold.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, inspect, select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event, parse_time
from linetrace.schemas.topics import LEAF_TOPICS, STATIONS, TOPIC_OF_TYPE

from . import telemetry_store
from .proof import merkle
from .proof.checkpoints import read_checkpoints
from .db import Ledger
from .errors import LedgerError
from .log import LogCheckpoint, LogHead, LogLeaf, LogSubtree
from .models import (
    Base,
    EventRow,
    Firmware,
    Hold,
    HoldApproval,
    HoldUnit,
    Install,
    Lot,
    LotSerial,
    Measurement,
    Operation,
    Station,
    StationKey,
    TestRun,
    Unit,
    User,
    UserKey,
)
from .proof.note import VerifierKey, open_checkpoint
from .pending import PendingSystemEvent, PendingWait
from .projections import project, settle
from .verdicts import BurninVerdictRow
from .console_key import ConsoleKey
from .sql import in_values
from .system_events import SealedHbom
from .proof.leaf import Leaf, LeafMalformed, Src, chain_of, parse_leaf
from .proof.statements import audit_statements


@dataclass(frozen=True)
class Finding:
    kind: str  # edited | inserted | deleted | invalid | order
    table: str
    key: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.table} [{self.key}]: {self.detail}"


@dataclass
class AuditReport:
    tree_size: int = 0
    root: bytes = merkle.EMPTY_ROOT
    checkpoints: int = 0
    held_checkpoints: int = 0
    rows_compared: int = 0
    findings: list[Finding] = field(default_factory=list)


def _aware(v: Any) -> Any:
    if isinstance(v, datetime):
        return (v if v.tzinfo else v.replace(tzinfo=UTC)).astimezone(UTC)
    return v


def _same_src(src: Src, ev: EventRow) -> bool:
    if "cause" in src:
        return src["cause"] == ev.cause
    return (src["topic"], src["partition"], src["offset"]) == (ev.topic, ev.partition, ev.offset)


def _audit_log(s: Session, rep: AuditReport) -> tuple[merkle.MemoryTree, list[LogLeaf]]:
    add = rep.findings.append
    tree = merkle.MemoryTree()
    heads: dict[tuple[str, str], bytes] = {}
    events = {r.seq: r for r in s.scalars(select(EventRow))}
    leaves = list(s.scalars(select(LogLeaf).order_by(LogLeaf.idx)))
    with_leaf: set[int] = set()
    for row in leaves:
        if row.idx != tree.size:
            add(Finding("deleted", "log_leaves", f"idx={tree.size}",
                        f"leaves {tree.size}..{row.idx - 1} are missing"))
        digest = merkle.leaf_hash(row.data)
        tree.append(digest)
        where = f"idx={row.idx}"
        try:
            leaf = parse_leaf(row.data)
            event = decode_stored_event(leaf.value)
        except (LeafMalformed, LedgerError, ValueError) as e:
            add(Finding("edited", "log_leaves", where, f"leaf bytes are not a valid leaf: {e}"))
            continue
        chain = chain_of(event)
        if (row.chain_topic, row.subject) != chain:
            add(Finding("edited", "log_leaves", where, f"chain columns are not {chain}"))
        if leaf.unit_prev != heads.get(chain):
            add(Finding("edited", "log_leaves", where, "unit_prev does not link to the chain's "
                        "previous leaf"))
        heads[chain] = digest
        ev = events.get(row.event_seq)
        with_leaf.add(row.event_seq)
        if ev is None:
            add(Finding("deleted", "events", f"seq={row.event_seq}", f"leaf {row.idx}'s event row "
                        "is gone"))
        elif (ev.value, ev.keyid, ev.signature, ev.event_id) != (
                leaf.value, leaf.keyid, leaf.signature, event.id) or not _same_src(leaf.src, ev):
            add(Finding("edited", "events", f"seq={ev.seq} {ev.source}/{ev.event_id}",
                        f"row differs from leaf {row.idx}"))
    for ev in events.values():
        bearing = ev.source == SYSTEM_SOURCE or TOPIC_OF_TYPE.get(ev.type) in LEAF_TOPICS
        if bearing and ev.seq not in with_leaf:
            add(Finding("inserted", "events", f"seq={ev.seq} {ev.source}/{ev.event_id}",
                        f"{ev.type} has no leaf in the log"))
        why = telemetry_store.digest_problem(ev.value, ev.digest)
        if why is not None:
            add(Finding("edited", "events", f"seq={ev.seq} {ev.source}/{ev.event_id}", why))
    head = s.scalar(select(LogHead.size).where(LogHead.id == 1)) or 0
    if head != tree.size:
        add(Finding("edited", "log_head", "id=1", f"size {head}, the leaves make {tree.size}"))
    stored = {(r.level, r.idx): r.hash for r in s.scalars(select(LogSubtree))}
    computed = tree.get_many([k for k in stored])
    for key, h in stored.items():
        if key not in computed:
            add(Finding("inserted", "log_subtrees", f"level={key[0]} idx={key[1]}",
                        "no such complete subtree in the recomputed tree"))
        elif computed[key] != h:
            add(Finding("edited", "log_subtrees", f"level={key[0]} idx={key[1]}",
                        "hash differs from the recomputed one"))
    n = tree.size
    missing = [(lv, ix) for lv in range(n.bit_length()) for ix in range(n >> lv)
               if (lv, ix) not in stored]
    for lv, ix in missing[:20]:
        add(Finding("deleted", "log_subtrees", f"level={lv} idx={ix}", "complete-subtree row "
                    "is missing"))
    rep.tree_size, rep.root = tree.size, tree.root()
    return tree, leaves


def _root_at(tree: merkle.MemoryTree, size: int) -> bytes | None:
    return tree.root(size) if size <= tree.size else None


def _audit_checkpoints(s: Session, tree: merkle.MemoryTree, verifier: VerifierKey,
                       held: Path | None, rep: AuditReport) -> None:
    add = rep.findings.append
    for row in s.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size)):
        rep.checkpoints += 1
        where = f"size={row.size}"
        try:
            cp = open_checkpoint(row.note, verifier)
        except LedgerError as e:
            add(Finding("invalid", "log_checkpoints", where, str(e)))
            continue
        if cp.size != row.size or cp.root != row.root:
            add(Finding("edited", "log_checkpoints", where, "size/root columns differ from the "
                        "signed note"))
        if _root_at(tree, cp.size) != cp.root:
            add(Finding("invalid", "log_checkpoints", where, "the leaves no longer produce this "
                        "signed root: the log was edited after it was checkpointed"))
    if held is None:
        return
    try:
        checkpoints, _ = read_checkpoints(held, verifier)
    except LedgerError as e:
        add(Finding("invalid", "held-checkpoints", str(held), str(e)))
        return
    for cp in checkpoints:
        rep.held_checkpoints += 1
        if cp.size > tree.size:
            add(Finding("deleted", "log_leaves", f"idx>={tree.size}", f"a held checkpoint has "
                        f"{cp.size} leaves: the log was truncated"))
        elif _root_at(tree, cp.size) != cp.root:
            add(Finding("invalid", "held-checkpoints", f"size={cp.size}", "the stored log does "
                        "not produce this root that was signed and exported earlier: the log "
                        "was rewritten (and possibly re-signed)"))


# --- Genealogy ---------------------------------------------------------------------------------

KeyFn = Callable[[Any], tuple[Any, ...]]
ROUTE_COLUMNS = ("route_product", "route_revision", "route_sha256")


def _rows(s: Session, model: type[Base], key: KeyFn, skip: Iterable[str],
          where: Callable[[Any], bool] = lambda r: True) -> dict[tuple[Any, ...], dict[str, Any]]:
    table = inspect(model).local_table
    cols = [c.key for c in table.columns if c.key not in skip]
    out: dict[tuple[Any, ...], dict[str, Any]] = {}
    seen: dict[tuple[Any, ...], int] = {}
    for r in s.scalars(select(model).order_by(*inspect(model).primary_key)):
        if not where(r):
            continue
        base = key(r)
        n = seen.get(base, 0)  # rows sharing a natural key are told apart by their order
        seen[base] = n + 1
        out[(*base, n)] = {c: _aware(getattr(r, c)) for c in cols}
    return out


def _tables(s: Session, plant_keyid: str) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    tests = {t.id: t.event_id for t in s.scalars(select(TestRun))}
    placed = {h: e for h, e in s.execute(select(Hold.hold_id, Hold.placed_event))}
    return {
        # The route a unit started on comes from the route files in force then (the worker's
        # LINETRACE_ROUTES), not from its events: the leaves cannot say it.
        "units": _rows(s, Unit, lambda r: (r.serial,), ROUTE_COLUMNS),
        "operations": _rows(s, Operation, lambda r: (r.serial, r.transaction_id), ("id",)),
        "installs": _rows(s, Install, lambda r: (r.installed_event,), ("id",)),
        "tests": _rows(s, TestRun, lambda r: (r.event_id,), ("id",)),
        "measurements": _rows(s, Measurement, lambda r: (tests.get(r.test_id),),
                              ("id", "test_id")),
        "firmware": _rows(s, Firmware, lambda r: (r.event_id,), ("id",)),
        "lots": _rows(s, Lot, lambda r: (r.lot,), ()),
        "lot_serials": _rows(s, LotSerial, lambda r: (r.lot, r.serial), ()),
        "stations": _rows(s, Station, lambda r: (r.station_id,), (),
                          lambda r: r.station_id != SYSTEM_SOURCE),
        "station_keys": _rows(s, StationKey, lambda r: (r.keyid,), (),
                              lambda r: not (r.keyid == plant_keyid
                                             and r.station_id == SYSTEM_SOURCE)),
        "users": _rows(s, User, lambda r: (r.user_id,), ()),
        "user_keys": _rows(s, UserKey, lambda r: (r.keyid,), ()),
        "console_keys": _rows(s, ConsoleKey, lambda r: (r.keyid,), ()),
        "holds": _hold_rows(s),
        "hold_approvals": _rows(s, HoldApproval, lambda r: (r.hold_id, r.user_id), ()),
        "burnin_verdicts": _rows(s, BurninVerdictRow, lambda r: (r.event_id,), ()),
        # The units a hold named when placed (its hold.placed leaf's `units`). Rows the route
        # stage added later (an install from a held lot) are checked by `_audit_joined_units`.
        "hold_units": _rows(s, HoldUnit, lambda r: (r.hold_id, r.serial), (),
                            lambda r: r.event_id == placed.get(r.hold_id)),
    }


#: `holds` columns holding an `events.seq`. The replay numbers its events 1, 2, ... in leaf
#: order, while the ledger's `events.seq` also counts events that are not leaves (and gaps), so
#: the numbers cannot be compared; each is compared as the event it points to instead, which
#: both sides can say: a placed_seq edited to another position (moving a hold before or after
#: the events it should stop) is reported.
HOLD_SEQ_COLUMNS = ("placed_seq", "released_seq")


def _hold_rows(s: Session) -> dict[tuple[Any, ...], dict[str, Any]]:
    rows = _rows(s, Hold, lambda r: (r.hold_id,), ())
    seqs = sorted({v[c] for v in rows.values() for c in HOLD_SEQ_COLUMNS if v[c] is not None})
    at: dict[int, str] = {}
    for i in range(0, len(seqs), 400):
        at.update((seq, eid) for seq, eid in s.execute(select(EventRow.seq, EventRow.event_id)
                  .where(in_values(s, EventRow.seq, seqs[i:i + 400]))))
    for v in rows.values():
        for c in HOLD_SEQ_COLUMNS:
            if v[c] is not None:
                v[c] = f"seq of event {at[v[c]]}" if v[c] in at else f"seq {v[c]}, no event"
    return rows


Replayed = tuple[Event, Leaf]
_REBUILD_BATCH = 500  # events per settle, as the worker's batches (the result must not depend on it)


def _replayable(leaves: Iterable[LogLeaf]) -> list[Replayed]:
    out: list[Replayed] = []
    for row in leaves:
        try:
            leaf = parse_leaf(row.data)
            out.append((decode_stored_event(leaf.value), leaf))
        except (LeafMalformed, LedgerError, ValueError):
            continue  # already reported by the log audit
    return out


def partitions_in_turn(items: Sequence[Replayed], *, descending: bool) -> list[Replayed]:
    """The events as a worker would write them if it read the partitions one after another:
    keys and system events first (a station's key precedes its events), then each partition's
    events in their own order, the partitions in ascending or descending order."""
    def partition(item: Replayed) -> tuple[str, int] | None:
        src = item[1].src
        if "cause" in src or src.get("topic") == STATIONS:
            return None
        return str(src.get("topic")), int(src.get("partition") or 0)

    keyed = [(partition(i), i) for i in items]
    first = [i for p, i in keyed if p is None]
    rest = [(p, i) for p, i in keyed if p is not None]
    rest.sort(key=lambda pi: pi[0], reverse=descending)  # stable: each partition keeps its order
    return first + [i for _, i in rest]


def _rebuild(items: Iterable[Replayed]) -> Session:
    scratch = create_engine("sqlite://")
    Base.metadata.create_all(scratch)
    s = Session(scratch)
    now = datetime.now(UTC)
    for n, (event, leaf) in enumerate(items, 1):
        src = leaf.src
        s.add(EventRow(source=event.source, event_id=event.id, type=event.type,
                       subject=event.subject, time=parse_time(event.envelope.time),
                       stationseq=event.seq, topic=TOPIC_OF_TYPE.get(event.type, ""),
                       partition=src.get("partition"), offset=src.get("offset"),
                       cause=src.get("cause"), keyid=leaf.keyid, signature=leaf.signature,
                       value=leaf.value, recorded=now))
        project(s, event)
        if n % _REBUILD_BATCH == 0:
            settle(s)
    settle(s)
    s.flush()
    return s


def _derived(items: Iterable[Replayed], plant_keyid: str
             ) -> dict[str, dict[tuple[Any, ...], dict[str, Any]]]:
    scratch = _rebuild(items)
    try:
        return _tables(scratch, plant_keyid)
    finally:
        scratch.close()


def _diff(table: str, stored: dict[tuple[Any, ...], dict[str, Any]],
          derived: dict[tuple[Any, ...], dict[str, Any]], rep: AuditReport) -> None:
    add = rep.findings.append
    for key in stored.keys() | derived.keys():
        name = ", ".join(map(str, key[:-1])) + (f" #{key[-1]}" if key[-1] else "")
        got, want = stored.get(key), derived.get(key)
        if want is None:
            add(Finding("inserted", table, name, "row not derivable from the leaves"))
        elif got is None:
            add(Finding("deleted", table, name, "row the leaves produce is missing"))
        else:
            rep.rows_compared += 1
            changed = [f"{c}: {got[c]!r} in the table, {want[c]!r} from the leaves"
                       for c in want if got.get(c) != want[c]]
            if changed:
                add(Finding("edited", table, name, "; ".join(changed)))


def _diff_order(table: str, in_log_order: dict[tuple[Any, ...], dict[str, Any]],
                other: dict[tuple[Any, ...], dict[str, Any]], how: str, rep: AuditReport) -> None:
    """Rows the same leaves give differently when the partitions are read in turn."""
    for key in sorted(in_log_order.keys() | other.keys(), key=repr):
        got, want = other.get(key), in_log_order.get(key)
        if got == want:
            continue
        name = ", ".join(map(str, key[:-1])) + (f" #{key[-1]}" if key[-1] else "")
        if got is None or want is None:
            what = "only in log order" if got is None else f"only with partitions {how}"
        else:
            what = "; ".join(f"{c}: {want[c]!r} in log order, {got.get(c)!r}" for c in want
                             if got.get(c) != want[c])
        rep.findings.append(Finding("order", table, name, f"{what} (partitions read in turn, "
                                    f"{how}): the projection depends on the order in which "
                                    "partitions are consumed"))


def _audit_hboms(s: Session, rep: AuditReport) -> None:
    sealed = {e.event_id: e.value for e in s.scalars(
        select(EventRow).where(EventRow.type == "unit.sealed"))}
    for row in s.scalars(select(SealedHbom)):
        body = decode_stored_event(sealed[row.sealed_event]).body if row.sealed_event in sealed else None
        digest = hashlib.sha256(row.data).hexdigest()
        if not isinstance(body, b.UnitSealed) or body.hbom_sha256 != digest:
            rep.findings.append(Finding("edited", "hboms", f"sealed_event={row.sealed_event}",
                                        "HBOM bytes do not hash to the sealed SHA-256"))


def _joined_problem(s: Session, row: HoldUnit, hold: Hold | None) -> str | None:
    """Why a `hold_units` row not named by its hold.placed is not the route stage's join of a
    unit that installed a part of the held lot or MPN (None: it is). The stage joins the unit
    on its `materials.installed` event (`event_id`, at that event's time) when an item is of
    the held lot or MPN, or is a unit the hold already stops, and the hold was placed before
    the install."""
    if hold is None:
        return "no such hold"
    if hold.scope not in ("lot", "mpn"):
        return f"units join only lot and MPN holds; {hold.hold_id} holds {hold.scope} {hold.target}"
    rows = s.execute(select(EventRow.seq, EventRow.value).where(
        EventRow.event_id == row.event_id, EventRow.type == "materials.installed",
        EventRow.subject == row.serial, EventRow.source != SYSTEM_SOURCE)).all()
    if not rows:
        return f"event {row.event_id} is not a materials.installed event of {row.serial}"
    placed_at = s.scalar(select(EventRow.seq).where(EventRow.source == SYSTEM_SOURCE,
                                                    EventRow.event_id == hold.placed_event))
    named = set(s.scalars(select(HoldUnit.serial).where(HoldUnit.hold_id == hold.hold_id,
                                                        HoldUnit.serial != row.serial)))
    for seq, value in rows:
        event = decode_stored_event(value)
        body = event.body
        assert isinstance(body, b.MaterialsInstalled)
        if placed_at is None or seq < placed_at:
            continue
        if _aware(row.added) != parse_time(event.envelope.time):
            return f"added {row.added}, the install {row.event_id} was at {event.envelope.time}"
        if any((hold.scope == "lot" and i.lot == hold.target)
               or (hold.scope == "mpn" and i.mpn == hold.target)
               or (i.serial is not None and i.serial in named) for i in body.items):
            return None
    return (f"install {row.event_id} of {row.serial} installs nothing of {hold.scope} "
            f"{hold.target} (nor a unit the hold stops) after the hold was placed")


def _audit_joined_units(s: Session, rep: AuditReport) -> None:
    holds = {h.hold_id: h for h in s.scalars(select(Hold))}
    for row in s.scalars(select(HoldUnit).order_by(HoldUnit.hold_id, HoldUnit.serial)):
        hold = holds.get(row.hold_id)
        if hold is not None and row.event_id == hold.placed_event:
            continue  # compared with the replay of the hold.placed leaf
        why = _joined_problem(s, row, hold)
        if why is not None:
            rep.findings.append(Finding("inserted", "hold_units", f"{row.hold_id}, {row.serial}",
                                        f"row not derivable from the leaves: {why}"))
        else:
            rep.rows_compared += 1


def _audit_pending(s: Session, rep: AuditReport) -> None:
    """A pending system event must still be waiting: not written, and not everything it waits
    for already here (the system-events stage writes it in the batch that brings the last)."""
    have = {(r[0], r[1]) for r in s.execute(select(EventRow.subject, EventRow.event_id))}
    written = {r[0] for r in s.execute(select(EventRow.event_id).where(
        EventRow.source == SYSTEM_SOURCE))}
    waits: dict[str, list[tuple[str, str]]] = {}
    for w in s.scalars(select(PendingWait)):
        waits.setdefault(w.event_id, []).append((w.subject, w.awaited))
    for p in s.scalars(select(PendingSystemEvent)):
        where = f"{p.type} {p.subject} event_id={p.event_id}"
        if p.event_id in written:
            rep.findings.append(Finding("invalid", "pending_system_events", where,
                                        "the event is written but still listed as pending"))
        elif all(k in have for k in waits.get(p.event_id, [])):
            rep.findings.append(Finding("invalid", "pending_system_events", where,
                                        "every event it waits for is in the ledger, yet it was "
                                        "not written: the system-events stage failed on it "
                                        "(`stage_failures`; it retries) or this is a defect"))


def audit_ledger(ledger: Ledger, verifier: VerifierKey, plant_keyid: str,
                 held: Path | None = None) -> AuditReport:
    """Everything `verify-ledger` checks; findings are empty when the ledger is intact."""
    rep = AuditReport()
    with ledger.reader() as s:
        tree, leaves = _audit_log(s, rep)
        _audit_checkpoints(s, tree, verifier, held, rep)
        stored = _tables(s, plant_keyid)
        _audit_hboms(s, rep)
        _audit_joined_units(s, rep)
        _audit_pending(s, rep)
    items = _replayable(leaves)
    for p in audit_statements(event for event, _ in items):  # people's signatures, by the log
        rep.findings.append(Finding("invalid", "statements", f"{p.event_type} {p.subject} "
                                    f"event_id={p.event_id}", p.detail))
    derived = _derived(items, plant_keyid)
    for table, rows in stored.items():
        _diff(table, rows, derived[table], rep)
    for descending in (False, True):
        how = "descending" if descending else "ascending"
        other = _derived(partitions_in_turn(items, descending=descending), plant_keyid)
        for table, rows in derived.items():
            _diff_order(table, rows, other[table], how, rep)
    rep.findings.sort(key=lambda f: (f.table, f.key))
    return rep
