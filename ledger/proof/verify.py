"""Offline verification of an evidence bundle: every check of LEDGER.md, in order.

An auditor runs this with the base install and no database, broker or Faust: it imports
neither SQLAlchemy nor Kafka clients (a test keeps it so). It trusts nothing in the bundle but
what the plant's verifier key signed: sizes and roots come from the signed checkpoint, station
keys from plant-signed `station.enrolled` leaves, the HBOM from the plant-signed seal.
It fails closed: every file of the bundle is verified by one of the checks, or the bundle is
refused naming the file (the checks about files are in bundle.py).
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
from linetrace.schemas.envelope import SYSTEM_SOURCE, Event, decode_stored_event
from linetrace.schemas.errors import SchemaError
from linetrace.schemas.topics import EVENTS, TOPIC_OF_TYPE

from .bundle import (
    ALERT_FORMAT,
    BUNDLE_FORMAT,
    CHECKPOINT,
    CHECKS,
    FORMAT_NAME,
    HBOM,
    HISTORY,
    MANIFEST,
    PEOPLE_FORMAT,
    README,
    Layout,
    VerificationFailed,
    check_history,
    check_manifest,
    fail,
    leaf_file,
    proof_file,
    scan,
)
from .checkpoints import prove_consistent, read_checkpoints
from .errors import LedgerError, ProofError
from .hbom import AsBuilt, HbomMalformed, as_built, expected_content, read_hbom
from .leaf import Leaf, LeafMalformed, chain_of, parse_leaf
from .merkle import leaf_hash, verify_inclusion
from .note import Checkpoint, VerifierKey, open_checkpoint
from .statements import ACTION_OF_TYPE, STATEMENT_TYPES, check_statements
from .telemetry import check_run_telemetry, read_telemetry_lines

__all__ = ["BUNDLE_FORMAT", "CHECKPOINT", "CHECKS", "HBOM", "HISTORY", "MANIFEST", "README",
           "VerificationFailed", "leaf_file", "proof_file", "verify_bundle"]


@dataclass(frozen=True)
class Entry:
    """One leaf of a bundle, verified included, parsed and decoded."""

    index: int
    hash: bytes
    leaf: Leaf
    event: Event


Report = Callable[[str, str], None]


def _included(layout: Layout, cp: Checkpoint) -> dict[int, tuple[bytes, bytes]]:
    """index -> (leaf bytes, leaf hash) for every leaf, each proven in the checkpoint's tree."""
    out: dict[int, tuple[bytes, bytes]] = {}
    for index, path in sorted(layout.leaves.items()):
        data = path.read_bytes()
        try:
            doc = json.loads(layout.proofs[index].read_bytes())
            if set(doc) != {"index", "tree_size", "proof"} or not isinstance(doc["proof"], list):
                raise ValueError
            proof = [base64.b64decode(h, validate=True) for h in doc["proof"]]
            claimed, named = doc["tree_size"], doc["index"]
        except (ValueError, TypeError, binascii.Error):
            raise fail("inclusion", f"{proof_file(index)} is not {{index, tree_size, proof: "
                        "[base64]}") from None
        if named != index:
            raise fail("inclusion", f"{proof_file(index)} is the proof of leaf {named}")
        if claimed != cp.size:
            raise fail("inclusion", f"proof of leaf {index} was made for tree size {claimed}, "
                        f"not the checkpoint's {cp.size}")
        digest = leaf_hash(data)
        try:  # the size always comes from the signed checkpoint, never from the proof file
            verify_inclusion(digest, index, cp.size, proof, cp.root)
        except LedgerError as e:
            raise fail("inclusion", f"leaf {index}: {e}") from None
        out[index] = (data, digest)
    return out


def _entries(leaves: Mapping[int, tuple[bytes, bytes]]) -> list[Entry]:
    entries = []
    for index, (data, digest) in sorted(leaves.items()):
        try:
            leaf = parse_leaf(data)
            event = decode_stored_event(leaf.value)
        except (LeafMalformed, SchemaError) as e:
            raise fail("leaves", f"leaf {index}: {e}") from None
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
                raise fail("signatures", f"system event {ev.type} {ev.id} (leaf {e.index}) is "
                            f"not signed by the plant key {plant}")
            if isinstance(ev.body, b.StationEnrolled):
                pub = signing.load_public_key(ev.body.public_key)
                if signing.keyid_of(pub) != ev.body.keyid:
                    raise fail("signatures", f"station.enrolled leaf {e.index} states a key id "
                                "that is not its public key's")
                enrolled[(ev.body.station_id, ev.body.keyid)] = (e.index, pub)
            elif isinstance(ev.body, b.StationRevoked):
                revoked[(ev.body.station_id, ev.body.keyid)] = {
                    x.topic: int(x.stationseq) for x in ev.body.last_valid}
            continue
        found = enrolled.get((ev.source, e.leaf.keyid))
        if found is None or found[0] > e.index:
            raise fail("signatures", f"{ev.type} {ev.id} (leaf {e.index}) from station "
                        f"{ev.source} is signed with key {e.leaf.keyid}, which no earlier "
                        f"station.enrolled leaf in the bundle registers for {ev.source}")
        if not _verify_sig(found[1], e):
            raise fail("signatures", f"{ev.type} {ev.id} (leaf {e.index}) from {ev.source}: "
                        "the Ed25519 signature does not match the event bytes")
        stations += 1
    for e in entries:  # revocations may come later in the log than the events they cover
        last = revoked.get((e.event.source, e.leaf.keyid))
        seq, topic = e.event.seq, TOPIC_OF_TYPE.get(e.event.type, "")
        if last is not None and (seq is None or seq > last.get(topic, -1)):
            raise fail("signatures", f"{e.event.type} {e.event.id} (leaf {e.index}) is signed "
                        f"with key {e.leaf.keyid} after its revocation ({topic} stationseq {seq})")
    return f"{stations} station events and {len(entries) - stations} system events"


def _check_statements(entries: list[Entry], version: int) -> str:
    """People's statements in the hold, alert and user leaves, re-checked from the bundle alone
    (`statements.check_statements`, as `verify-ledger` does over the whole log): their plant
    signatures were checked already, so the `user.enrolled` leaves say which key is whose."""
    people = [e for e in entries
              if e.event.source == SYSTEM_SOURCE and e.event.type in STATEMENT_TYPES]
    if version < PEOPLE_FORMAT:
        if people:
            raise fail("statements", f"a {FORMAT_NAME}/{version} bundle carries no hold or user "
                       f"leaves, but leaf {people[0].index} is {people[0].event.type}: the bundle "
                       "was altered (or made by a development build); get it again from the "
                       "plant")
        return f"none: {FORMAT_NAME}/{version} bundles carry no hold or user leaves"
    alerts = [e for e in people if e.event.type.startswith("alert.")]
    if version < ALERT_FORMAT and alerts:
        raise fail("statements", f"a {FORMAT_NAME}/{version} bundle carries no alert leaves, "
                   f"but leaf {alerts[0].index} is {alerts[0].event.type}: the bundle was "
                   "altered (or made by a development build); get it again from the plant")
    audit = check_statements(e.event for e in people)
    people = [e for e in people if e.event.type in ACTION_OF_TYPE]
    if audit.problems:
        p = audit.problems[0]
        index = next(e.index for e in people if e.event.id == p.event_id
                     and e.event.type == p.event_type)
        raise fail("statements", f"{p.event_type} {p.subject} (leaf {index}): {p.detail}")
    if not audit.statements:
        return f"{len(people)} hold, alert and user events, none signed by a person"
    roots = ", ".join(f"{user} (key id {keyid})" for user, keyid in audit.first_admins)
    consoles = ", ".join(f"{name} (key id {keyid})" for name, keyid in audit.consoles)
    attested = (f"; {audit.attested} of them are attestations by the console key of {consoles}, "
                "which vouches that the signed-in user acted (weaker than the person's own key)"
                if audit.attested else "")
    return (f"{audit.statements} statements by {len(audit.signers)} people in {audit.events} "
            "hold, alert and user events verify with their enrolled keys, say what the events "
            "record and come from roles that may sign them; the people were enrolled from the "
            f"self-signed first admin {roots}: confirm that key id with the plant{attested}")


def _walk_chain(by_hash: Mapping[bytes, Entry], head: Entry, what: str) -> list[Entry]:
    """The chain ending at `head`, first event first; every predecessor must be present."""
    chain, e = [head], head
    while e.leaf.unit_prev is not None:
        prev = by_hash.get(e.leaf.unit_prev)
        if prev is None or prev.index >= e.index:
            raise fail("unit-chain", f"{what}: leaf {e.index} ({e.event.type}) follows leaf "
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
                raise fail("unit-chain", f"{what}: leaf {x.index} from {x.event.source} has "
                            "stationseq not after its predecessor's (events swapped)")
            last[x.event.source] = seq
    return chain


@dataclass(frozen=True)
class Sealed:
    """The unit's seal and the chains it covers (the unit's events before it, sub-assemblies)."""

    entry: Entry
    body: b.UnitSealed
    chains: dict[str, list[Event]]
    chain: list[Entry]


def _check_chains(entries: list[Entry], unit: str) -> Sealed:
    by_hash = {e.hash: e for e in entries}
    mine = [e for e in entries if chain_of(e.event) == (EVENTS, unit)]
    if not mine:
        raise fail("unit-chain", f"the bundle has no events of unit {unit}")
    chain = _walk_chain(by_hash, mine[-1], unit)
    if chain[0].leaf.unit_prev is not None or len(chain) != len(mine):
        stray = sorted({e.index for e in mine} - {e.index for e in chain})
        raise fail("unit-chain", f"{unit}: leaves {stray} are not on the unit's chain")
    seals = [(e, e.event.body) for e in chain if isinstance(e.event.body, b.UnitSealed)]
    if not seals:
        raise fail("unit-chain", f"no unit.sealed leaf for {unit}: the unit is not sealed or "
                   "its seal was removed")
    seal, body = seals[-1]
    sealed = _sealed_head(chain, seal, body)
    chains = {unit: [e.event for e in chain[: chain.index(sealed) + 1]]}
    for asm in body.assemblies:
        head = by_hash.get(bytes.fromhex(asm.chain_head))
        if head is None:
            raise fail("unit-chain", f"sub-assembly {asm.serial}: its sealed chain head is not "
                       "in the bundle")
        sub = _walk_chain(by_hash, head, asm.serial)
        if any(chain_of(e.event) != (EVENTS, asm.serial) for e in sub):
            raise fail("unit-chain", f"sub-assembly {asm.serial}: chain holds foreign events")
        chains[asm.serial] = [e.event for e in sub]
    return Sealed(seal, body, chains, chain)


def _sealed_head(chain: list[Entry], seal: Entry, body: b.UnitSealed) -> Entry:
    """The leaf a seal names as the unit's chain head: on the unit's chain before the seal, at
    or after the `unit.packed` it answers (the seal covers the chain up to its cause; seals
    made before that rule name the leaf just before them)."""
    before = chain[: chain.index(seal)]
    head = next((e for e in before if e.hash.hex() == body.chain_head), None)
    if head is None:
        raise fail("unit-chain", f"unit.sealed (leaf {seal.index}) seals chain head "
                   f"{body.chain_head[:16]}…, which is not a leaf of the unit before it")
    packed = next((e for e in before if e.event.id == body.packed
                   and isinstance(e.event.body, b.UnitPacked)), None)
    if packed is None or packed.index > head.index:
        raise fail("unit-chain", f"unit.sealed (leaf {seal.index}) answers unit.packed "
                   f"{body.packed}, which is not on the unit's chain up to the sealed head")
    return head


def _check_seal(hbom_bytes: bytes, sealed: Sealed) -> str:
    digest = hashlib.sha256(hbom_bytes).hexdigest()
    if digest != sealed.body.hbom_sha256:
        raise fail("hbom-seal", f"SHA-256 of {HBOM} is {digest[:16]}…, the seal says "
                   f"{sealed.body.hbom_sha256[:16]}…: the HBOM was changed after sealing")
    return f"SHA-256 {digest} sealed in leaf {sealed.entry.index}"


def _check_parts(hbom_bytes: bytes, unit: str, sealed: Sealed, built: AsBuilt) -> str:
    covered = sorted(a.serial for a in sealed.body.assemblies)
    if sorted(built.assemblies) != covered:
        raise fail("hbom-parts", f"sub-assemblies {sorted(built.assemblies)} are installed but "
                   f"the seal covers {covered}")
    try:
        got = read_hbom(hbom_bytes)
    except HbomMalformed as e:
        raise fail("hbom-parts", str(e)) from None
    want = expected_content(built)
    if got.unit != unit:
        raise fail("hbom-parts", f"the HBOM describes {got.unit}, not {unit}")
    if got.parts != want.parts:
        extra = sorted(map(str, (got.parts - want.parts).elements()))[:3]
        missing = sorted(map(str, (want.parts - got.parts).elements()))[:3]
        raise fail("hbom-parts", f"HBOM parts differ from the install leaves: not installed "
                   f"{extra}, missing {missing}")
    if got.firmware != want.firmware:
        raise fail("hbom-parts", "HBOM firmware differs from the firmware.flashed leaves")
    return (f"{len(built.parts)} parts and {len(built.firmware)} firmware images match the "
            "install and firmware leaves")


def _check_materials(entries: list[Entry], built: AsBuilt) -> str:
    receipts: dict[str, list[tuple[Entry, b.MaterialReceived]]] = {}
    passed: set[str] = set()
    for e in entries:
        body = e.event.body
        if isinstance(body, b.MaterialReceived):
            receipts.setdefault(body.lot, []).append((e, body))
        elif isinstance(body, b.MaterialChecked) and body.result == "Passed":
            passed.add(body.receipt)
    lots = 0
    for part in built.parts:
        if part.serial is not None and part.serial in built.assemblies:
            continue  # built on this line: its own parts are checked instead
        ok = [rb for r, rb in receipts.get(part.lot, []) if r.event.id in passed]
        if not receipts.get(part.lot):
            raise fail("materials", f"part {part.serial or part.mpn} comes from lot {part.lot}, "
                       "which has no material.received leaf in the bundle")
        if not ok:
            raise fail("materials", f"lot {part.lot} has no passed material.checked leaf (not "
                       "on the approved vendor list, or the check was removed)")
        rb = ok[0]
        if rb.mpn != part.mpn:
            raise fail("materials", f"part {part.serial or part.mpn} is MPN {part.mpn} but lot "
                       f"{part.lot} was received as {rb.mpn}")
        if part.serial is not None and rb.serials and part.serial not in rb.serials:
            raise fail("materials", f"serial {part.serial} is not among lot {part.lot}'s "
                       "received serials")
        lots += 1
    return f"{lots} parts from received lots that passed the AVL check"


def _check_consistency(root: Path, cp: Checkpoint, plant: VerifierKey, held_dir: Path) -> str:
    try:
        own, own_links = read_checkpoints(root / HISTORY, plant)
        held, links = read_checkpoints(held_dir, plant)
        lines = prove_consistent(cp, [*own, *held], [*own_links, *links])
    except LedgerError as e:
        raise fail("consistency", str(e)) from None
    return (f"consistent with {len(held)} checkpoints held elsewhere"
            + (f" ({'; '.join(lines[-3:])})" if lines else ""))


def _check_telemetry(layout: Layout, entries: list[Entry], unit: str) -> str:
    """Each `telemetry/<run id>.jsonl` against the unit's `burnin.verdict` leaf of that run:
    the run's events, in order, as many as it counted, hashing to its commitment."""
    verdicts = {e.event.body.run_id: e.event.body for e in entries
                if isinstance(e.event.body, b.BurninVerdict) and e.event.subject == unit}
    events = 0
    for run_id, path in sorted(layout.telemetry.items()):
        rel = path.relative_to(layout.root).as_posix()
        verdict = verdicts.get(run_id)
        if verdict is None:
            raise fail("telemetry", f"{rel}: the bundle has no burnin.verdict leaf of unit "
                       f"{unit} for run {run_id}, so nothing commits this telemetry")
        try:
            values = read_telemetry_lines(path.read_bytes(), rel)
            check_run_telemetry(values, unit, verdict, rel)
        except ProofError as e:
            raise fail("telemetry", str(e)) from None
        events += len(values)
    if not layout.telemetry:
        return (f"none carried ({len(verdicts)} burn-in verdict(s) in the bundle; "
                "`linetrace evidence --telemetry` adds their runs' telemetry)")
    return (f"{len(layout.telemetry)} run(s), {events} telemetry events, each run hashing to "
            "the commitment its plant-signed burnin.verdict states")


def verify_bundle(root: Path, key: str | VerifierKey, checkpoints: Path | None = None,
                  report: Report = lambda check, message: None) -> None:
    """Run every check of LEDGER.md on the bundle at `root`; raise VerificationFailed on the
    first failure. `report(check, message)` is called after each check that passes.

    Fails closed: a file the bundle's format does not list, or one no check verifies, refuses
    the bundle naming the file (bundle.py)."""
    try:
        plant = key if isinstance(key, VerifierKey) else VerifierKey.parse(key)
    except LedgerError as e:
        raise fail("checkpoint", str(e)) from None
    layout = scan(root)
    unit = layout.manifest.unit
    report("bundle", f"evidence for unit {unit}, format {FORMAT_NAME}/{layout.manifest.version}, "
           f"{len(layout.leaves)} leaves, no unknown files")
    try:
        cp = open_checkpoint((root / CHECKPOINT).read_bytes(), plant)
    except LedgerError as e:
        raise fail("checkpoint", str(e)) from None
    report("checkpoint", f"signed by {plant.name} ({plant.key_id.hex()}), tree size {cp.size}")
    report("history", check_history(layout, cp, plant))
    leaves = _included(layout, cp)
    report("inclusion", f"{len(leaves)} leaves proven in the tree of {cp.size}")
    report("manifest", check_manifest(layout, cp, plant))
    entries = _entries(leaves)
    report("leaves", f"{len(entries)} canonical leaves with valid events")
    report("signatures", _check_signatures(entries, plant))
    report("statements", _check_statements(entries, layout.manifest.version))
    sealed = _check_chains(entries, unit)
    report("unit-chain", f"{len(sealed.chain)} unit events linked from the first to unit.sealed "
           f"(leaf {sealed.entry.index}), {len(sealed.chains) - 1} sub-assembly chains")
    hbom_bytes = (root / HBOM).read_bytes()
    report("hbom-seal", _check_seal(hbom_bytes, sealed))
    built = as_built(unit, sealed.chains)
    report("hbom-parts", _check_parts(hbom_bytes, unit, sealed, built))
    report("materials", _check_materials(entries, built))
    report("telemetry", _check_telemetry(layout, entries, unit))
    if checkpoints is not None:
        report("consistency", _check_consistency(root, cp, plant, checkpoints))
