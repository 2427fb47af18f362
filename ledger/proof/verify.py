"""Offline verification of an evidence bundle: every check of LEDGER.md, in order.

An auditor runs this with the base install and no database, broker or Faust: it imports
neither SQLAlchemy nor Kafka clients (a test keeps it so). It trusts nothing in the bundle but
what the plant's verifier key signed: sizes and roots come from the signed checkpoint, station
keys from plant-signed `station.enrolled` leaves, the HBOM from the plant-signed seal.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_event
from linetrace.schemas.errors import SchemaError
from linetrace.schemas.topics import EVENTS, TOPIC_OF_TYPE

from .checkpoints import prove_consistent, read_checkpoints
from .errors import LedgerError
from .hbom import AsBuilt, HbomMalformed, as_built, expected_content, read_hbom
from .leaf import Leaf, LeafMalformed, chain_of, parse_leaf
from .merkle import leaf_hash, verify_inclusion
from .note import Checkpoint, VerifierKey, open_checkpoint

BUNDLE_FORMAT = "linetrace-evidence/1"
MANIFEST, CHECKPOINT, HBOM, README = "manifest.json", "checkpoint.txt", "hbom.cdx.json", "README.md"
LEAVES, PROOFS, HISTORY = "leaves", "proofs", "history"

#: The checks `linetrace verify` runs, in order; a failure names one of them.
CHECKS = ("bundle", "checkpoint", "inclusion", "leaves", "signatures", "unit-chain",
          "hbom-seal", "hbom-parts", "materials", "consistency")


class VerificationFailed(LedgerError):
    """One check of an evidence bundle failed; `check` names it (one of CHECKS)."""

    code = "verify.failed"

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}")
        self.check = check
        self.code = f"verify.{check}"


# --- Bundles ---------------------------------------------------------------------------------


def leaf_file(index: int) -> str:
    return f"{LEAVES}/{index:016d}.leaf"


def proof_file(index: int) -> str:
    return f"{PROOFS}/{index:016d}.json"


@dataclass(frozen=True)
class Entry:
    """One leaf of a bundle, verified included, parsed and decoded."""

    index: int
    hash: bytes
    leaf: Leaf
    event: Event


Report = Callable[[str, str], None]


def _fail(check: str, message: str) -> VerificationFailed:
    return VerificationFailed(check, message)


def _read(path: Path, check: str = "bundle") -> bytes:
    try:
        return path.read_bytes()
    except OSError as e:
        raise _fail(check, f"cannot read {path.name}: {e.strerror}; is this an evidence bundle "
                    "made by `linetrace evidence`?") from None


def _included(root: Path, cp: Checkpoint) -> dict[int, tuple[bytes, bytes]]:
    """index -> (leaf bytes, leaf hash) for every leaf, each proven in the checkpoint's tree."""
    out: dict[int, tuple[bytes, bytes]] = {}
    files = sorted((root / LEAVES).glob("*.leaf"))
    if not files:
        raise _fail("bundle", "the bundle has no leaves/")
    for path in files:
        try:
            index = int(path.stem)
        except ValueError:
            raise _fail("bundle", f"leaf file {path.name} is not named by its index") from None
        data = path.read_bytes()
        try:
            doc = json.loads(_read(root / proof_file(index), "inclusion"))
            proof = [base64.b64decode(h, validate=True) for h in doc["proof"] or []]
            claimed = int(doc.get("tree_size", cp.size))
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise _fail("inclusion", f"proof of leaf {index} is not {{proof: [base64]}}") from None
        if claimed != cp.size:
            raise _fail("inclusion", f"proof of leaf {index} was made for tree size {claimed}, "
                        f"not the checkpoint's {cp.size}")
        digest = leaf_hash(data)
        try:  # the size always comes from the signed checkpoint, never from the proof file
            verify_inclusion(digest, index, cp.size, proof, cp.root)
        except LedgerError as e:
            raise _fail("inclusion", f"leaf {index}: {e}") from None
        out[index] = (data, digest)
    return out


def _entries(leaves: Mapping[int, tuple[bytes, bytes]]) -> list[Entry]:
    entries = []
    for index, (data, digest) in sorted(leaves.items()):
        try:
            leaf = parse_leaf(data)
            event = decode_event(leaf.value)
        except (LeafMalformed, SchemaError) as e:
            raise _fail("leaves", f"leaf {index}: {e}") from None
        entries.append(Entry(index, digest, leaf, event))
    return entries


def _verify_sig(key: Ed25519PublicKey, e: Entry) -> bool:
    try:
        key.verify(e.leaf.signature, e.leaf.value)
    except InvalidSignature:
        return False
    return True


def _check_signatures(entries: list[Entry], plant: VerifierKey) -> str:
    plant_key = Ed25519PublicKey.from_public_bytes(plant.public_key)
    plant_keyid = signing.keyid_of(plant.public_key)
    enrolled: dict[tuple[str, str], tuple[int, Ed25519PublicKey]] = {}
    revoked: dict[tuple[str, str], dict[str, int]] = {}
    stations = 0
    for e in entries:
        ev = e.event
        if ev.source == SYSTEM_SOURCE:
            if e.leaf.keyid != plant_keyid or not _verify_sig(plant_key, e):
                raise _fail("signatures", f"system event {ev.type} {ev.id} (leaf {e.index}) is "
                            f"not signed by the plant key {plant}")
            if isinstance(ev.body, b.StationEnrolled):
                pub = signing.load_public_key(ev.body.public_key)
                if signing.keyid_of(pub) != ev.body.keyid:
                    raise _fail("signatures", f"station.enrolled leaf {e.index} states a key id "
                                "that is not its public key's")
                enrolled[(ev.body.station_id, ev.body.keyid)] = (e.index, pub)
            elif isinstance(ev.body, b.StationRevoked):
                revoked[(ev.body.station_id, ev.body.keyid)] = {
                    x.topic: int(x.stationseq) for x in ev.body.last_valid}
            continue
        found = enrolled.get((ev.source, e.leaf.keyid))
        if found is None or found[0] > e.index:
            raise _fail("signatures", f"{ev.type} {ev.id} (leaf {e.index}) from station "
                        f"{ev.source} is signed with key {e.leaf.keyid}, which no earlier "
                        f"station.enrolled leaf in the bundle registers for {ev.source}")
        if not _verify_sig(found[1], e):
            raise _fail("signatures", f"{ev.type} {ev.id} (leaf {e.index}) from {ev.source}: "
                        "the Ed25519 signature does not match the event bytes")
        stations += 1
    for e in entries:  # revocations may come later in the log than the events they cover
        last = revoked.get((e.event.source, e.leaf.keyid))
        seq, topic = e.event.seq, TOPIC_OF_TYPE.get(e.event.type, "")
        if last is not None and (seq is None or seq > last.get(topic, -1)):
            raise _fail("signatures", f"{e.event.type} {e.event.id} (leaf {e.index}) is signed "
                        f"with key {e.leaf.keyid} after its revocation ({topic} stationseq {seq})")
    return f"{stations} station events and {len(entries) - stations} system events"


def _walk_chain(by_hash: Mapping[bytes, Entry], head: Entry, what: str) -> list[Entry]:
    """The chain ending at `head`, first event first; every predecessor must be present."""
    chain, e = [head], head
    while e.leaf.unit_prev is not None:
        prev = by_hash.get(e.leaf.unit_prev)
        if prev is None or prev.index >= e.index:
            raise _fail("unit-chain", f"{what}: leaf {e.index} ({e.event.type}) follows leaf "
                        f"hash {e.leaf.unit_prev.hex()[:16]}…, which is not in the bundle "
                        "(an event was dropped or reordered)")
        chain.append(prev)
        e = prev
    chain.reverse()
    last: dict[str, int] = {}
    for x in chain:  # one unit is on one partition: a station's numbers must increase
        seq = x.event.seq
        if seq is not None:
            if seq <= last.get(x.event.source, -1):
                raise _fail("unit-chain", f"{what}: leaf {x.index} from {x.event.source} has "
                            "stationseq not after its predecessor's (events swapped)")
            last[x.event.source] = seq
    return chain


def _check_chains(entries: list[Entry], unit: str
                  ) -> tuple[Entry, dict[str, list[Event]], list[Entry]]:
    by_hash = {e.hash: e for e in entries}
    mine = [e for e in entries if chain_of(e.event) == (EVENTS, unit)]
    if not mine:
        raise _fail("unit-chain", f"the bundle has no events of unit {unit}")
    chain = _walk_chain(by_hash, mine[-1], unit)
    if chain[0].leaf.unit_prev is not None or len(chain) != len(mine):
        stray = sorted({e.index for e in mine} - {e.index for e in chain})
        raise _fail("unit-chain", f"{unit}: leaves {stray} are not on the unit's chain")
    seals = [e for e in chain if isinstance(e.event.body, b.UnitSealed)]
    if not seals:
        raise _fail("unit-chain", f"no unit.sealed leaf for {unit}: the unit is not sealed or "
                    "its seal was removed")
    seal = seals[-1]
    body = seal.event.body
    assert isinstance(body, b.UnitSealed)
    if seal.leaf.unit_prev is None or body.chain_head != seal.leaf.unit_prev.hex():
        raise _fail("unit-chain", f"unit.sealed (leaf {seal.index}) seals chain head "
                    f"{body.chain_head[:16]}…, not the leaf before it")
    chains = {unit: [e.event for e in chain if e.index < seal.index]}
    for asm in body.assemblies:
        head = by_hash.get(bytes.fromhex(asm.chain_head))
        if head is None:
            raise _fail("unit-chain", f"sub-assembly {asm.serial}: its sealed chain head is not "
                        "in the bundle")
        sub = _walk_chain(by_hash, head, asm.serial)
        if any(chain_of(e.event) != (EVENTS, asm.serial) for e in sub):
            raise _fail("unit-chain", f"sub-assembly {asm.serial}: chain holds foreign events")
        chains[asm.serial] = [e.event for e in sub]
    return seal, chains, chain


def _check_parts(hbom_bytes: bytes, unit: str, seal: Entry,
                 chains: dict[str, list[Event]]) -> AsBuilt:
    body = seal.event.body
    assert isinstance(body, b.UnitSealed)
    built = as_built(unit, chains)
    if sorted(built.assemblies) != sorted(a.serial for a in body.assemblies):
        raise _fail("hbom-parts", f"sub-assemblies {sorted(built.assemblies)} are installed but "
                    f"the seal covers {sorted(a.serial for a in body.assemblies)}")
    try:
        got = read_hbom(hbom_bytes)
    except HbomMalformed as e:
        raise _fail("hbom-parts", str(e)) from None
    want = expected_content(built)
    if got.unit != unit:
        raise _fail("hbom-parts", f"the HBOM describes {got.unit}, not {unit}")
    if got.parts != want.parts:
        extra = sorted(map(str, (got.parts - want.parts).elements()))[:3]
        missing = sorted(map(str, (want.parts - got.parts).elements()))[:3]
        raise _fail("hbom-parts", f"HBOM parts differ from the install leaves: not installed "
                    f"{extra}, missing {missing}")
    if got.firmware != want.firmware:
        raise _fail("hbom-parts", "HBOM firmware differs from the firmware.flashed leaves")
    return built


def _check_materials(entries: list[Entry], built: AsBuilt) -> str:
    receipts: dict[str, list[Entry]] = {}
    passed: set[str] = set()
    for e in entries:
        body = e.event.body
        if isinstance(body, b.MaterialReceived):
            receipts.setdefault(body.lot, []).append(e)
        elif isinstance(body, b.MaterialChecked) and body.result == "Passed":
            passed.add(body.receipt)
    lots = 0
    for part in built.parts:
        if part.serial is not None and part.serial in built.assemblies:
            continue  # built on this line: its own parts are checked instead
        ok = [r for r in receipts.get(part.lot, []) if r.event.id in passed]
        if not receipts.get(part.lot):
            raise _fail("materials", f"part {part.serial or part.mpn} comes from lot {part.lot}, "
                        "which has no material.received leaf in the bundle")
        if not ok:
            raise _fail("materials", f"lot {part.lot} has no passed material.checked leaf (not "
                        "on the approved vendor list, or the check was removed)")
        rb = ok[0].event.body
        assert isinstance(rb, b.MaterialReceived)
        if rb.mpn != part.mpn:
            raise _fail("materials", f"part {part.serial or part.mpn} is MPN {part.mpn} but lot "
                        f"{part.lot} was received as {rb.mpn}")
        if part.serial is not None and rb.serials and part.serial not in rb.serials:
            raise _fail("materials", f"serial {part.serial} is not among lot {part.lot}'s "
                        "received serials")
        lots += 1
    return f"{lots} parts from received lots that passed the AVL check"


def verify_bundle(root: Path, key: str | VerifierKey, checkpoints: Path | None = None,
                  report: Report = lambda check, message: None) -> None:
    """Run every check of LEDGER.md on the bundle at `root`; raise VerificationFailed on the
    first failure. `report(check, message)` is called after each check that passes."""
    try:
        plant = key if isinstance(key, VerifierKey) else VerifierKey.parse(key)
    except LedgerError as e:
        raise _fail("checkpoint", str(e)) from None
    try:
        manifest = json.loads(_read(root / MANIFEST))
        unit = manifest["unit"]
        assert manifest.get("format") == BUNDLE_FORMAT and isinstance(unit, str)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise _fail("bundle", f"{MANIFEST} is not a {BUNDLE_FORMAT} manifest") from None
    note = _read(root / CHECKPOINT)
    hbom_bytes = _read(root / HBOM)
    report("bundle", f"evidence for unit {unit}")
    try:
        cp = open_checkpoint(note, plant)
    except LedgerError as e:
        raise _fail("checkpoint", str(e)) from None
    report("checkpoint", f"signed by {plant.name} ({plant.key_id.hex()}), tree size {cp.size}")
    leaves = _included(root, cp)
    report("inclusion", f"{len(leaves)} leaves proven in the tree of {cp.size}")
    entries = _entries(leaves)
    report("leaves", f"{len(entries)} canonical leaves with valid events")
    report("signatures", _check_signatures(entries, plant))
    seal, chains, chain = _check_chains(entries, unit)
    report("unit-chain", f"{len(chain)} unit events linked from the first to unit.sealed "
           f"(leaf {seal.index}), {len(chains) - 1} sub-assembly chains")
    sealed = seal.event.body
    assert isinstance(sealed, b.UnitSealed)
    digest = hashlib.sha256(hbom_bytes).hexdigest()
    if digest != sealed.hbom_sha256:
        raise _fail("hbom-seal", f"SHA-256 of {HBOM} is {digest[:16]}…, the seal says "
                    f"{sealed.hbom_sha256[:16]}…: the HBOM was changed after sealing")
    report("hbom-seal", f"SHA-256 {digest} sealed in leaf {seal.index}")
    built = _check_parts(hbom_bytes, unit, seal, chains)
    report("hbom-parts", f"{len(built.parts)} parts and {len(built.firmware)} firmware images "
           "match the install and firmware leaves")
    report("materials", _check_materials(entries, built))
    if checkpoints is not None:
        try:
            own, own_links = read_checkpoints(root / HISTORY, plant) if (
                root / HISTORY).is_dir() else ([], [])
            held, links = read_checkpoints(checkpoints, plant)
            lines = prove_consistent(cp, [*own, *held], [*own_links, *links])
        except LedgerError as e:
            raise _fail("consistency", str(e)) from None
        report("consistency", f"consistent with {len(held)} checkpoints held elsewhere"
               + (f" ({'; '.join(lines[-3:])})" if lines else ""))
