"""Checkpoint files: the export format, and proving a set of checkpoints consistent offline.

A customer or witness keeps the checkpoints linetrace publishes (`linetrace checkpoint
--export DIR`) outside the plant. Later, `linetrace verify --checkpoints DIR` (no database) or
`linetrace verify-ledger --checkpoints DIR` (at the plant) proves the log they are checking
extends every one of them: someone holding both the database and the plant key can rewrite
history only by signing a checkpoint that forks from one already held elsewhere.

Layout of a checkpoint directory (also used inside evidence bundles):

    verifier-key.txt                        name+keyid+base64key of the log's key
    checkpoints/<size, 16 digits>.txt       signed checkpoint notes
    consistency/<size1>-<size2>.json        {"size1", "size2", "proof": [base64 hash, ...]}

Sizes in file names and in proof files only say which checkpoints a proof links; the sizes
and roots used when verifying always come from the signed checkpoints themselves.
No database in this module: `linetrace verify` imports it.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .errors import LedgerError, NoteError, ProofError
from .merkle import verify_consistency
from .note import Checkpoint, Signer, VerifierKey, open_checkpoint

CHECKPOINTS = "checkpoints"
CONSISTENCY = "consistency"
VERIFIER_KEY = "verifier-key.txt"


class CheckpointFilesMalformed(LedgerError):
    """A checkpoint directory or proof file is not in the documented layout."""

    code = "checkpoint.files_malformed"


class ConsistencyUnproven(LedgerError):
    """No chain of consistency proofs links two checkpoints, so nothing is proven about them."""

    code = "checkpoint.consistency_unproven"


class LogForked(LedgerError):
    """Two signed checkpoints cannot both be true of one append-only log."""

    code = "checkpoint.fork"


def plant_signer(plant_key: Ed25519PrivateKey, origin: str) -> Signer:
    """The checkpoint signer: the plant key, named after the log's origin (LINETRACE_ORIGIN)."""
    return Signer(origin, plant_key)


@dataclass(frozen=True)
class ConsistencyLink:
    size1: int
    size2: int
    proof: tuple[bytes, ...]


def checkpoint_file(size: int) -> str:
    return f"{CHECKPOINTS}/{size:016d}.txt"


def consistency_file(size1: int, size2: int) -> str:
    return f"{CONSISTENCY}/{size1:016d}-{size2:016d}.json"


def proof_json(size1: int, size2: int, proof: Sequence[bytes]) -> bytes:
    doc = {"size1": size1, "size2": size2,
           "proof": [base64.b64encode(h).decode("ascii") for h in proof]}
    return (json.dumps(doc, indent=1) + "\n").encode()


def write_checkpoints(directory: Path, verifier: VerifierKey, notes: Iterable[tuple[int, str]],
                      links: Iterable[ConsistencyLink]) -> int:
    """Write checkpoint notes (size, text) and consistency links; returns how many notes."""
    (directory / CHECKPOINTS).mkdir(parents=True, exist_ok=True)
    (directory / CONSISTENCY).mkdir(parents=True, exist_ok=True)
    (directory / VERIFIER_KEY).write_text(f"{verifier}\n")
    count = 0
    for size, text in notes:
        (directory / checkpoint_file(size)).write_text(text, encoding="utf-8")
        count += 1
    for link in links:
        (directory / consistency_file(link.size1, link.size2)).write_bytes(
            proof_json(link.size1, link.size2, link.proof))
    return count


def read_link(path: Path) -> ConsistencyLink:
    try:
        doc = json.loads(path.read_bytes())
        proof = tuple(base64.b64decode(h, validate=True) for h in doc["proof"] or [])
        return ConsistencyLink(int(doc["size1"]), int(doc["size2"]), proof)
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        raise CheckpointFilesMalformed(
            f"{path} is not a consistency proof file ({{size1, size2, proof: [base64]}})"
        ) from None


def read_checkpoints(directory: Path, verifier: VerifierKey
                     ) -> tuple[list[Checkpoint], list[ConsistencyLink]]:
    """Every checkpoint in `directory`, each verified with `verifier` (signature and origin),
    and the consistency links found beside them. Raises NoteError naming the bad file."""
    if not directory.is_dir():
        raise CheckpointFilesMalformed(f"{directory} is not a directory of checkpoints")
    notes = sorted((directory / CHECKPOINTS).glob("*.txt")) if (
        directory / CHECKPOINTS).is_dir() else sorted(directory.glob("*.txt"))
    checkpoints: list[Checkpoint] = []
    for path in notes:
        if path.name == VERIFIER_KEY:
            continue
        try:
            checkpoints.append(open_checkpoint(path.read_bytes(), verifier))
        except NoteError as e:
            raise type(e)(f"{path}: {e}") from None
    links = [read_link(p) for p in sorted((directory / CONSISTENCY).glob("*.json"))]
    return checkpoints, links


def prove_consistent(anchor: Checkpoint, others: Sequence[Checkpoint],
                     links: Sequence[ConsistencyLink]) -> list[str]:
    """Prove `anchor` and every one of `others` are states of one append-only log.

    Equal sizes must have equal roots. Otherwise a chain of verified consistency proofs with
    increasing sizes must lead from the smaller checkpoint to the larger; a proof that fails is
    a fork (LogForked), a missing chain is ConsistencyUnproven. Returns one line per checkpoint.
    """
    roots: dict[int, bytes] = {anchor.size: anchor.root}
    for cp in others:
        known = roots.setdefault(cp.size, cp.root)
        if known != cp.root:
            raise LogForked(f"two signed checkpoints of size {cp.size} have different roots: "
                            "the log was rewritten; keep both notes as evidence")
    edges: dict[int, set[int]] = {}
    for link in links:
        if link.size1 == link.size2 or link.size1 not in roots or link.size2 not in roots:
            continue
        try:
            verify_consistency(link.size1, link.size2, link.proof, roots[link.size1],
                               roots[link.size2])
        except ProofError as e:
            raise LogForked(f"checkpoint of size {link.size2} is not an extension of the one of "
                            f"size {link.size1}: {e}") from None
        edges.setdefault(link.size1, set()).add(link.size2)

    def reachable(start: int, goal: int) -> bool:
        todo, seen = [start], {start}
        while todo:
            node = todo.pop()
            if node == goal:
                return True
            for nxt in edges.get(node, ()):
                if nxt <= goal and nxt not in seen:
                    seen.add(nxt)
                    todo.append(nxt)
        return False

    lines = []
    for cp in sorted(others, key=lambda c: c.size):
        if cp.size == anchor.size:
            lines.append(f"size {cp.size}: same root")
        elif not reachable(min(cp.size, anchor.size), max(cp.size, anchor.size)):
            raise ConsistencyUnproven(
                f"no consistency proofs link the checkpoint of size {cp.size} with the one of "
                f"size {anchor.size}; use a checkpoint export made after both "
                "(`linetrace checkpoint --export DIR`)")
        else:
            lines.append(f"size {cp.size}: consistent")
    return lines
