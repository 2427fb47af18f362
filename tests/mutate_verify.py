"""Proof that every check of `linetrace verify` has a test: disable each check in turn and see
the verify tests fail. Not part of `make test` (it runs the verify tests once per check).

    .venv/bin/python -m tests.mutate_verify            # every check; exit 1 if one is untested
    MUTATE=hbom-parts .venv/bin/python -m pytest -p tests.mutate_verify tests/unit/test_verify_*.py

As a pytest plugin (`-p tests.mutate_verify`) with MUTATE=<check>, it recompiles
ledger/proof/verify.py and bundle.py in memory with that check replaced by a no-op: a check that
is one call reports an empty message instead; `checkpoint` parses the note without verifying
it; `leaves` parses leaves without the canonical-form check; `bundle`, `inclusion` and
`unit-chain` skip every `raise fail("<check>", ...)`. The source files are never changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

CALLS = {  # checks that are one call
    "history": "check_history(layout, cp, plant)",
    "manifest": "check_manifest(layout, cp, plant)",
    "signatures": "_check_signatures(entries, plant)",
    "statements": "_check_statements(entries, layout.manifest.version)",
    "hbom-seal": "_check_seal(hbom_bytes, sealed)",
    "hbom-parts": "_check_parts(hbom_bytes, unit, sealed, built)",
    "materials": "_check_materials(entries, built)",
    "consistency": "_check_consistency(root, cp, plant, checkpoints)",
}

LENIENT_LEAF = '''
def _lenient_leaf(data):
    import base64 as _b64, json as _json
    d = _json.loads(data)
    prev = bytes.fromhex(d["unit_prev"]) if d["unit_prev"] else None
    return Leaf(_b64.b64decode(d["value"]), d["keyid"], _b64.b64decode(d["signature"]), prev,
                d["src"])
'''


def mutate(check: str, verify: str, bundle: str) -> tuple[str, str]:
    """The sources of verify.py and bundle.py with `check` disabled."""
    if check in CALLS:
        call = f'report("{check}", {CALLS[check]})'
        assert call in verify, call
        return verify.replace(call, f'report("{check}", "")'), bundle
    if check == "checkpoint":
        call = "cp = open_checkpoint((root / CHECKPOINT).read_bytes(), plant)"
        assert call in verify, call
        return verify.replace(call, 'cp = Checkpoint.parse((root / CHECKPOINT).read_text()'
                                    '.split("\\n\\n")[0] + "\\n")'), bundle
    if check == "leaves":
        assert "leaf = parse_leaf(data)" in verify
        return verify.replace("leaf = parse_leaf(data)", "leaf = _lenient_leaf(data)") + \
            LENIENT_LEAF, bundle
    fail = f'raise fail("{check}",'
    assert fail in verify or fail in bundle, fail
    skip = f'if False: raise fail("{check}",'
    return verify.replace(fail, skip), bundle.replace(fail, skip)


def pytest_configure(config: Any) -> None:
    check = os.environ.get("MUTATE")
    if not check:
        return
    import linetrace.ledger.proof.bundle as bundle_module
    import linetrace.ledger.proof.verify as verify_module

    with open(verify_module.__file__, encoding="utf-8") as f:
        verify = f.read()
    with open(bundle_module.__file__, encoding="utf-8") as f:
        bundle = f.read()
    new_verify, new_bundle = mutate(check, verify, bundle)
    exec(compile(new_bundle, bundle_module.__file__, "exec"), bundle_module.__dict__)
    exec(compile(new_verify, verify_module.__file__, "exec"), verify_module.__dict__)


def main() -> int:
    from linetrace.ledger.proof.verify import CHECKS

    untested = []
    for check in CHECKS:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "tests.mutate_verify", "-q",
             "-p", "no:cacheprovider", "tests/unit/test_verify_bundle.py",
             "tests/unit/test_verify_fails_closed.py", "tests/unit/test_verify_statements.py"],
            env={**os.environ, "MUTATE": check}, capture_output=True, text=True)
        failed = [ln.split(" - ")[0].removeprefix("FAILED ") for ln in done.stdout.splitlines()
                  if ln.startswith(("FAILED", "ERROR"))]
        print(f"{check:<12} disabled: {len(failed)} tests fail")
        for name in failed:
            print(f"    {name}")
        if not failed:
            untested.append(check)
    if untested:
        print(f"no test fails when these checks are disabled: {', '.join(untested)}")
    return 1 if untested else 0


if __name__ == "__main__":
    sys.exit(main())
