"""`linetrace verify` re-checks the people's statements in an evidence bundle's hold and user
leaves (the `statements` check, `ledger/proof/statements.py`): a bundle whose release carries a
forged, altered or missing second approval fails by name even when everything around it was
re-signed with the plant key; a clean one passes and names the first admin to confirm.

The bundle: the sealed server of the simulated line, whose GPU lot q1 held; q1 approved the
release and q2 released it. People: admin (self-signed first admin), q1, q2 (quality).
"""

from __future__ import annotations

import base64
import json
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from linetrace.ledger.db import Ledger
from linetrace.ledger.evidence import write_evidence
from linetrace.ledger.genealogy import trace
from linetrace.ledger.hold_actions import place_hold, release_hold
from linetrace.ledger.proof.bundle import MANIFEST, README, REQUIRES, readme
from linetrace.ledger.proof.leaf import Leaf, parse_leaf
from linetrace.ledger.proof.verify import CHECKS, VerificationFailed, verify_bundle
from linetrace.ledger.users import enroll_user
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import Event, decode_event, encode_event
from linetrace.schemas.statements import new_statement, sign_statement

from .test_log_line import PLANT, SIGNER, VKEY, feed_line, line
from .test_verify_bundle import rebuild, relink

_NS = uuid.UUID("2f0c8a57-4e1b-5d3a-9c6e-766572696679")
PEOPLE = {"admin": "admin", "q1": "quality", "q2": "quality"}


def person(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(uuid.uuid5(_NS, name).bytes * 2)


def sign(user: str, action: str, target: str, details: dict[str, str],
         key: Ed25519PrivateKey | None = None) -> b.SignedStatement:
    return sign_statement(new_statement(action, target, details, user=user), key or person(user))


def make_bundle(root: Path) -> tuple[Path, str]:
    ledger = Ledger(f"sqlite:///{root / 'ledger.db'}")
    try:
        fed = feed_line(ledger, line())
        for name, role in PEOPLE.items():
            pub = person(name).public_key()
            enroll_user(ledger, PLANT, sign("admin", "user.add", name, {
                "role": role, "public_key": signing.public_key_b64(pub),
                "keyid": signing.keyid_of(pub)}), user=name, role=role, public_key=pub)
        with ledger.reader() as s:
            lot = next(p.lot for p in trace(s, fed.server).parts if p.category == "gpu")
        details = {"scope": "lot", "reason": "GPU lot recalled"}
        hold = place_hold(ledger, PLANT, sign("q1", "hold.place", lot, details), scope="lot",
                          target=lot, reason="GPU lot recalled").hold
        for user in ("q1", "q2"):
            release_hold(ledger, PLANT, sign(user, "hold.release", hold["id"], {}), hold["id"])
        write_evidence(ledger, fed.server, root / "bundle", SIGNER)
    finally:
        ledger.close()
    return root / "bundle", hold["id"]


@pytest.fixture(scope="module")
def made(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    return make_bundle(tmp_path_factory.mktemp("held"))


@pytest.fixture
def bundle(made: tuple[Path, str], tmp_path: Path) -> Path:
    shutil.copytree(made[0], tmp_path / "bundle")
    return tmp_path / "bundle"


def leaves_of(bundle: Path) -> list[bytes]:
    return [p.read_bytes() for p in sorted((bundle / "leaves").glob("*.leaf"))]


def event_of(data: bytes) -> Event:
    return decode_event(parse_leaf(data).value)


def resigned(data: bytes, body: b.Body) -> bytes:
    """The leaf of the same system event with another body, signed with the plant key: what
    someone holding the plant key can make."""
    leaf, ev = parse_leaf(data), event_of(data)
    value = encode_event(event_type=ev.type, source=ev.source, subject=ev.subject, body=body,
                         time=ev.envelope.time, event_id=ev.id)
    kid, sig = signing.read_signature(signing.sign_value(value, PLANT))
    return Leaf(value, kid, sig, leaf.unit_prev, leaf.src).encode()


def forge(bundle: Path, change: Callable[[Event], b.Body | None]) -> None:
    """Rewrite the bundle's leaves with `change` (a new body, or None to drop the leaf) and
    rebuild and re-sign the log around them, as an insider with the plant key would."""
    out = []
    for data in leaves_of(bundle):
        ev = event_of(data)
        body = change(ev)
        if body is None:
            continue
        out.append(data if body is ev.body else resigned(data, body))
    rebuild(bundle, relink(out))


def failure(bundle: Path) -> VerificationFailed:
    with pytest.raises(VerificationFailed) as e:
        verify_bundle(bundle, VKEY)
    return e.value


def keep(ev: Event) -> b.Body:
    return ev.body


def test_the_bundle_carries_the_holds_and_every_signer_back_to_the_first_admin_and_verifies(
        made: tuple[Path, str]) -> None:
    bundle, hold_id = made
    events = [event_of(d) for d in leaves_of(bundle)]
    assert [e.type for e in events if e.subject == hold_id] == [
        "hold.placed", "hold.approved", "hold.released"]
    assert {e.subject for e in events if e.type == "user.enrolled"} == {"admin", "q1", "q2"}
    seen: dict[str, str] = {}
    verify_bundle(bundle, VKEY, report=lambda check, msg: seen.__setitem__(check, msg))
    assert list(seen) == [c for c in CHECKS if c != "consistency"]
    admin = signing.keyid_of(person("admin").public_key())
    assert seen["statements"].startswith("7 statements by 3 people in 6 hold, alert and user "
                                         "events")
    assert f"first admin admin (key id {admin})" in seen["statements"]


def test_a_release_whose_second_approval_is_forged_fails_statements(bundle: Path) -> None:
    def change(ev: Event) -> b.Body:
        body = ev.body
        if not isinstance(body, b.HoldReleased):
            return body
        genuine = body.statements[1]
        forged = sign("q2", "hold.release", body.hold_id, {}, key=person("mallory"))
        forged = b.SignedStatement(user="q2", keyid=genuine.keyid, statement=forged.statement,
                                   signature=forged.signature)
        return b.HoldReleased(hold_id=body.hold_id, reason=body.reason,
                              released_by=body.released_by,
                              statements=[body.statements[0], forged])

    forge(bundle, change)
    e = failure(bundle)
    assert e.check == "statements"
    assert "hold.released" in str(e) and "q2" in str(e) and "(forged)" in str(e)


def test_a_release_whose_statement_was_altered_fails_statements(bundle: Path) -> None:
    def change(ev: Event) -> b.Body:
        body = ev.body
        if not isinstance(body, b.HoldReleased):
            return body
        st = body.statements[1]
        doc = json.loads(base64.b64decode(st.statement))
        doc["details"] = {"reason": "released by q2"}  # what q2 did not sign
        altered = base64.b64encode(json.dumps(doc, sort_keys=True, separators=(",", ":"))
                                   .encode()).decode()
        return b.HoldReleased(
            hold_id=body.hold_id, reason="released by q2", released_by=body.released_by,
            statements=[body.statements[0], b.SignedStatement(
                user=st.user, keyid=st.keyid, statement=altered, signature=st.signature)])

    forge(bundle, change)
    e = failure(bundle)
    assert e.check == "statements" and "does not verify" in str(e)


def test_one_approval_made_into_a_release_fails_statements(bundle: Path) -> None:
    def change(ev: Event) -> b.Body:
        body = ev.body
        if not isinstance(body, b.HoldReleased):
            return body
        return b.HoldReleased(hold_id=body.hold_id, reason=body.reason, released_by=["q1"],
                              statements=[body.statements[0]])

    forge(bundle, change)
    e = failure(bundle)
    assert e.check == "statements"
    assert "takes the statements of 2 different quality users" in str(e)


def test_a_signer_whose_enrolment_is_missing_fails_statements(bundle: Path) -> None:
    forge(bundle, lambda ev: None if ev.type == "user.enrolled" and ev.subject == "admin"
          else ev.body)
    e = failure(bundle)
    assert e.check == "statements" and "never enrolled" in str(e)


def as_format_2(bundle: Path) -> None:
    """The bundle's manifest and README as the writer of linetrace-evidence/2 made them."""
    doc = json.loads((bundle / MANIFEST).read_text())
    doc.update({"format": "linetrace-evidence/2", "requires": REQUIRES[2]})
    (bundle / MANIFEST).write_text(json.dumps(doc, indent=1) + "\n")
    (bundle / README).write_text(readme(doc["unit"], doc["tree_size"], len(doc["leaves"]),
                                        doc["verifier_key"], 2))


def test_a_format_2_bundle_verifies_and_one_carrying_hold_leaves_is_refused(bundle: Path
                                                                            ) -> None:
    as_format_2(bundle)  # hold leaves came with format 3: skipping their check is refused
    e = failure(bundle)
    assert e.check == "statements" and "linetrace-evidence/2 bundle carries no hold" in str(e)
    forge(bundle, lambda ev: None if ev.type.startswith(("hold.", "user.")) else ev.body)
    as_format_2(bundle)
    seen: dict[str, str] = {}
    verify_bundle(bundle, VKEY, report=lambda check, msg: seen.__setitem__(check, msg))
    assert seen["statements"].startswith("none: linetrace-evidence/2 bundles")
    assert "format linetrace-evidence/2" in seen["bundle"]
