"""The evidence bundle as files: its layout, manifest, README and bundled history, checked.

`verify` fails closed: every file in a bundle is one the bundle's format lists and is verified
by some check, or the bundle is refused naming the file. This module holds the checks about
files (`bundle`, `history`, `manifest`); verify.py holds those about leaves and the unit.
The writer (ledger/evidence.py) uses the same names, so what is written is what is read.

Formats: the manifest's `format` is `linetrace-evidence/<n>`. Every addition to bundles bumps
`n`; a verifier reads every format up to its own `FORMAT_VERSION` and names the format it would
need for a newer one (with the manifest's `requires`, which newer writers state).
"""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .checkpoints import CHECKPOINTS, CONSISTENCY, VERIFIER_KEY, prove_consistent, read_link
from .errors import LedgerError
from .merkle import verify_consistency
from .note import Checkpoint, VerifierKey, open_checkpoint

FORMAT_NAME = "linetrace-evidence"
FORMAT_VERSION = 4  # the newest format this code writes and reads; older ones are read too
BUNDLE_FORMAT = f"{FORMAT_NAME}/{FORMAT_VERSION}"
#: Per format from 2 on: the linetrace releases that read it (the manifest's `requires`).
REQUIRES: Mapping[int, str] = {2: "linetrace>=0.1.0", 3: "linetrace>=0.1.0",
                                4: "linetrace>=0.1.0"}
#: The first format whose bundles carry hold and user leaves (checked by `statements`).
PEOPLE_FORMAT = 3
#: The first format whose bundles carry the people's `alert.*` leaves (checked by `statements`).
ALERT_FORMAT = 4
MANIFEST, CHECKPOINT, HBOM, README = "manifest.json", "checkpoint.txt", "hbom.cdx.json", "README.md"
LEAVES, PROOFS, HISTORY = "leaves", "proofs", "history"
#: The first format that may carry a unit's raw burn-in telemetry (`telemetry/<run id>.jsonl`,
#: written with `linetrace evidence --telemetry`, checked against the `burnin.verdict` leaves).
TELEMETRY_FORMAT = 4
TELEMETRY = "telemetry"

#: The fields of a manifest, per format version. 1: the first bundles. 2: adds `requires`; the
#: manifest and README are verified against the bundle (1's are too, with 1's README). 3: the
#: same fields; the bundle also carries the unit's hold leaves and the user leaves of everyone
#: who signed them (checked by `statements`), and its README says so. 4: the same fields; the
#: bundle also carries the people's actions on the alerts about the unit (`alert.*` leaves,
#: checked by `statements`) and the user leaves of their signers, and its README says so.
_FIELDS_1 = frozenset({"format", "unit", "origin", "verifier_key", "tree_size", "leaves"})
MANIFEST_FIELDS: Mapping[int, frozenset[str]] = {1: _FIELDS_1, 2: _FIELDS_1 | {"requires"},
                                                 3: _FIELDS_1 | {"requires"},
                                                 4: _FIELDS_1 | {"requires"}}

#: The checks `linetrace verify` runs, in order; a failure names one of them.
CHECKS = ("bundle", "checkpoint", "history", "inclusion", "manifest", "leaves", "signatures",
          "statements", "unit-chain", "hbom-seal", "hbom-parts", "materials", "telemetry",
          "consistency")

_DIRS = frozenset({LEAVES, PROOFS, HISTORY, f"{HISTORY}/{CHECKPOINTS}", f"{HISTORY}/{CONSISTENCY}",
                   TELEMETRY})
_LEAF = re.compile(rf"{LEAVES}/(\d{{16}})\.leaf")
_PROOF = re.compile(rf"{PROOFS}/(\d{{16}})\.json")
_HELD = re.compile(rf"{HISTORY}/{CHECKPOINTS}/(\d{{16}})\.txt")
_LINK = re.compile(rf"{HISTORY}/{CONSISTENCY}/(\d{{16}})-(\d{{16}})\.json")
_TELEMETRY = re.compile(rf"{TELEMETRY}/([0-9a-f]{{8}}(?:-[0-9a-f]{{4}}){{3}}-[0-9a-f]{{12}})\.jsonl")
_FORMAT = re.compile(rf"{FORMAT_NAME}/([1-9]\d{{0,5}})")


class VerificationFailed(LedgerError):
    """One check of an evidence bundle failed; `check` names it (one of CHECKS)."""

    code = "verify.failed"

    def __init__(self, check: str, message: str) -> None:
        super().__init__(f"{check}: {message}", code=f"verify.{check}")
        self.check = check


def fail(check: str, message: str) -> VerificationFailed:
    return VerificationFailed(check, message)


def telemetry_file(run_id: str) -> str:
    return f"{TELEMETRY}/{run_id}.jsonl"


def leaf_file(index: int) -> str:
    return f"{LEAVES}/{index:016d}.leaf"


def proof_file(index: int) -> str:
    return f"{PROOFS}/{index:016d}.json"


@dataclass(frozen=True)
class Manifest:
    version: int
    requires: str | None
    unit: str
    origin: str
    verifier_key: str
    tree_size: int
    leaves: tuple[int, ...]


@dataclass(frozen=True)
class Layout:
    """Every file of a bundle, by role. Nothing else is in the directory (`scan` refuses it)."""

    root: Path
    manifest: Manifest
    leaves: dict[int, Path]
    proofs: dict[int, Path]
    held: dict[int, Path]  # history/checkpoints, by the size in the file name
    links: dict[tuple[int, int], Path]  # history/consistency, by the sizes in the file name
    telemetry: dict[str, Path] = field(default_factory=dict)  # telemetry/, by run id


def _files(root: Path) -> list[str]:
    """Every entry under `root` (relative, '/'-separated), refusing what is not a plain file or
    one of the bundle's directories; links are never followed."""
    out = []
    for top, dirs, names in os.walk(root, followlinks=False):
        for name in sorted(dirs + names):
            path = Path(top, name)
            rel = path.relative_to(root).as_posix()
            mode = path.lstat().st_mode
            if stat.S_ISDIR(mode):
                if rel not in _DIRS:
                    raise fail("bundle", f"unknown directory {rel}/ is not part of an evidence "
                               "bundle; refusing a bundle with contents that are not verified")
            elif not stat.S_ISREG(mode):
                raise fail("bundle", f"{rel} is not a plain file (a link or device); refusing it")
            else:
                out.append(rel)
    return out


def _manifest(root: Path) -> Manifest:
    try:
        doc = json.loads((root / MANIFEST).read_bytes())
    except OSError as e:
        raise fail("bundle", f"cannot read {MANIFEST}: {e.strerror}; is this an evidence bundle "
                   "made by `linetrace evidence`?") from None
    except ValueError:
        raise fail("bundle", f"{MANIFEST} is not JSON") from None
    fmt = doc.get("format") if isinstance(doc, dict) else None
    m = _FORMAT.fullmatch(fmt) if isinstance(fmt, str) else None
    if m is None:
        raise fail("bundle", f"{MANIFEST} does not name a {FORMAT_NAME}/<n> format")
    version = int(m.group(1))
    if version not in MANIFEST_FIELDS:
        requires = doc.get("requires")
        raise fail("bundle", f"this bundle is format {fmt}; this verifier reads "
                   f"{FORMAT_NAME}/1 to {BUNDLE_FORMAT}: verify it with a linetrace that reads "
                   f"{fmt}" + (f" ({requires})" if isinstance(requires, str) else "")
                   + " (pip install -U linetrace)")
    fields = MANIFEST_FIELDS[version]
    if set(doc) != fields:
        extra, missing = sorted(set(doc) - fields), sorted(fields - set(doc))
        raise fail("bundle", f"{MANIFEST} of {fmt} has unknown fields {extra} or lacks {missing}")
    leaves, requires = doc["leaves"], doc.get("requires")
    if requires is not None and requires != REQUIRES[version]:
        raise fail("bundle", f"{MANIFEST}: a {fmt} bundle requires {REQUIRES[version]!r}, not "
                   f"{requires!r}")
    if not (all(isinstance(doc[k], str) for k in ("unit", "origin", "verifier_key"))
            and _is_int(doc["tree_size"]) and isinstance(leaves, list)
            and all(_is_int(i) for i in leaves)):
        raise fail("bundle", f"{MANIFEST}: unit, origin and verifier_key must be strings, "
                   "tree_size an integer and leaves a list of integers")
    return Manifest(version, requires, doc["unit"], doc["origin"], doc["verifier_key"],
                    doc["tree_size"], tuple(leaves))


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def scan(root: Path) -> Layout:
    """The `bundle` check: the directory holds exactly the files of a known format."""
    if not root.is_dir():
        raise fail("bundle", f"{root} is not a directory (unzip a bundle first)")
    files = _files(root)
    manifest = _manifest(root)
    leaves: dict[int, Path] = {}
    proofs: dict[int, Path] = {}
    held: dict[int, Path] = {}
    links: dict[tuple[int, int], Path] = {}
    telemetry: dict[str, Path] = {}
    for rel in files:
        path = root / rel
        if rel in (MANIFEST, CHECKPOINT, HBOM, README, f"{HISTORY}/{VERIFIER_KEY}"):
            continue
        if m := _LEAF.fullmatch(rel):
            leaves[int(m.group(1))] = path
        elif m := _PROOF.fullmatch(rel):
            proofs[int(m.group(1))] = path
        elif m := _HELD.fullmatch(rel):
            held[int(m.group(1))] = path
        elif m := _LINK.fullmatch(rel):
            links[(int(m.group(1)), int(m.group(2)))] = path
        elif (m := _TELEMETRY.fullmatch(rel)) and manifest.version >= TELEMETRY_FORMAT:
            telemetry[m.group(1)] = path
        else:
            raise fail("bundle", f"unknown file {rel}: not part of a {BUNDLE_FORMAT} bundle, so "
                       "nothing verifies it; refusing the bundle (remove it if you added it)")
    for name in (CHECKPOINT, HBOM, README, f"{HISTORY}/{VERIFIER_KEY}"):
        if name not in files:
            raise fail("bundle", f"{name} is missing")
    if not leaves:
        raise fail("bundle", f"the bundle has no {LEAVES}/")
    for index in sorted(leaves.keys() - proofs.keys()):
        raise fail("bundle", f"{leaf_file(index)} has no inclusion proof {proof_file(index)}")
    for index in sorted(proofs.keys() - leaves.keys()):
        raise fail("bundle", f"{proof_file(index)} proves no leaf: {leaf_file(index)} is missing")
    if not held:
        raise fail("bundle", f"{HISTORY}/{CHECKPOINTS}/ holds no checkpoint")
    return Layout(root, manifest, leaves, proofs, held, links, telemetry)


def check_history(layout: Layout, cp: Checkpoint, plant: VerifierKey) -> str:
    """The `history` check: every bundled checkpoint is signed by the plant key and consistent
    with the bundle's checkpoint, through consistency proofs that all verify."""
    rel = f"{HISTORY}/{VERIFIER_KEY}"
    if (layout.root / rel).read_bytes() != f"{plant}\n".encode():
        raise fail("history", f"{rel} does not hold the key given with --key ({plant})")
    own: dict[int, Checkpoint] = {}
    for size, path in sorted(layout.held.items()):
        name = path.relative_to(layout.root).as_posix()
        try:
            held = open_checkpoint(path.read_bytes(), plant)
        except LedgerError as e:
            raise fail("history", f"{name}: {e}") from None
        if held.size != size:
            raise fail("history", f"{name} holds the checkpoint of tree size {held.size}")
        own[size] = held
    if cp.size not in own or own[cp.size].root != cp.root:
        raise fail("history", f"{HISTORY}/{CHECKPOINTS}/ does not hold {CHECKPOINT} (tree size "
                   f"{cp.size} with the same root)")
    links = []
    for (size1, size2), path in sorted(layout.links.items()):
        name = path.relative_to(layout.root).as_posix()
        try:
            link = read_link(path)
        except LedgerError as e:
            raise fail("history", str(e)) from None
        if (link.size1, link.size2) != (size1, size2):
            raise fail("history", f"{name} says it links sizes {link.size1} and {link.size2}")
        if size1 not in own or size2 not in own:
            raise fail("history", f"{name} links a tree size with no checkpoint in {HISTORY}/")
        try:
            verify_consistency(size1, size2, link.proof, own[size1].root, own[size2].root)
        except LedgerError as e:
            raise fail("history", f"{name}: the consistency proof does not verify ({e})") from None
        links.append(link)
    try:
        prove_consistent(cp, list(own.values()), links)
    except LedgerError as e:
        raise fail("history", f"{HISTORY}/: {e}") from None
    return (f"{len(own)} signed checkpoints and {len(links)} consistency proofs, all consistent "
            f"with tree size {cp.size}")


def manifest_json(unit: str, origin: str, key: str, size: int, leaves: list[int]) -> str:
    """The manifest the writer puts in a bundle of the current format."""
    doc = {"format": BUNDLE_FORMAT, "requires": REQUIRES[FORMAT_VERSION], "unit": unit,
           "origin": origin, "verifier_key": key, "tree_size": size, "leaves": leaves}
    return json.dumps(doc, indent=1) + "\n"


def readme(unit: str, size: int, leaves: int, key: str, version: int = FORMAT_VERSION) -> str:
    """The README of a bundle of format `version`: what the writer writes and, byte for byte,
    what the verifier expects (a README that tells an auditor anything else is refused)."""
    if version == 1:
        return _readme_1(unit, size, leaves, key)
    if version == 2:
        return _readme_2(unit, size, leaves, key)
    text = _readme_3(unit, size, leaves, key, version)
    if version >= ALERT_FORMAT:
        for old, new in _README_ALERTS:
            assert old in text
            text = text.replace(old, new)
    if version >= TELEMETRY_FORMAT:
        for old, new in _README_TELEMETRY:
            assert old in text
            text = text.replace(old, new)
    return text


#: What the README says from TELEMETRY_FORMAT on: the optional telemetry files and their check.
_README_TELEMETRY = (
    (f"| `{HISTORY}/` | this checkpoint, the previous one and the consistency proof between them |\n",
     f"| `{HISTORY}/` | this checkpoint, the previous one and the consistency proof between them |\n"
     f"| `{TELEMETRY}/<run id>.jsonl` | (with `linetrace evidence --telemetry`) a burn-in run's "
     "`burnin.telemetry` events, base64 of their exact bytes, one per line, in stationseq order |\n"),
    ("approved-vendor check), consistency (with `--checkpoints`).",
     "approved-vendor check), telemetry (each run's telemetry file holds exactly the events its\n"
     "plant-signed `burnin.verdict` leaf committed: count, order and SHA-256), consistency (with\n"
     "`--checkpoints`)."),
)


#: What format 4's README says beyond format 3's: the alert leaves and their statements.
_README_ALERTS = (
    ("disposed) and the enrolment, role, key and removal leaves of every person who signed one of\n"
     "them, and of the admins who enrolled those people, back to the first admin.",
     "disposed), the people's actions on the alerts about them (acknowledged, shelved, unshelved,\n"
     "commented, out of service, returned to service) and the enrolment, role, key and removal\n"
     "leaves of every person who signed one of them, and of the admins who enrolled those people,\n"
     "back to the first admin."),
    ("statements (every person's signed statement in a hold or user leaf verifies with the key "
     "their\n`user.enrolled` leaf enrols,",
     "statements (every person's signed statement in a hold, alert or user leaf verifies with "
     "the\nkey their `user.enrolled` leaf enrols,"),
)


def _readme_3(unit: str, size: int, leaves: int, key: str, version: int) -> str:
    """Format 3's README (format 4's adds `_README_ALERTS` to it)."""
    return f"""# Evidence bundle for unit {unit}

Made by linetrace from the plant's verifiable ledger: {leaves} ledger leaves proven in the
signed checkpoint of tree size {size}. To check it, with nothing but `pip install linetrace`
({REQUIRES[version]}, which reads {FORMAT_NAME}/{version}):

    linetrace verify . --key '{key}'

Get the verifier key from the plant through a channel you trust (not from this file), and pass
`--checkpoints DIR` with checkpoints you received earlier or later (`linetrace checkpoint
--export`) to prove this log is the one they describe. `verify` refuses the bundle if a file
was added, removed or changed, this one included.

| path | what |
|---|---|
| `{MANIFEST}` | format, the linetrace that reads it, unit serial, origin, verifier key, tree size, leaf indexes |
| `{CHECKPOINT}` | the signed checkpoint (C2SP tlog-checkpoint, Ed25519 plant key) |
| `leaves/<index>.leaf` | exact leaf bytes: RFC 8785 JSON of the event bytes, key id, signature, chain link, source |
| `proofs/<index>.json` | RFC 9162 inclusion proof of that leaf in the checkpoint's tree |
| `{HBOM}` | the CycloneDX 1.6 HBOM whose SHA-256 the `unit.sealed` leaf seals |
| `{HISTORY}/` | this checkpoint, the previous one and the consistency proof between them |

The leaves: the unit's, its sealed sub-assemblies', its lots' receipts and checks, the holds
placed on the unit, its sub-assemblies or its lots and MPNs (placed, approved, released,
disposed) and the enrolment, role, key and removal leaves of every person who signed one of
them, and of the admins who enrolled those people, back to the first admin.

`verify` checks, in order: bundle (only the files of this format), checkpoint (signature,
origin), history (every checkpoint in `{HISTORY}/` signed and consistent with this one),
inclusion (every leaf, tree size from the checkpoint), manifest (the manifest and this README
state what the checkpoint and leaves prove), leaves (canonical form, valid events), signatures
(station events against `station.enrolled` leaves, system events against the plant key),
statements (every person's signed statement in a hold or user leaf verifies with the key their
`user.enrolled` leaf enrols, says what the leaf records, and comes from a role that may sign
it; a quality release carries two quality users'; it names the self-signed first admin: confirm
that key id with the plant), unit-chain (every event from the first to `unit.sealed`, none
missing or reordered), hbom-seal (SHA-256 of the HBOM), hbom-parts (the HBOM states exactly the
installed parts and firmware), materials (every part's lot received and passed the
approved-vendor check), consistency (with `--checkpoints`).
"""


def _readme_2(unit: str, size: int, leaves: int, key: str) -> str:
    version = 2
    return f"""# Evidence bundle for unit {unit}

Made by linetrace from the plant's verifiable ledger: {leaves} ledger leaves proven in the
signed checkpoint of tree size {size}. To check it, with nothing but `pip install linetrace`
({REQUIRES[version]}, which reads {FORMAT_NAME}/{version}):

    linetrace verify . --key '{key}'

Get the verifier key from the plant through a channel you trust (not from this file), and pass
`--checkpoints DIR` with checkpoints you received earlier or later (`linetrace checkpoint
--export`) to prove this log is the one they describe. `verify` refuses the bundle if a file
was added, removed or changed, this one included.

| path | what |
|---|---|
| `{MANIFEST}` | format, the linetrace that reads it, unit serial, origin, verifier key, tree size, leaf indexes |
| `{CHECKPOINT}` | the signed checkpoint (C2SP tlog-checkpoint, Ed25519 plant key) |
| `leaves/<index>.leaf` | exact leaf bytes: RFC 8785 JSON of the event bytes, key id, signature, chain link, source |
| `proofs/<index>.json` | RFC 9162 inclusion proof of that leaf in the checkpoint's tree |
| `{HBOM}` | the CycloneDX 1.6 HBOM whose SHA-256 the `unit.sealed` leaf seals |
| `{HISTORY}/` | this checkpoint, the previous one and the consistency proof between them |

`verify` checks, in order: bundle (only the files of this format), checkpoint (signature,
origin), history (every checkpoint in `{HISTORY}/` signed and consistent with this one),
inclusion (every leaf, tree size from the checkpoint), manifest (the manifest and this README
state what the checkpoint and leaves prove), leaves (canonical form, valid events), signatures
(station events against `station.enrolled` leaves, system events against the plant key),
unit-chain (every event from the first to `unit.sealed`, none missing or reordered), hbom-seal
(SHA-256 of the HBOM), hbom-parts (the HBOM states exactly the installed parts and firmware),
materials (every part's lot received and passed the approved-vendor check), consistency (with
`--checkpoints`).
"""


def _readme_1(unit: str, size: int, leaves: int, key: str) -> str:
    return f"""# Evidence bundle for unit {unit}

Made by linetrace from the plant's verifiable ledger: {leaves} ledger leaves proven in the
signed checkpoint of tree size {size}. To check it, with nothing but `pip install linetrace`:

    linetrace verify . --key '{key}'

Get the verifier key from the plant through a channel you trust (not from this file), and pass
`--checkpoints DIR` with checkpoints you received earlier or later (`linetrace checkpoint
--export`) to prove this log is the one they describe.

| path | what |
|---|---|
| `{MANIFEST}` | format, unit serial, tree size, leaf indexes (informational only) |
| `{CHECKPOINT}` | the signed checkpoint (C2SP tlog-checkpoint, Ed25519 plant key) |
| `leaves/<index>.leaf` | exact leaf bytes: RFC 8785 JSON of the event bytes, key id, signature, chain link, source |
| `proofs/<index>.json` | RFC 9162 inclusion proof of that leaf in the checkpoint's tree |
| `{HBOM}` | the CycloneDX 1.6 HBOM whose SHA-256 the `unit.sealed` leaf seals |
| `{HISTORY}/` | this checkpoint, the previous one and the consistency proof between them |

`verify` checks, in order: bundle, checkpoint (signature, origin), inclusion (every leaf, tree
size from the checkpoint), leaves (canonical form, valid events), signatures (station events
against `station.enrolled` leaves, system events against the plant key), unit-chain (every
event from the first to `unit.sealed`, none missing or reordered), hbom-seal (SHA-256 of the
HBOM), hbom-parts (the HBOM states exactly the installed parts and firmware), materials (every
part's lot received and passed the approved-vendor check), consistency (with `--checkpoints`).
"""


def check_manifest(layout: Layout, cp: Checkpoint, plant: VerifierKey) -> str:
    """The `manifest` check: manifest.json and README.md state what the signed checkpoint, the
    key and the leaves say, so neither tells an auditor something the bundle does not prove."""
    m = layout.manifest
    stated = {"origin": m.origin, "verifier_key": m.verifier_key, "tree_size": m.tree_size,
              "leaves": list(m.leaves)}
    actual = {"origin": plant.name, "verifier_key": str(plant), "tree_size": cp.size,
              "leaves": sorted(layout.leaves)}
    for field, value in stated.items():
        if value == actual[field]:
            continue
        if field == "leaves":
            odd = sorted(set(m.leaves) ^ set(layout.leaves))[:3] or "in another order"
            shown = f"{len(m.leaves)} indexes for {len(layout.leaves)} leaf files (differ: {odd})"
        else:
            shown = f"{value!r}, the bundle proves {actual[field]!r}"
        raise fail("manifest", f"{MANIFEST} disagrees with the bundle: {field} is {shown}")
    want = readme(m.unit, cp.size, len(layout.leaves), str(plant), m.version)
    if (layout.root / README).read_text(encoding="utf-8", errors="replace") != want:
        raise fail("manifest", f"{README} is not the README linetrace writes for this bundle "
                   "(it was edited); get the bundle again from the plant")
    return f"{MANIFEST} and {README} agree with the checkpoint and the {len(m.leaves)} leaves"
