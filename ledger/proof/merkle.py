"""Merkle tree math of the ledger: RFC 6962 / RFC 9162 §2.1, with no storage inside.

The log keeps the hash of every *complete* subtree as a row `(level, index, hash)`: level 0
holds the leaf hashes, and row `(level, index)` covers leaves
`[index * 2**level, (index + 1) * 2**level)`. Such a row never changes once written, so the
store stays append-only, and any RFC subtree — complete or not — is the fold, right to left,
of at most log2(n) rows. That is why the root and every proof here cost O(log n) row reads
whatever the tree size, on SQLite or PostgreSQL alike.

The functions take a `SubtreeReader`; the DB layer implements it over the `subtrees` table and
`MemoryTree` implements it in memory (tests, the offline verifier). The `*_keys` helpers name
the rows a computation will read so a DB layer can fetch them in one query.

Verifiers follow RFC 9162 §2.1.3.2 and §2.1.4.2, tightened by the rules of the shared test
vectors (README there): size1 == 0 is rejected, size1 == size2 needs an empty proof and equal
roots, index >= size is rejected, every hash that gets hashed must be 32 bytes, and a proof
with extra or missing hashes is rejected before any hashing. The hashes do not bind tree
sizes (a proof for size n can verify for another size whose path has the same shape), so
sizes must come from the signed checkpoint, never from a proof file's own metadata.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Protocol, runtime_checkable

from .errors import ProofError, ProofRangeError, SubtreeMissing

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()
"""Root of the empty tree (RFC 9162 §2.1.1: the hash of the empty string)."""

SubtreeKey = tuple[int, int]
"""(level, index) of a complete subtree."""
SubtreeRow = tuple[int, int, bytes]
"""(level, index, hash): one row of the `subtrees` table."""
_Range = tuple[int, int]


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the prefix keeps a leaf from passing for an interior node."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def root_from_leaf_hashes(hashes: Sequence[bytes]) -> bytes:
    """Root over all leaf hashes in O(n): the reference that `verify-ledger` recomputes.

    Pairing level by level and promoting a lone last node unchanged gives exactly the RFC
    shape (largest power of two smaller than n on the left).
    """
    if not hashes:
        return EMPTY_ROOT
    level = list(hashes)
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# --- Storage interface ------------------------------------------------------------------------


class SubtreeReader(Protocol):
    """Read access to complete-subtree rows.

    `get` returns the 32-byte hash of row (level, index), or raises `KeyError` (or
    `SubtreeMissing`) when there is no such row.
    """

    def get(self, level: int, index: int) -> bytes: ...


@runtime_checkable
class BatchSubtreeReader(SubtreeReader, Protocol):
    """A reader that can also fetch many rows at once; missing rows are left out of the result."""

    def get_many(self, keys: Sequence[SubtreeKey]) -> Mapping[SubtreeKey, bytes]: ...


def _missing(level: int, index: int) -> SubtreeMissing:
    return SubtreeMissing(
        f"subtree row (level={level}, index={index}) is missing: the store is incomplete or was "
        "edited, or the tree size asked for is larger than the log; run `linetrace verify-ledger`"
    )


def fetch(reader: SubtreeReader, keys: Sequence[SubtreeKey]) -> dict[SubtreeKey, bytes]:
    """All rows for `keys`, in one `get_many` call when the reader has one."""
    out: dict[SubtreeKey, bytes] = {}
    if isinstance(reader, BatchSubtreeReader):
        found = reader.get_many(keys)
        for key in keys:
            if key not in found:
                raise _missing(*key)
            out[key] = found[key]
        return out
    for level, index in keys:
        try:
            out[(level, index)] = reader.get(level, index)
        except KeyError:
            raise _missing(level, index) from None
    return out


# --- Appending --------------------------------------------------------------------------------


def append_leaf(size: int, leaf: bytes, get: Callable[[int, int], bytes]) -> list[SubtreeRow]:
    """The rows to insert when leaf number `size` (0-based) is appended.

    That is the leaf row itself plus one row per subtree the new leaf completes: while the
    new node is a right child its left sibling is already stored, so the `get` calls are the
    trailing one-bits of `size` (≤ log2(n), one on average).
    """
    _check_hash("leaf hash", leaf, error=ValueError)
    if size < 0:
        raise ValueError(f"tree size must be ≥ 0, got {size}")
    rows: list[SubtreeRow] = [(0, size, leaf)]
    level, index, current = 0, size, leaf
    while index & 1:
        current = node_hash(get(level, index - 1), current)
        level, index = level + 1, index >> 1
        rows.append((level, index, current))
    return rows


def append_leaves(
    size: int, leaves: Iterable[bytes], get: Callable[[int, int], bytes]
) -> list[SubtreeRow]:
    """Rows for appending several leaves in one transaction, starting at leaf number `size`.

    Rows created earlier in the batch are read from the batch itself, so `get` only sees rows
    that were stored before it.
    """
    fresh: dict[SubtreeKey, bytes] = {}

    def overlay(level: int, index: int) -> bytes:
        hit = fresh.get((level, index))
        return hit if hit is not None else get(level, index)

    out: list[SubtreeRow] = []
    for offset, leaf in enumerate(leaves):
        for row in append_leaf(size + offset, leaf, overlay):
            fresh[(row[0], row[1])] = row[2]
            out.append(row)
    return out


# --- Planning: which ranges a root or proof hashes, which rows they read ------------------------


def _split(n: int) -> int:
    """Largest power of two strictly smaller than n (n ≥ 2): where the RFC splits a tree."""
    return 1 << ((n - 1).bit_length() - 1)


def _range_keys(start: int, end: int) -> list[SubtreeKey]:
    """Complete subtrees making up RFC subtree [start, end), left to right (largest first)."""
    keys: list[SubtreeKey] = []
    while start < end:
        level = (end - start).bit_length() - 1
        while start & ((1 << level) - 1):
            level -= 1
        keys.append((level, start >> level))
        start += 1 << level
    return keys


def _fold(keys: Sequence[SubtreeKey], rows: Mapping[SubtreeKey, bytes]) -> bytes:
    """Hash of a range from its complete subtrees, folded right to left."""
    acc = rows[keys[-1]]
    for key in reversed(keys[:-1]):
        acc = node_hash(rows[key], acc)
    return acc


def _inclusion_ranges(index: int, size: int) -> list[_Range]:
    """Sibling ranges of RFC 9162 PATH(index, D[0:size]), leaf first."""
    ranges: list[_Range] = []
    lo, hi = 0, size
    while hi - lo > 1:
        mid = lo + _split(hi - lo)
        if index < mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo = mid
    ranges.reverse()
    return ranges


def _consistency_ranges(size1: int, size2: int) -> list[_Range]:
    """Ranges of RFC 9162 PROOF(size1, D[0:size2]) = SUBPROOF(size1, D[0:size2], true)."""
    ranges: list[_Range] = []
    lo, hi, whole = 0, size2, True
    while size1 != hi:
        mid = lo + _split(hi - lo)
        if size1 <= mid:
            ranges.append((mid, hi))
            hi = mid
        else:
            ranges.append((lo, mid))
            lo, whole = mid, False
    if not whole:
        ranges.append((lo, hi))
    ranges.reverse()
    return ranges


def _check_inclusion_args(index: int, size: int) -> None:
    if not 0 <= index < size:
        msg = f"leaf {index} is not in a tree of {size} leaves; use a later checkpoint"
        raise ProofRangeError(msg)


def _check_consistency_args(size1: int, size2: int) -> None:
    if not 0 < size1 <= size2:
        msg = f"no consistency proof from size {size1} to {size2}: need 0 < size1 ≤ size2"
        raise ProofRangeError(msg)


def root_keys(size: int) -> list[SubtreeKey]:
    """Rows `root(size, ...)` reads (empty for the empty tree)."""
    if size < 0:
        raise ProofRangeError(f"tree size must be ≥ 0, got {size}")
    return _range_keys(0, size)


def inclusion_proof_keys(index: int, size: int) -> list[SubtreeKey]:
    """Rows `inclusion_proof(index, size, ...)` reads."""
    _check_inclusion_args(index, size)
    return [key for r in _inclusion_ranges(index, size) for key in _range_keys(*r)]


def consistency_proof_keys(size1: int, size2: int) -> list[SubtreeKey]:
    """Rows `consistency_proof(size1, size2, ...)` reads."""
    _check_consistency_args(size1, size2)
    return [key for r in _consistency_ranges(size1, size2) for key in _range_keys(*r)]


def _hash_ranges(ranges: Sequence[_Range], reader: SubtreeReader) -> list[bytes]:
    per_range = [_range_keys(start, end) for start, end in ranges]
    rows = fetch(reader, [key for keys in per_range for key in keys])
    return [_fold(keys, rows) for keys in per_range]


# --- Roots and proofs from stored rows --------------------------------------------------------


def root(size: int, reader: SubtreeReader) -> bytes:
    """Root of the first `size` leaves (any size up to the log's, so old roots too)."""
    keys = root_keys(size)
    if not keys:
        return EMPTY_ROOT
    return _fold(keys, fetch(reader, keys))


def inclusion_proof(index: int, size: int, reader: SubtreeReader) -> list[bytes]:
    """RFC 9162 §2.1.3.1 inclusion proof of leaf `index` in the tree of `size` leaves."""
    _check_inclusion_args(index, size)
    return _hash_ranges(_inclusion_ranges(index, size), reader)


def consistency_proof(size1: int, size2: int, reader: SubtreeReader) -> list[bytes]:
    """RFC 9162 §2.1.4.1 consistency proof from tree size `size1` to `size2`."""
    _check_consistency_args(size1, size2)
    return _hash_ranges(_consistency_ranges(size1, size2), reader)


# --- Verification -----------------------------------------------------------------------------


def _check_hash(what: str, value: bytes, *, error: type[Exception] = ProofError) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        size = len(value) if isinstance(value, (bytes, bytearray)) else type(value).__name__
        raise error(f"{what} must be a {HASH_SIZE}-byte SHA-256 hash, got {size}")


def _check_proof(proof: Sequence[bytes], expected: int, what: str) -> None:
    if len(proof) != expected:
        raise ProofError(
            f"{what} has {len(proof)} hashes where {expected} are needed: it was made for "
            "another leaf or tree size, or was truncated or padded"
        )
    for i, item in enumerate(proof):
        _check_hash(f"proof hash {i}", item)


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> None:
    """Raise `ProofError` unless `proof` puts leaf hash `leaf` at `index` under `expected_root`."""
    _check_hash("leaf hash", leaf)
    _check_hash("root hash", expected_root)
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of {size} leaves")
    _check_proof(proof, len(_inclusion_ranges(index, size)), f"inclusion proof of leaf {index}")
    # RFC 9162 §2.1.3.2, step by step.
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = node_hash(r, p)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is shorter than the path to the root")
    if r != expected_root:
        raise ProofError(
            f"inclusion proof does not lead to the expected root: leaf {index} is not in this "
            f"tree of {size} leaves, or the leaf, the proof or the root was altered"
        )


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Raise `ProofError` unless tree `root2` (size2) is an append-only extension of `root1`.

    With size1 == size2 the roots are only compared, whatever their length, as the shared
    vectors require (sizes-are-equal-one-and-proof-is-empty.json uses 12-byte "roots").
    """
    if size1 <= 0:
        raise ProofError(f"tree size {size1} proves nothing; start from a checkpoint with leaves")
    if size2 < size1:
        raise ProofError(f"tree size went down from {size1} to {size2}: the log was truncated")
    if size1 == size2:
        if proof:
            raise ProofError("trees of equal size need an empty consistency proof")
        if root1 != root2:
            raise ProofError(f"two different roots for tree size {size1}: the log forked")
        return
    _check_hash("first root hash", root1)
    _check_hash("second root hash", root2)
    _check_proof(proof, len(_consistency_ranges(size1, size2)), "consistency proof")
    # RFC 9162 §2.1.4.2, step by step.
    path = list(proof)
    if size1 & (size1 - 1) == 0:
        path.insert(0, root1)
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is longer than needed")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while fn and not fn & 1:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is shorter than needed")
    if fr != root1:
        raise ProofError(
            f"consistency proof does not rebuild the root of size {size1}: the older checkpoint "
            "is not a prefix of the newer one, or a hash was altered"
        )
    if sr != root2:
        raise ProofError(
            f"consistency proof does not rebuild the root of size {size2}: entries before "
            f"{size1} were changed, or a hash was altered"
        )


# --- In memory --------------------------------------------------------------------------------


class MemoryTree:
    """A whole log in memory, built from the same `append_leaf` rows as the database: the
    oracle in tests, and how the offline verifier rebuilds a tree."""

    def __init__(self, leaves: Iterable[bytes] = ()) -> None:
        self._leaves: list[bytes] = []
        self._rows: dict[SubtreeKey, bytes] = {}
        for leaf in leaves:
            self.append(leaf)

    @classmethod
    def from_data(cls, entries: Iterable[bytes]) -> MemoryTree:
        """A tree over raw leaf bytes (hashed with `leaf_hash`)."""
        return cls(leaf_hash(entry) for entry in entries)

    @property
    def size(self) -> int:
        return len(self._leaves)

    @property
    def leaf_hashes(self) -> Sequence[bytes]:
        return tuple(self._leaves)

    def append(self, leaf: bytes) -> int:
        """Append one leaf hash; returns its index."""
        index = len(self._leaves)
        for level, idx, digest in append_leaf(index, leaf, self.get):
            self._rows[(level, idx)] = digest
        self._leaves.append(leaf)
        return index

    def get(self, level: int, index: int) -> bytes:
        try:
            return self._rows[(level, index)]
        except KeyError:
            raise _missing(level, index) from None

    def get_many(self, keys: Sequence[SubtreeKey]) -> Mapping[SubtreeKey, bytes]:
        return {key: self._rows[key] for key in keys if key in self._rows}

    def root(self, size: int | None = None) -> bytes:
        return root(self.size if size is None else size, self)

    def inclusion_proof(self, index: int, size: int | None = None) -> list[bytes]:
        return inclusion_proof(index, self.size if size is None else size, self)

    def consistency_proof(self, size1: int, size2: int | None = None) -> list[bytes]:
        return consistency_proof(size1, self.size if size2 is None else size2, self)
