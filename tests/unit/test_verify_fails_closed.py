"""`verify` fails closed: every file of a bundle is verified or the bundle is refused, naming
the file; the manifest format is versioned and older bundles still verify.

Each check `verify` prints has at least one test here or in test_verify_bundle.py that fails
when that check is replaced by a no-op (the tampering then verifies, or fails elsewhere).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import msgspec
import pytest

from linetrace.ledger.proof.bundle import (
    BUNDLE_FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    README,
    REQUIRES,
)
from linetrace.ledger.proof.leaf import Leaf, parse_leaf
from linetrace.ledger.proof.note import Checkpoint, sign_checkpoint, signer_from_seed
from linetrace.ledger.proof.verify import CHECKS, VerificationFailed, verify_bundle
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event

from .test_log_line import ORIGIN, PLANT, SIGNER, VKEY
from .test_verify_bundle import bundle, checkpoint_of, made, rebuild, relink, restate

__all__ = ["bundle", "made"]  # fixtures

DATA = Path(__file__).parent / "data"


def refused(bundle: Path, key: str = VKEY) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as e:
        verify_bundle(bundle, key)
    return e.value


def leaves_of(bundle: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]


def history_files(bundle: Path, kind: str) -> list[Path]:
    return sorted((bundle / "history" / kind).iterdir())


# --- bundle: only the files of the bundle's format ------------------------------------------


@pytest.mark.parametrize("name", [
    "notes.txt", ".DS_Store", "leaves/0000000000000003.leaf.orig", "leaves/extra.json",
    "proofs/extra.json", "history/extra.txt", "history/checkpoints/0000000000000001.txt.bak",
    "history/consistency/README.md"])
def test_an_unknown_extra_file_is_refused_by_name(bundle: Path, name: str) -> None:
    (bundle / name).write_text("added after the bundle was made\n")
    e = refused(bundle)
    assert e.check == "bundle" and e.code == "verify.bundle"
    assert f"unknown file {name}" in str(e)


def test_an_unknown_directory_or_a_link_is_refused_by_name(bundle: Path) -> None:
    (bundle / "attachments").mkdir()
    e = refused(bundle)
    assert e.check == "bundle" and "attachments/" in str(e)
    (bundle / "attachments").rmdir()
    (bundle / "hbom.cdx.json").rename(bundle.parent / "elsewhere.json")
    os.symlink(bundle.parent / "elsewhere.json", bundle / "hbom.cdx.json")
    e = refused(bundle)
    assert e.check == "bundle" and "hbom.cdx.json is not a plain file" in str(e)


@pytest.mark.parametrize("name", [MANIFEST, "checkpoint.txt", "hbom.cdx.json", README,
                                  "history/verifier-key.txt"])
def test_a_missing_file_is_refused_by_name(bundle: Path, name: str) -> None:
    (bundle / name).unlink()
    e = refused(bundle)
    assert e.check == "bundle" and name in str(e)


def test_a_leaf_without_its_proof_and_a_proof_without_its_leaf_are_refused(bundle: Path) -> None:
    leaf = sorted((bundle / "leaves").glob("*.leaf"))[7]
    proof = bundle / "proofs" / f"{leaf.stem}.json"
    proof.rename(bundle.parent / "aside.json")
    e = refused(bundle)
    assert e.check == "bundle" and f"leaves/{leaf.name} has no inclusion proof" in str(e)
    (bundle.parent / "aside.json").rename(proof)
    leaf.unlink()
    e = refused(bundle)
    assert e.check == "bundle" and f"proofs/{leaf.stem}.json" in str(e)


@pytest.mark.parametrize("change", [
    {"note": "an extra manifest field"}, {"unit": None}, {"tree_size": "132"},
    {"format": "linetrace-evidence/v2"}, {"format": "other-bundle/1"},
    {"requires": "linetrace>=9"}])
def test_a_manifest_not_of_its_format_is_refused(bundle: Path, change: dict[str, object]
                                                 ) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    (bundle / MANIFEST).write_text(json.dumps({**manifest, **change}))
    e = refused(bundle)
    assert e.check == "bundle" and MANIFEST in str(e)


def test_a_newer_bundle_format_is_refused_naming_the_version_it_needs(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    newer = f"linetrace-evidence/{FORMAT_VERSION + 1}"
    manifest.update({"format": newer, "requires": "linetrace>=0.7.0", "holds": [12]})
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    e = refused(bundle)
    assert e.check == "bundle"
    assert f"this bundle is format {newer}" in str(e) and "linetrace>=0.7.0" in str(e)
    assert f"reads linetrace-evidence/1 to {BUNDLE_FORMAT}" in str(e)


# --- formats --------------------------------------------------------------------------------


def test_the_writer_writes_the_current_format_and_names_who_reads_it(made: tuple[Path, object]
                                                                    ) -> None:
    manifest = json.loads((made[0] / MANIFEST).read_text())
    assert manifest["format"] == BUNDLE_FORMAT == "linetrace-evidence/4"
    assert manifest["requires"] == REQUIRES[FORMAT_VERSION]
    assert REQUIRES[FORMAT_VERSION] in (made[0] / README).read_text()


@pytest.fixture
def older(tmp_path: Path) -> Path:
    """A format-1 bundle as the writer of linetrace-evidence/1 made it (commit 04b92af)."""
    with zipfile.ZipFile(DATA / "evidence-format1.zip") as z:
        z.extractall(tmp_path / "older")
    return tmp_path / "older"


def test_an_older_format_1_bundle_still_verifies_every_check(older: Path) -> None:
    assert json.loads((older / MANIFEST).read_text())["format"] == "linetrace-evidence/1"
    seen: list[tuple[str, str]] = []
    verify_bundle(older, VKEY, report=lambda check, msg: seen.append((check, msg)))
    assert [c for c, _ in seen] == [c for c in CHECKS if c != "consistency"]
    assert "format linetrace-evidence/1" in seen[0][1]


def test_an_older_bundle_is_still_verified_file_by_file(older: Path) -> None:
    readme = older / README
    readme.write_text(readme.read_text().replace(VKEY, VKEY.replace("A", "B", 1)))
    assert refused(older).check == "manifest"


# --- history: the bundled checkpoints and consistency proofs ---------------------------------


def test_an_altered_checkpoint_in_history_is_refused_by_name(bundle: Path) -> None:
    earlier = history_files(bundle, "checkpoints")[0]
    text = earlier.read_text().split("\n")
    root = bytearray(base64.b64decode(text[2]))
    root[0] ^= 1
    text[2] = base64.b64encode(bytes(root)).decode()
    earlier.write_text("\n".join(text))
    e = refused(bundle)
    assert e.check == "history" and f"history/checkpoints/{earlier.name}" in str(e)


def test_an_altered_consistency_proof_in_history_is_refused_by_name(bundle: Path) -> None:
    (link,) = history_files(bundle, "consistency")
    doc = json.loads(link.read_text())
    doc["proof"][0] = base64.b64encode(hashlib.sha256(b"forged").digest()).decode()
    link.write_text(json.dumps(doc))
    e = refused(bundle)
    assert e.check == "history" and f"history/consistency/{link.name}" in str(e)


def test_a_consistency_proof_whose_name_lies_about_its_sizes_is_refused(bundle: Path) -> None:
    (link,) = history_files(bundle, "consistency")
    s1, s2 = (int(x) for x in link.stem.split("-"))
    link.rename(link.with_name(f"{s1 - 1:016d}-{s2:016d}.json"))
    assert refused(bundle).check == "history"


def test_a_history_without_the_bundles_checkpoint_is_refused(bundle: Path) -> None:
    size = checkpoint_of(bundle).size
    (bundle / "history" / "checkpoints" / f"{size:016d}.txt").unlink()
    assert refused(bundle).check == "history"


def test_a_signed_checkpoint_in_history_that_nothing_links_is_refused(bundle: Path) -> None:
    stray = Checkpoint(ORIGIN, 5, hashlib.sha256(b"some tree of five").digest())
    (bundle / "history" / "checkpoints" / f"{5:016d}.txt").write_text(sign_checkpoint(stray, SIGNER))
    e = refused(bundle)
    assert e.check == "history" and "size 5" in str(e)


def test_a_history_naming_another_key_is_refused(bundle: Path) -> None:
    stranger = signer_from_seed(hashlib.sha256(b"stranger").digest(), ORIGIN)
    (bundle / "history" / "verifier-key.txt").write_text(f"{stranger.verifier}\n")
    e = refused(bundle)
    assert e.check == "history" and "history/verifier-key.txt" in str(e)


# --- inclusion: the proof files ---------------------------------------------------------------


@pytest.mark.parametrize("change", [{"index": 3}, {"comment": "x"}, {"tree_size": None}])
def test_a_proof_file_that_is_not_exactly_its_leafs_proof_is_refused(bundle: Path,
                                                                    change: dict[str, object]
                                                                    ) -> None:
    proof = sorted((bundle / "proofs").glob("*.json"))[9]
    doc = {k: v for k, v in json.loads(proof.read_text()).items() if k not in change}
    proof.write_text(json.dumps({**doc, **{k: v for k, v in change.items() if v is not None}}))
    e = refused(bundle)
    assert e.check == "inclusion" and proof.name in str(e)


# --- manifest: manifest and README agree with what the bundle proves -------------------------


def test_a_manifest_that_disagrees_with_the_leaves_is_refused(bundle: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    manifest["leaves"] = manifest["leaves"][:-1]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    e = refused(bundle)
    assert e.check == "manifest" and "leaves" in str(e)


@pytest.mark.parametrize("field,value", [
    ("tree_size", 7), ("origin", "other.plant/linetrace/v1"), ("verifier_key", "x+00000000+AA==")])
def test_a_manifest_that_disagrees_with_the_checkpoint_or_key_is_refused(
        bundle: Path, field: str, value: object) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    (bundle / MANIFEST).write_text(json.dumps({**manifest, field: value}))
    e = refused(bundle)
    assert e.check == "manifest" and field in str(e)


def test_an_edited_readme_is_refused(bundle: Path) -> None:
    stranger = signer_from_seed(hashlib.sha256(b"stranger").digest(), ORIGIN)
    readme = bundle / README
    readme.write_text(readme.read_text().replace(VKEY, str(stranger.verifier)))
    e = refused(bundle)
    assert e.check == "manifest" and README in str(e)


# --- leaves: canonical form and valid events (an insider re-signing the log) ------------------


def test_a_leaf_not_in_canonical_form_fails_leaves_even_when_proven(bundle: Path) -> None:
    leaves = leaves_of(bundle)
    leaves[-1] = json.dumps(json.loads(leaves[-1]), indent=1).encode()  # same content
    rebuild(bundle, leaves)
    e = refused(bundle)
    assert e.check == "leaves" and "canonical" in str(e)


def test_a_leaf_whose_value_is_not_an_event_fails_leaves(bundle: Path) -> None:
    leaves = leaves_of(bundle)
    last = parse_leaf(leaves[-1])
    leaves[-1] = Leaf(b'{"type": "not.an.event"}', last.keyid, last.signature, last.unit_prev,
                      last.src).encode()
    rebuild(bundle, leaves)
    assert refused(bundle).check == "leaves"


# --- hbom-parts: an HBOM sealed by the plant key that does not state the installed parts ------


def test_an_hbom_resealed_with_other_parts_fails_hbom_parts(bundle: Path) -> None:
    hbom = (bundle / "hbom.cdx.json").read_bytes().replace(b"GPU-S7-000003", b"GPU-S7-000099")
    (bundle / "hbom.cdx.json").write_bytes(hbom)
    leaves = leaves_of(bundle)
    at = next(i for i, d in enumerate(leaves)
              if decode_event(parse_leaf(d).value).type == "unit.sealed")
    old = parse_leaf(leaves[at])
    seal = decode_event(old.value)
    assert isinstance(seal.body, b.UnitSealed)
    body = msgspec.structs.replace(seal.body, hbom_sha256=hashlib.sha256(hbom).hexdigest())
    value = encode_event(event_type="unit.sealed", source=seal.source, subject=seal.subject,
                         body=body, time=seal.envelope.time, event_id=seal.id)
    kid, sig = signing.read_signature(signing.sign_value(value, PLANT))
    leaves[at] = Leaf(value, kid, sig, old.unit_prev, old.src).encode()
    rebuild(bundle, relink(leaves))
    e = refused(bundle)
    assert e.check == "hbom-parts" and "GPU-S7-000099" in str(e)


# --- the CLI, also under `python -O` (no check is an assert) ---------------------------------


def test_verify_under_python_O_refuses_a_bad_manifest_naming_the_check(bundle: Path,
                                                                      tmp_path: Path) -> None:
    manifest = json.loads((bundle / MANIFEST).read_text())
    del manifest["unit"]
    (bundle / MANIFEST).write_text(json.dumps(manifest))
    done = subprocess.run([sys.executable, "-O", "-m", "linetrace.cli.main", "verify",
                           str(bundle), "--key", VKEY, "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "FAIL  bundle" in done.stdout and MANIFEST in done.stdout
    assert "[verify.bundle]" in done.stderr


def test_verify_cli_names_an_unknown_file(bundle: Path, tmp_path: Path) -> None:
    (bundle / "leaves" / "0000000000000000.leaf.orig").write_bytes(b"x")
    done = subprocess.run([sys.executable, "-m", "linetrace.cli.main", "verify", str(bundle),
                           "--key", VKEY, "--data-dir", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert "FAIL  bundle" in done.stdout and "leaves/0000000000000000.leaf.orig" in done.stdout
