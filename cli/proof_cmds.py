"""Commands of the verifiable ledger: checkpoint, hbom, evidence, verify, verify-ledger.

`verify` needs only the base install and no database: it imports nothing but the offline
verifier. The other commands open the ledger DB (and the plant key, to sign checkpoints).
"""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from .output import fail, print_json
from .settings import Settings

if TYPE_CHECKING:
    from linetrace.ledger.proof.note import Signer

Handler = Callable[[argparse.Namespace, Settings], int]


def _signer(settings: Settings) -> Signer:
    from linetrace.ledger.proof.checkpoints import plant_signer
    from linetrace.ledger.keys import load_or_create_plant_key

    key, _ = load_or_create_plant_key(settings.keys_dir)
    return plant_signer(key, settings.origin)


def cmd_checkpoint(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger import log

    from .ledger_cmds import open_ledger

    ledger, signer = open_ledger(settings), _signer(settings)
    log.maybe_checkpoint(ledger, signer, every_leaves=1, every_seconds=0)
    with ledger.reader() as s:
        cp = log.latest_checkpoint(s)
    if cp is None:
        return fail("the log is empty: nothing to checkpoint yet")
    if args.export:
        count = log.export_checkpoints(ledger, Path(args.export), signer.verifier)
        print(f"exported {count} checkpoints and the consistency proofs between them to "
              f"{args.export}", file=sys.stderr if args.json else sys.stdout)
    if args.json:
        print_json({"checkpoint": cp.note, "verifier_key": str(signer.verifier),
                    "origin": signer.name, "tree_size": cp.size,
                    "root": base64.b64encode(cp.root).decode("ascii")})
    else:
        sys.stdout.write(cp.note)
        print(f"\nverifier key: {signer.verifier}")
    return 0


def cmd_hbom(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.system_events import sealed_hbom, unsealed_hbom

    from .query_cmds import read_ledger

    with read_ledger(settings).reader() as s:
        data = sealed_hbom(s, args.serial)
        if data is None:
            print(f"note: {args.serial} is not sealed yet; this HBOM was generated now and is "
                  "not the sealed one", file=sys.stderr)
            data = unsealed_hbom(s, args.serial)
    if args.output:
        Path(args.output).write_bytes(data)
    else:
        sys.stdout.buffer.write(data)
        sys.stdout.flush()
    return 0


def cmd_evidence(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.evidence import write_evidence

    from .ledger_cmds import open_ledger

    signer = _signer(settings)
    out = write_evidence(open_ledger(settings), args.serial, Path(args.output), signer,
                         telemetry=args.telemetry)
    print(f"evidence for {out.unit}: {out.leaves} leaves proven in the checkpoint of tree size "
          f"{out.tree_size}, written to {out.directory}")
    print(f"check it with: linetrace verify {out.directory} --key '{signer.verifier}'")
    return 0


def _key_text(value: str) -> str:
    path = Path(value)
    if "+" not in value and path.is_file():
        return path.read_text().strip()
    return value


def cmd_verify(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.proof.verify import VerificationFailed, verify_bundle

    def report(check: str, message: str) -> None:
        print(f"ok    {check:<12} {message}")

    try:
        verify_bundle(Path(args.bundle), _key_text(args.key),
                      Path(args.checkpoints) if args.checkpoints else None, report)
    except VerificationFailed as e:
        print(f"FAIL  {e.check:<12} {str(e).removeprefix(e.check + ': ')}")
        print(f"linetrace: verification failed at check `{e.check}` [{e.code}]", file=sys.stderr)
        return 1
    print(f"verified: every check passed for {args.bundle}")
    return 0


def cmd_verify_ledger(args: argparse.Namespace, settings: Settings) -> int:
    from linetrace.ledger.audit import audit_ledger
    from linetrace.schemas.signing import keyid_of

    from .query_cmds import read_ledger

    ledger = read_ledger(settings)  # a missing ledger is refused before any key is made
    signer = _signer(settings)
    report = audit_ledger(ledger, signer.verifier,
                          keyid_of(signer.private_key.public_key()),
                          Path(args.checkpoints) if args.checkpoints else None)
    root = base64.b64encode(report.root).decode("ascii")
    print(f"tree: {report.tree_size} leaves, root {root}")
    print(f"checkpoints: {report.checkpoints} stored, {report.held_checkpoints} held elsewhere")
    print(f"genealogy: {report.rows_compared} rows match the leaves")
    for finding in report.findings:
        print(f"FAIL  {finding}")
    if report.findings:
        print(f"linetrace: verify-ledger found {len(report.findings)} problems [ledger.tampered]",
              file=sys.stderr)
        return 1
    print("verified: the ledger matches its leaves and checkpoints")
    return 0


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser],
             common: argparse.ArgumentParser) -> None:
    def add(name: str, fn: Handler, help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help_, description=help_)
        sp.set_defaults(fn=fn)
        return sp

    c = add("checkpoint", cmd_checkpoint,
            "sign a checkpoint of the log if it grew, and print the latest one")
    c.add_argument("--json", action="store_true",
                   help="print {checkpoint, verifier_key, origin, tree_size, root}")
    c.add_argument("--export", metavar="DIR",
                   help="also write every checkpoint and the consistency proofs between them")
    h = add("hbom", cmd_hbom, "a unit's CycloneDX 1.6 HBOM (the sealed bytes, once sealed)")
    h.add_argument("serial")
    h.add_argument("-o", "--output", metavar="FILE")
    e = add("evidence", cmd_evidence, "write a sealed unit's evidence bundle for an auditor")
    e.add_argument("serial")
    e.add_argument("-o", "--output", metavar="DIR", required=True)
    e.add_argument("--telemetry", action="store_true",
                   help="also carry the raw telemetry of each burn-in run (telemetry/), which "
                   "verify checks against the run's burnin.verdict (docs/burnin.md)")
    v = add("verify", cmd_verify,
            "check an evidence bundle offline (no database): prints each check, fails on the "
            "first one that does not hold")
    v.add_argument("bundle", metavar="DIR")
    v.add_argument("--key", required=True, metavar="VKEY",
                   help="the plant's verifier key name+keyid+base64key (or a file holding it)")
    v.add_argument("--checkpoints", metavar="DIR",
                   help="checkpoints held elsewhere to prove consistency with")
    vl = add("verify-ledger", cmd_verify_ledger,
             "recompute the log from its leaves; check checkpoints and genealogy tables")
    vl.add_argument("--checkpoints", metavar="DIR",
                    help="checkpoints exported earlier (`checkpoint --export`) to check against")
