"""Evidence bundles: everything an auditor needs to check one sealed unit offline.

A bundle is a directory (the console zips it): the unit's leaves, those of the sub-assemblies
sealed with it, the `material.received` + `material.checked` leaves of every lot its parts came
from, the `hold.*` leaves of every hold on the unit, its sub-assemblies, its lots or its MPNs,
the people's `alert.*` leaves (acknowledged, shelved, ...) of every alert about the unit, its
sub-assemblies or its lots, the `user.*` leaves of every person who signed one of those (and
of the admins who enrolled them, back to the first admin), the `station.enrolled` leaves of every station that signed one
of those events, one
inclusion proof per leaf against one signed checkpoint, the sealed HBOM bytes, the previous
checkpoint with the consistency proof to this one, and a README. `linetrace verify` (proof/verify.py)
checks it with the plant's verifier key and nothing else. Layout: docs/evidence.md.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event
from linetrace.schemas.topics import EVENTS, RECEIPTS

from .proof import merkle
from .proof.checkpoints import ConsistencyLink, write_checkpoints
from .db import Ledger
from .errors import LedgerError
from .alerts.actions import alert_action_seqs
from .holds import hold_event_seqs
from .proof.hbom import as_built
from .proof.leaf import VERDICT_CHAIN, parse_leaf
from .log import (
    LogCheckpoint,
    LogLeaf,
    SqlSubtrees,
    chain_leaves,
    latest_checkpoint,
    links_of,
    maybe_checkpoint,
)
from .models import EventRow
from .proof.note import Signer
from .proof.statements import CONSOLE_TYPES, carried_statements
from .evidence_telemetry import telemetry_files
from .system_events import SealedHbom
from .proof.bundle import (
    CHECKPOINT,
    HBOM,
    HISTORY,
    LEAVES,
    MANIFEST,
    PROOFS,
    README,
    TELEMETRY,
    leaf_file,
    manifest_json,
    proof_file,
    readme,
    telemetry_file,
)


class NotSealed(LedgerError):
    """Evidence is only made for sealed units (the seal is what the bundle proves)."""

    code = "evidence.not_sealed"


class BundleExists(LedgerError):
    code = "evidence.exists"


@dataclass(frozen=True)
class EvidenceSummary:
    unit: str
    tree_size: int
    leaves: int
    directory: Path


def _decode(row: LogLeaf) -> Event:
    return decode_stored_event(parse_leaf(row.data).value)


def _prove(session: Session, indexes: Sequence[int], size: int) -> dict[int, list[bytes]]:
    """Inclusion proofs of many leaves with one query for all their rows."""
    keys = list(dict.fromkeys(k for i in indexes for k in merkle.inclusion_proof_keys(i, size)))
    rows = SqlSubtrees(session).get_many(keys)

    class Rows:
        def get(self, level: int, index: int) -> bytes:
            return rows[(level, index)]

    return {i: merkle.inclusion_proof(i, size, Rows()) for i in indexes}


def _collect(session: Session, unit: str, size: int) -> tuple[list[LogLeaf], bytes]:
    mine = [r for r in chain_leaves(session, EVENTS, unit) if r.idx < size]
    seals = [(r, e) for r in mine if isinstance((e := _decode(r)).body, b.UnitSealed)]
    if not seals:
        raise NotSealed(f"unit {unit} has no unit.sealed leaf in the checkpointed log: it is not "
                        "packed yet (or unknown; `linetrace units` lists units)")
    seal_row, seal = seals[-1]
    body = seal.body
    assert isinstance(body, b.UnitSealed)
    leaves = {r.idx: r for r in mine}
    # The unit's burn-in verdicts (a chain of their own: proof/leaf.py VERDICT_CHAIN).
    leaves.update({r.idx: r for r in chain_leaves(session, VERDICT_CHAIN, unit) if r.idx < size})
    # The seal covers the unit's chain up to the leaf it names (its unit.packed).
    head_idx = next((r.idx for r in mine if r.idx < seal_row.idx
                     and merkle.leaf_hash(r.data).hex() == body.chain_head), seal_row.idx - 1)
    chains: dict[str, list[Event]] = {unit: [_decode(r) for r in mine if r.idx <= head_idx]}
    for asm in body.assemblies:
        sub = chain_leaves(session, EVENTS, asm.serial)
        head = next((r for r in sub if merkle.leaf_hash(r.data).hex() == asm.chain_head), None)
        if head is None:
            raise LedgerError(f"sub-assembly {asm.serial}'s sealed chain head is not in the log; "
                              "run `linetrace verify-ledger`")
        upto = [r for r in sub if r.idx <= head.idx]
        leaves.update({r.idx: r for r in upto})
        chains[asm.serial] = [_decode(r) for r in upto]
    built = as_built(unit, chains)
    for lot in sorted({p.lot for p in built.parts if p.serial not in built.assemblies}):
        leaves.update({r.idx: r for r in chain_leaves(session, RECEIPTS, lot) if r.idx < size})
    # Every hold of the unit, its sub-assemblies and its lots (holds.py), with who signed it.
    held = hold_event_seqs(session, list(chains), {p.lot for p in built.parts},
                           {p.mpn for p in built.parts})
    holds = {r.idx: r for i in range(0, len(held), 400) for r in session.scalars(select(LogLeaf)
             .where(LogLeaf.event_seq.in_(held[i:i + 400]), LogLeaf.idx < size))}
    leaves.update(holds)
    # People's actions on the alerts about the unit, its sub-assemblies or its lots.
    acted = alert_action_seqs(session, list(chains), {p.lot for p in built.parts})
    alerts = {r.idx: r for i in range(0, len(acted), 400) for r in session.scalars(
        select(LogLeaf).where(LogLeaf.event_seq.in_(acted[i:i + 400]), LogLeaf.idx < size))}
    leaves.update(alerts)
    leaves.update(_people(session, [*holds.values(), *alerts.values()], size))
    sources = sorted({e.source for r in leaves.values() if (e := _decode(r)).source
                      != SYSTEM_SOURCE})
    enrolled = session.scalars(
        select(LogLeaf).join(EventRow, EventRow.seq == LogLeaf.event_seq)
        .where(EventRow.type.in_(["station.enrolled", "station.revoked"]),
               EventRow.subject.in_(sources),
               LogLeaf.idx < size))
    leaves.update({r.idx: r for r in enrolled})
    hbom = session.scalar(select(SealedHbom.data).where(SealedHbom.sealed_event == seal.id))
    if hbom is None:
        raise LedgerError(f"the HBOM sealed by {seal.id} is missing from `hboms`; run "
                          "`linetrace verify-ledger`")
    return [leaves[i] for i in sorted(leaves)], hbom


USER_TYPES = ("user.enrolled", "user.changed", "user.revoked", "user.removed")


def _people(session: Session, rows: Iterable[LogLeaf], size: int) -> dict[int, LogLeaf]:
    """The `user.*` leaves (up to `size`) of everyone who signed a statement in `rows`, and
    of everyone who signed theirs, back to the self-signed first admin: each person's whole
    user chain, so the `statements` check knows their keys, roles, revocations and removals
    at every point, and can check their enrolments too."""
    todo = {st.user for r in rows for st in carried_statements(_decode(r).body)}
    seen: set[str] = set()
    out: dict[int, LogLeaf] = {}
    while todo - seen:
        batch = sorted(todo - seen)
        seen |= set(batch)
        for row in session.scalars(
                select(LogLeaf).join(EventRow, EventRow.seq == LogLeaf.event_seq)
                .where(EventRow.source == SYSTEM_SOURCE, EventRow.type.in_(USER_TYPES),
                       EventRow.subject.in_(batch), LogLeaf.idx < size)):
            out[row.idx] = row
            todo |= {st.user for st in carried_statements(_decode(row).body)}
    if todo:  # the console keys' leaves, for statements the console attested
        for row in session.scalars(
                select(LogLeaf).join(EventRow, EventRow.seq == LogLeaf.event_seq)
                .where(EventRow.source == SYSTEM_SOURCE, EventRow.type.in_(CONSOLE_TYPES),
                       LogLeaf.idx < size)):
            out[row.idx] = row
    return out


def write_evidence(ledger: Ledger, unit: str, directory: Path, signer: Signer, *,
                   telemetry: bool = False) -> EvidenceSummary:
    """Write the evidence bundle of a sealed unit into `directory` (new or empty); with
    `telemetry`, also the raw telemetry of each burn-in run a `burnin.verdict` leaf commits."""
    if directory.exists() and any(directory.iterdir()):
        raise BundleExists(f"{directory} is not empty; choose a new directory for the bundle")
    maybe_checkpoint(ledger, signer, every_leaves=1, every_seconds=0)
    with ledger.reader() as session:
        cp = latest_checkpoint(session)
        if cp is None:
            raise NotSealed("the log is empty: nothing has been recorded yet")
        rows, hbom = _collect(session, unit, cp.size)
        proofs = _prove(session, [r.idx for r in rows], cp.size)
        prev = session.get(LogCheckpoint, cp.prev_size) if cp.prev_size is not None else None
        runs = telemetry_files(session, unit, [_decode(r) for r in rows]) if telemetry else {}
    (directory / LEAVES).mkdir(parents=True, exist_ok=True)
    (directory / PROOFS).mkdir(exist_ok=True)
    for r in rows:
        (directory / leaf_file(r.idx)).write_bytes(r.data)
        doc = {"index": r.idx, "tree_size": cp.size,
               "proof": [base64.b64encode(h).decode("ascii") for h in proofs[r.idx]]}
        (directory / proof_file(r.idx)).write_text(json.dumps(doc, indent=1) + "\n")
    (directory / CHECKPOINT).write_text(cp.note, encoding="utf-8")
    (directory / HBOM).write_bytes(hbom)
    for run_id, data in sorted(runs.items()):
        (directory / TELEMETRY).mkdir(exist_ok=True)
        (directory / telemetry_file(run_id)).write_bytes(data)
    history: list[tuple[int, str]] = [(cp.size, cp.note)]
    links: list[ConsistencyLink] = links_of([cp])
    if prev is not None:
        history.insert(0, (prev.size, prev.note))
    write_checkpoints(directory / HISTORY, signer.verifier, history, links)
    (directory / MANIFEST).write_text(manifest_json(unit, signer.name, str(signer.verifier),
                                                    cp.size, [r.idx for r in rows]))
    (directory / README).write_text(readme(unit, cp.size, len(rows), str(signer.verifier)))
    return EvidenceSummary(unit, cp.size, len(rows), directory)

