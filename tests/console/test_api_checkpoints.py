"""Public checkpoint endpoints: a witness with no credentials fetches the latest signed
checkpoint, checks its signature with the plant's verifier key, and proves with a
consistency proof between two checkpoints that the log only grew."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger import log
from linetrace.ledger.proof import merkle
from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.proof.errors import LedgerError
from linetrace.ledger.proof.note import VerifierKey, open_checkpoint
from linetrace.ledger.users import enroll_user
from linetrace.schemas import signing
from linetrace.schemas.statements import new_statement, sign_statement

from .conftest import Console

ORIGIN = "linetrace.local/ledger/v1"  # ConsoleConfig's default origin


def _checkpoint(console: Console) -> int:
    cp = log.maybe_checkpoint(console.ledger, plant_signer(console.plant, ORIGIN),
                              every_leaves=1, every_seconds=0)
    assert cp is not None, "the log did not grow"
    return cp.size


def _grow(console: Console, name: str) -> None:
    """One more plant-signed system event in the log (a user enrolled by ada)."""
    key = Ed25519PrivateKey.generate()
    details = {"role": "viewer", "public_key": signing.public_key_b64(key.public_key()),
               "keyid": signing.keyid_of(key.public_key())}
    st = new_statement("user.add", name, details, user="ada")
    enroll_user(console.ledger, console.plant, sign_statement(st, console.keys["ada"]),
                user=name, role="viewer", public_key=key.public_key())


def test_no_checkpoint_yet_is_a_404_with_the_error_shape(console: Console) -> None:
    r = console.anon().get("/api/v1/checkpoint")
    assert r.status_code == 404
    assert r.json()["code"] == "checkpoint.none"
    assert console.anon().get("/api/v1/checkpoints").json() == []


def test_a_witness_checks_the_log_only_grew_without_credentials(console: Console) -> None:
    first = _checkpoint(console)
    _grow(console, "wes")
    _grow(console, "wyn")
    second = _checkpoint(console)
    assert second > first
    anon = console.anon()

    key_r = anon.get("/api/v1/verifier-key")
    assert key_r.status_code == 200, key_r.text
    assert key_r.headers["content-type"] == "text/plain; charset=utf-8"
    verifier = VerifierKey.parse(key_r.text)
    assert str(verifier) == str(plant_signer(console.plant, ORIGIN).verifier)

    latest = anon.get("/api/v1/checkpoint")
    assert latest.status_code == 200, latest.text
    assert latest.headers["content-type"] == "text/plain; charset=utf-8"
    head = open_checkpoint(latest.text, verifier)  # raises unless the plant signed it
    assert head.size == second and head.origin == ORIGIN

    listed = anon.get("/api/v1/checkpoints").json()
    assert [c["tree_size"] for c in listed] == [first, second]
    assert all(c["time"].endswith("Z") for c in listed)
    assert listed[-1]["root"] == base64.b64encode(head.root).decode()

    old_r = anon.get(f"/api/v1/checkpoints/{first}")
    assert old_r.status_code == 200
    old = open_checkpoint(old_r.text, verifier)
    assert old.size == first and base64.b64encode(old.root).decode() == listed[0]["root"]

    pr = anon.get("/api/v1/proofs/consistency", params={"from": first, "to": second})
    assert pr.status_code == 200, pr.text
    doc = pr.json()
    assert doc["from"] == first and doc["to"] == second and doc["proof"]
    proof = [base64.b64decode(h) for h in doc["proof"]]
    merkle.verify_consistency(first, second, proof, old.root, head.root)  # grew only

    # a proof that does not link these two trees is refused by the verifier
    forged = [bytes(32)] + proof[1:]
    try:
        merkle.verify_consistency(first, second, forged, old.root, head.root)
    except LedgerError:
        pass
    else:
        raise AssertionError("a forged consistency proof verified")


def test_a_tampered_note_does_not_verify(console: Console) -> None:
    _checkpoint(console)
    anon = console.anon()
    verifier = VerifierKey.parse(anon.get("/api/v1/verifier-key").text)
    note = anon.get("/api/v1/checkpoint").text
    origin, size, rest = note.split("\n", 2)
    tampered = f"{origin}\n{int(size) + 1}\n{rest}"
    try:
        open_checkpoint(tampered, verifier)
    except LedgerError:
        pass
    else:
        raise AssertionError("a tampered checkpoint verified")


def test_bad_proof_requests_name_the_field(console: Console) -> None:
    first = _checkpoint(console)
    _grow(console, "wes")
    second = _checkpoint(console)
    anon = console.anon()

    r = anon.get("/api/v1/proofs/consistency", params={"from": second, "to": first})
    assert r.status_code == 422 and r.json()["field"] == "query.from", r.text
    r = anon.get("/api/v1/proofs/consistency", params={"from": first, "to": second + 1})
    assert r.status_code == 422 and r.json()["field"] == "query.to", r.text
    r = anon.get("/api/v1/proofs/consistency", params={"from": first - 1 or 1000,
                                                        "to": second})
    assert r.status_code == 422 and r.json()["field"] == "query.from", r.text
    r = anon.get("/api/v1/proofs/consistency", params={"to": second})
    assert r.status_code == 422 and r.json()["field"] == "query.from", r.text
    r = anon.get("/api/v1/proofs/consistency", params={"from": "x", "to": second})
    assert r.status_code == 422 and r.json()["field"] == "query.from", r.text
    # equal sizes: an empty proof
    r = anon.get("/api/v1/proofs/consistency", params={"from": second, "to": second})
    assert r.status_code == 200 and r.json()["proof"] == []

    r = anon.get(f"/api/v1/checkpoints/{second + 5}")
    assert r.status_code == 404 and r.json()["code"] == "checkpoint.unknown"
    r = anon.get("/api/v1/checkpoints/abc")
    assert r.status_code == 422 and r.json()["field"] == "path.size"


def test_checkpoint_endpoints_are_public_in_the_openapi(console: Console) -> None:
    spec = console.anon().get("/openapi.json").json()
    for path in ("/api/v1/checkpoint", "/api/v1/checkpoints", "/api/v1/checkpoints/{size}",
                 "/api/v1/proofs/consistency", "/api/v1/verifier-key"):
        op = spec["paths"][path]["get"]
        assert "401" not in op.get("responses", {}), path
