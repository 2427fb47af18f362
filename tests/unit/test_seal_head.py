"""The chain head a seal names: its `unit.packed` (docs/system-events.md), checked offline.

An insider holding the plant key re-seals a server naming another chain head and rebuilds a
consistent, re-signed log around it: `verify` refuses a head that is not on the unit's chain
before the seal, or that stops short of the `unit.packed` the seal answers.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from linetrace.ledger.proof import merkle
from linetrace.ledger.proof.leaf import Leaf, parse_leaf
from linetrace.ledger.proof.verify import VerificationFailed, verify_bundle
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import SYSTEM_SOURCE, decode_event, encode_event

from .test_log_line import PLANT, VKEY
from .test_verify_bundle import bundle, made, rebuild, relink

__all__ = ["bundle", "made"]  # fixtures


def reseal(bundle: Path, head_of: int | str) -> None:
    """Re-sign the server's seal naming the chain head of its `head_of`-th leaf before the
    `unit.packed` (0: the packed itself), or a given hex hash; rebuild the log around it."""
    leaves = [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]
    events = [decode_event(parse_leaf(d).value) for d in leaves]
    at = next(i for i, e in enumerate(events) if isinstance(e.body, b.UnitSealed))
    seal = events[at]
    assert isinstance(seal.body, b.UnitSealed)
    mine = [i for i, e in enumerate(events[:at]) if e.subject == seal.subject]
    packed = next(i for i in mine if events[i].id == seal.body.packed)
    if isinstance(head_of, int):
        head = merkle.leaf_hash(leaves[mine[mine.index(packed) - head_of]]).hex()
    else:
        head = head_of
    body = b.UnitSealed(hbom_sha256=seal.body.hbom_sha256, chain_head=head,
                        packed=seal.body.packed, tamper_seal=seal.body.tamper_seal,
                        assemblies=seal.body.assemblies)
    value = encode_event(event_type="unit.sealed", source=SYSTEM_SOURCE, subject=seal.subject,
                         body=body, time=seal.envelope.time, event_id=seal.id)
    kid, sig = signing.read_signature(signing.sign_value(value, PLANT))
    old = parse_leaf(leaves[at])
    leaves[at] = Leaf(value, kid, sig, old.unit_prev, old.src).encode()
    rebuild(bundle, relink(leaves))


def test_a_seal_naming_its_unit_packed_verifies(bundle: Path) -> None:
    reseal(bundle, 0)
    verify_bundle(bundle, VKEY)


def test_a_seal_that_stops_short_of_its_unit_packed_fails_the_unit_chain(bundle: Path) -> None:
    reseal(bundle, 1)  # covers the leaf before the unit.packed: less than its cause
    with pytest.raises(VerificationFailed, match="not on the unit's chain up to the sealed head"
                       ) as e:
        verify_bundle(bundle, VKEY)
    assert e.value.check == "unit-chain"


def test_a_seal_naming_a_head_off_the_units_chain_fails_the_unit_chain(bundle: Path) -> None:
    reseal(bundle, "ab" * 32)
    with pytest.raises(VerificationFailed, match="not a leaf of the unit before it") as e:
        verify_bundle(bundle, VKEY)
    assert e.value.check == "unit-chain"
