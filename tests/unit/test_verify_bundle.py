"""Evidence bundles verified offline, and every tampering LEDGER.md lists caught by name."""

from __future__ import annotations

import base64
import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger import log
from linetrace.ledger.db import Ledger
from linetrace.ledger.evidence import NotSealed, write_evidence
from linetrace.ledger.proof import merkle
from linetrace.ledger.proof.bundle import MANIFEST, README, manifest_json, readme
from linetrace.ledger.proof.checkpoints import write_checkpoints
from linetrace.ledger.proof.leaf import Leaf, chain_of, parse_leaf
from linetrace.ledger.proof.note import Checkpoint, sign_checkpoint, sign_note, signer_from_seed
from linetrace.ledger.proof.verify import CHECKS, HISTORY, VerificationFailed, verify_bundle
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, deterministic_id, encode_event

from .test_log_line import (
    ORIGIN,
    PLANT,
    SIGNER,
    VKEY,
    Fed,
    feed_line,
    line,
    station_candidates,
    station_key,
)


def make_bundle(root: Path) -> tuple[Path, Fed]:
    """A sealed server's bundle whose history/ holds an earlier checkpoint (half the line) and
    the consistency proof from it to the bundle's checkpoint."""
    ledger = Ledger(f"sqlite:///{root / 'ledger.db'}")
    half = len(station_candidates(line())) // 2
    feed_line(ledger, line(), keep=lambda c: (c.record.offset or 0) < half)
    log.maybe_checkpoint(ledger, SIGNER, 1, 0)
    fed = feed_line(ledger, line())
    write_evidence(ledger, fed.server, root / "bundle", SIGNER)
    return root / "bundle", fed


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Fed]:
    return make_bundle(tmp_path_factory.mktemp("evidence"))


@pytest.fixture
def bundle(made: tuple[Path, Fed], tmp_path: Path) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(made[0], copy)
    return copy


def failed_check(bundle: Path, key: str = VKEY, checkpoints: Path | None = None) -> str | None:
    try:
        verify_bundle(bundle, key, checkpoints)
    except VerificationFailed as e:
        assert e.check in CHECKS and e.code == f"verify.{e.check}"
        return e.check
    return None


def unit_leaves(bundle: Path, unit: str) -> list[Path]:
    out = []
    for path in sorted((bundle / "leaves").glob("*.leaf")):
        ev = decode_event(parse_leaf(path.read_bytes()).value)
        if ev.subject == unit and ev.type not in ("material.received", "material.checked"):
            out.append(path)
    return out


def proof_of(leaf: Path) -> Path:
    return leaf.parent.parent / "proofs" / f"{leaf.stem}.json"


def checkpoint_of(bundle: Path) -> Checkpoint:
    return Checkpoint.parse((bundle / "checkpoint.txt").read_text().split("\n\n")[0] + "\n")


def restate(bundle: Path, key: str = VKEY) -> None:
    """A forger makes manifest.json and README.md state what the bundle's files now hold."""
    size = checkpoint_of(bundle).size
    unit = json.loads((bundle / MANIFEST).read_text())["unit"]
    indexes = sorted(int(p.stem) for p in (bundle / "leaves").glob("*.leaf"))
    (bundle / MANIFEST).write_text(manifest_json(unit, ORIGIN, key, size, indexes))
    (bundle / README).write_text(readme(unit, size, len(indexes), key))


def rebuild(bundle: Path, leaves: list[bytes]) -> None:
    """An insider with the plant key rebuilds a log of exactly these leaves and re-signs it:
    new proofs, checkpoint, history and manifest, all consistent."""
    shutil.rmtree(bundle / "leaves")
    shutil.rmtree(bundle / "proofs")
    shutil.rmtree(bundle / HISTORY)
    (bundle / "leaves").mkdir()
    (bundle / "proofs").mkdir()
    tree = merkle.MemoryTree.from_data(leaves)
    for i, data in enumerate(leaves):
        (bundle / "leaves" / f"{i:016d}.leaf").write_bytes(data)
        proof = [base64.b64encode(h).decode() for h in tree.inclusion_proof(i)]
        (bundle / "proofs" / f"{i:016d}.json").write_text(json.dumps(
            {"index": i, "tree_size": tree.size, "proof": proof}))
    note = sign_checkpoint(Checkpoint(ORIGIN, tree.size, tree.root()), SIGNER)
    (bundle / "checkpoint.txt").write_text(note)
    write_checkpoints(bundle / HISTORY, SIGNER.verifier, [(tree.size, note)], [])
    restate(bundle)


def relink(leaves: list[bytes]) -> list[bytes]:
    """Recompute every unit_prev link, as an insider rebuilding the log would."""
    heads: dict[tuple[str, str], bytes] = {}
    out = []
    for data in leaves:
        leaf = parse_leaf(data)
        ev = decode_event(leaf.value)
        chain = chain_of(ev)
        new = Leaf(leaf.value, leaf.keyid, leaf.signature, heads.get(chain), leaf.src).encode()
        heads[chain] = merkle.leaf_hash(new)
        out.append(new)
    return out


def test_bundle_of_a_sealed_simulated_server_verifies(made: tuple[Path, Fed]) -> None:
    seen: list[str] = []
    verify_bundle(made[0], VKEY, report=lambda check, msg: seen.append(check))
    assert seen == [c for c in CHECKS if c != "consistency"]
    readme = (made[0] / "README.md").read_text()
    assert "linetrace verify" in readme and VKEY in readme


def test_verify_runs_with_no_database_or_broker_library_imported() -> None:
    code = ("import sys, linetrace.ledger.proof.verify, linetrace.ledger.proof.hbom, "
            "linetrace.ledger.proof.bundle; "
            "print([m for m in sys.modules if m.split('.')[0] in "
            "('sqlalchemy', 'aiokafka', 'faust', 'psycopg')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_a_flipped_byte_in_a_leaf_fails_inclusion(bundle: Path) -> None:
    leaf = unit_leaves(bundle, "SRV-S7-000001")[5]
    data = bytearray(leaf.read_bytes())
    data[40] ^= 0x01
    leaf.write_bytes(bytes(data))
    assert failed_check(bundle) == "inclusion"


def test_a_dropped_unit_event_breaks_the_unit_chain(bundle: Path) -> None:
    leaf = unit_leaves(bundle, "SRV-S7-000001")[10]
    leaf.unlink()
    proof_of(leaf).unlink()
    restate(bundle)
    assert failed_check(bundle) == "unit-chain"


def test_two_unit_events_swapped_fail_inclusion(bundle: Path) -> None:
    a, c = unit_leaves(bundle, "SRV-S7-000001")[3:5]
    da, dc = a.read_bytes(), c.read_bytes()
    a.write_bytes(dc)
    c.write_bytes(da)
    assert failed_check(bundle) == "inclusion"


def test_two_unit_events_swapped_in_a_rebuilt_and_resigned_log_break_the_chain(
        bundle: Path) -> None:
    leaves = [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]
    units = [(i, decode_event(parse_leaf(d).value)) for i, d in enumerate(leaves)]
    mine = [(i, e.source) for i, e in units if e.subject == "SRV-S7-000001"]
    i, j = next((a, b) for (a, sa), (b, sb) in zip(mine, mine[1:]) if sa == sb)  # same station
    leaves[i], leaves[j] = leaves[j], leaves[i]
    rebuild(bundle, relink(leaves))
    with pytest.raises(VerificationFailed, match="stationseq not after") as e:
        verify_bundle(bundle, VKEY)
    assert e.value.check == "unit-chain"


def test_a_checkpoint_with_another_origin_fails(bundle: Path) -> None:
    cp = Checkpoint.parse((bundle / "checkpoint.txt").read_text().split("\n\n")[0] + "\n")
    forged = Checkpoint("other.plant/linetrace/v1", cp.size, cp.root)
    (bundle / "checkpoint.txt").write_text(sign_note(forged.body(), SIGNER))
    assert failed_check(bundle) == "checkpoint"


def test_a_checkpoint_not_signed_by_the_given_key_fails(bundle: Path) -> None:
    stranger = signer_from_seed(hashlib.sha256(b"stranger").digest(), ORIGIN)
    cp = Checkpoint.parse((bundle / "checkpoint.txt").read_text().split("\n\n")[0] + "\n")
    note = sign_checkpoint(cp, stranger)
    (bundle / "checkpoint.txt").write_text(note)
    assert failed_check(bundle) == "checkpoint"
    # a stranger who re-signs everything the bundle holds still cannot sign the plant's events
    shutil.rmtree(bundle / HISTORY)
    write_checkpoints(bundle / HISTORY, stranger.verifier, [(cp.size, note)], [])
    restate(bundle, str(stranger.verifier))
    assert failed_check(bundle, key=str(stranger.verifier)) == "signatures"


def test_proofs_for_another_tree_size_fail_even_when_they_claim_the_right_size(
        bundle: Path, made: tuple[Path, Fed]) -> None:
    size = json.loads((bundle / "manifest.json").read_text())["tree_size"]
    with made[1].ledger.reader() as s:
        for path in sorted((bundle / "proofs").glob("*.json")):
            index = int(path.stem)
            proof = log.inclusion(s, index, size - 1) if index < size - 1 else []
            path.write_text(json.dumps({"index": index, "tree_size": size,
                                        "proof": [base64.b64encode(h).decode() for h in proof]}))
    assert failed_check(bundle) == "inclusion"


def test_the_hbom_edited_after_sealing_fails_the_seal(bundle: Path) -> None:
    hbom = bundle / "hbom.cdx.json"
    hbom.write_bytes(hbom.read_bytes().replace(b"GPU-S7-000003", b"GPU-S7-000099"))
    assert failed_check(bundle) == "hbom-seal"


def test_a_missing_avl_check_fails_materials(bundle: Path) -> None:
    leaves = [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]
    kept = [d for d in leaves if not (decode_event(parse_leaf(d).value).type
                                      == "material.checked" and b"LOT-S7-GPU-0001" in
                                      parse_leaf(d).value)]
    assert len(kept) == len(leaves) - 1
    rebuild(bundle, kept)
    assert failed_check(bundle) == "materials"


def test_a_log_rebuilt_with_a_station_event_signed_by_an_unenrolled_key_fails_signatures(
        tmp_path: Path) -> None:
    rogue = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"rogue").digest())
    plan = line()
    target = next(i for i, e in enumerate(plan.stream())
                  if e.subject == plan.servers[0].serial and e.event_type == "materials.installed")

    def resign(n: int, value: bytes, key: Ed25519PrivateKey) -> tuple[bytes, Ed25519PrivateKey]:
        return value, rogue if n == target else key

    ledger = Ledger(f"sqlite:///{tmp_path / 'forged.db'}")
    fed = feed_line(ledger, plan, tamper=resign)
    write_evidence(ledger, fed.server, tmp_path / "bundle", SIGNER)
    assert failed_check(tmp_path / "bundle") == "signatures"


def test_consistency_with_checkpoints_held_elsewhere(made: tuple[Path, Fed], tmp_path: Path
                                                     ) -> None:
    bundle, fed = made
    log.export_checkpoints(fed.ledger, tmp_path / "held", SIGNER.verifier)
    assert failed_check(bundle, checkpoints=tmp_path / "held") is None
    other = Ledger(f"sqlite:///{tmp_path / 'fork.db'}")  # same plant key, other history
    forked = feed_line(other, line(units=1, seed=8))
    log.maybe_checkpoint(other, SIGNER, 1, 0)
    log.export_checkpoints(forked.ledger, tmp_path / "fork", SIGNER.verifier)
    assert failed_check(bundle, checkpoints=tmp_path / "fork") == "consistency"


def test_evidence_is_refused_for_a_unit_that_is_not_sealed(made: tuple[Path, Fed],
                                                          tmp_path: Path) -> None:
    with pytest.raises(NotSealed):
        write_evidence(made[1].ledger, "PCBA-S7-000001", tmp_path / "b", SIGNER)


def test_an_event_signed_after_its_key_was_revoked_fails_signatures(bundle: Path) -> None:
    leaves = [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]
    packed = next(decode_event(parse_leaf(d).value) for d in leaves
                  if decode_event(parse_leaf(d).value).type == "unit.packed")
    assert packed.seq is not None
    keyid = signing.keyid_of(station_key(packed.source).public_key())
    body = b.StationRevoked(station_id=packed.source, keyid=keyid, last_valid=[
        b.TopicSeq(topic="line.events", stationseq=f"{packed.seq - 1:016d}")])
    revoke = encode_event(event_type="station.revoked", source="linetrace",
                          subject=packed.source, body=body, time=packed.envelope.time,
                          event_id=deterministic_id("station.revoked", packed.source, keyid))
    kid, sig = signing.read_signature(signing.sign_value(revoke, PLANT))
    leaf = Leaf(revoke, kid, sig, None, {"cause": keyid}).encode()  # first of its chain here
    rebuild(bundle, [*leaves, leaf])
    with pytest.raises(VerificationFailed, match="after its revocation") as e:
        verify_bundle(bundle, VKEY)
    assert e.value.check == "signatures"
