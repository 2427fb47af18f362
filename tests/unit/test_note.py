"""C2SP signed notes and checkpoints against the shared vectors and tampering."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from linetrace.ledger.proof.errors import (
    CheckpointMalformed,
    CheckpointWrongOrigin,
    NoteError,
    VerifierKeyMalformed,
)
from linetrace.ledger.proof.merkle import MemoryTree
from linetrace.ledger.proof.note import (
    Checkpoint,
    VerifierKey,
    open_checkpoint,
    open_note,
    sign_checkpoint,
    sign_note,
    signer_from_seed,
)
from tests.conftest import need

TESTDATA = Path(__file__).resolve().parents[2].parent / "shared" / "testdata"
NOTES = TESTDATA / "signed-note"
ORIGIN = "plant.example/linetrace/v1"
PLANT = signer_from_seed(bytes(range(32)), ORIGIN)
STRANGER = signer_from_seed(bytes(range(1, 33)), ORIGIN)  # same name, another key
WITNESS = signer_from_seed(bytes(range(2, 34)), "witness.example/w1")


def vector(name: str) -> dict[str, Any]:
    """The vectors live beside the repo; CI must have them, a laptop may not."""
    path = NOTES / name
    need(path.is_file(), f"the shared test vector at {path}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def a_checkpoint(size: int = 8) -> Checkpoint:
    tree = MemoryTree.from_data(b"event %d" % i for i in range(size))
    return Checkpoint(ORIGIN, size, tree.root())


def test_c2sp_example_note_verifies_with_its_key() -> None:
    v = vector("example.json")
    key = VerifierKey.parse(v["verifier_key"])
    assert str(key) == v["verifier_key"]
    opened = open_note(v["note"], [key])
    assert opened.text == "This is an example message.\n"
    assert opened.signers == [key.name]


def test_golden_checkpoint_is_reproduced_byte_for_byte_from_the_seed() -> None:
    v = vector("golden-checkpoint.json")
    signer = signer_from_seed(bytes.fromhex(v["seed_hex"]), v["origin"])
    assert str(signer.verifier) == v["verifier_key"]
    cp = Checkpoint(v["origin"], v["tree_size"], bytes.fromhex(v["root_hex"]))
    assert sign_checkpoint(cp, signer) == v["checkpoint"]
    assert open_checkpoint(v["checkpoint"], VerifierKey.parse(v["verifier_key"])) == cp


def test_golden_checkpoint_root_is_our_tree_of_the_rfc6962_leaves() -> None:
    v = vector("golden-checkpoint.json")
    roots = TESTDATA / "merkle" / "rfc6962_roots.json"
    need(roots.is_file(), f"the shared test vectors at {roots}")
    leaves = [bytes.fromhex(h) for h in json.loads(roots.read_text())["leaf_inputs_hex"]]
    assert len(leaves) > 1
    assert MemoryTree.from_data(leaves).root().hex() == v["root_hex"]


def test_note_signed_only_by_an_unknown_key_is_rejected_as_unknown_key() -> None:
    note = sign_checkpoint(a_checkpoint(), STRANGER)  # same name, different key id
    with pytest.raises(NoteError) as err:
        open_checkpoint(note, PLANT.verifier)
    assert err.value.code == "note.unknown_key"
    with pytest.raises(NoteError) as err:
        open_note(sign_note("hello\n", WITNESS), [PLANT.verifier])
    assert err.value.code == "note.unknown_key"


def test_signatures_by_unknown_keys_are_ignored_when_a_known_key_signed() -> None:
    body = a_checkpoint().body()
    plant_line = sign_note(body, PLANT)[len(body) + 1 :]
    witness_line = sign_note(body, WITNESS)[len(body) + 1 :]
    cosigned = f"{body}\n{witness_line}{plant_line}"
    assert open_note(cosigned, [PLANT.verifier]).signers == [ORIGIN]
    assert open_note(cosigned, [PLANT.verifier, WITNESS.verifier]).signers == [
        "witness.example/w1",
        ORIGIN,
    ]
    assert open_checkpoint(cosigned, PLANT.verifier) == a_checkpoint()


def test_checkpoint_of_another_origin_is_rejected_even_when_the_signature_is_good() -> None:
    other = Checkpoint("other.example/log", 8, a_checkpoint().root)
    note = sign_note(other.body(), PLANT)  # good signature by the plant key, wrong origin
    with pytest.raises(CheckpointWrongOrigin) as err:
        open_checkpoint(note, PLANT.verifier)
    assert err.value.code == "checkpoint.wrong_origin"
    with pytest.raises(CheckpointWrongOrigin):
        sign_checkpoint(other, PLANT)


def test_checkpoint_signed_by_the_other_logs_own_key_is_rejected() -> None:
    other_signer = signer_from_seed(bytes(32), "other.example/log")
    note = sign_checkpoint(Checkpoint("other.example/log", 8, a_checkpoint().root), other_signer)
    with pytest.raises(NoteError):
        open_checkpoint(note, PLANT.verifier)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_a_flipped_byte_in_the_body_fails(data: st.DataObject) -> None:
    cp = a_checkpoint()
    note = sign_checkpoint(cp, PLANT)
    body_len = len(cp.body().encode())
    raw = bytearray(note.encode())
    pos = data.draw(st.integers(0, body_len - 1))
    raw[pos] ^= 1 << data.draw(st.integers(0, 6))  # stays ASCII
    with pytest.raises(NoteError) as err:
        open_checkpoint(bytes(raw), PLANT.verifier)
    assert err.value.code in {"note.bad_signature", "note.malformed", "checkpoint.malformed"}


def test_a_changed_tree_size_is_a_bad_signature() -> None:
    note = sign_checkpoint(a_checkpoint(), PLANT)
    tampered = note.replace("\n8\n", "\n9\n", 1)
    with pytest.raises(NoteError) as err:
        open_checkpoint(tampered, PLANT.verifier)
    assert err.value.code == "note.bad_signature"


def test_a_flipped_signature_bit_is_a_bad_signature() -> None:
    body = "hello\n"
    note = sign_note(body, PLANT)
    sig = note.rsplit(" ", 1)[1]
    changed = ("B" if sig[10] != "B" else "C").join([sig[:10], sig[11:]])
    with pytest.raises(NoteError) as err:
        open_note(note.replace(sig, changed), [PLANT.verifier])
    assert err.value.code == "note.bad_signature"


@pytest.mark.parametrize(
    "note",
    [
        "no blank line\n— x AAAA\n",
        "text\n\n- plant.example/linetrace/v1 AAAAAAAA\n",  # hyphen, not em dash
        "text\n\n— plant.example/linetrace/v1 not*base64\n",
        "text\n\n— plant.example/linetrace/v1 AAAA\n",  # shorter than key id + 1
        "text\n\n— plant.example/linetrace/v1 AAAAAAAA",  # no final newline
        "text\x07\n\n— plant.example/linetrace/v1 AAAAAAAA\n",
    ],
)
def test_malformed_notes_are_rejected_as_malformed(note: str) -> None:
    with pytest.raises(NoteError) as err:
        open_note(note, [PLANT.verifier])
    assert err.value.code == "note.malformed"


def test_checkpoint_body_round_trips_with_extensions() -> None:
    cp = Checkpoint(ORIGIN, 0, bytes(32), ("ext one", "ext two"))
    assert cp.body().count("\n") == 5
    assert Checkpoint.parse(cp.body()) == cp
    assert open_checkpoint(sign_checkpoint(cp, PLANT), PLANT.verifier) == cp


@pytest.mark.parametrize(
    "body",
    [
        f"{ORIGIN}\n8\n",
        f"{ORIGIN}\n08\n{'A' * 43}=\n",
        f"{ORIGIN}\n-1\n{'A' * 43}=\n",
        f"{ORIGIN}\n8\nAAAA\n",
        f"{ORIGIN}\n8\n{'A' * 43}=\n\nafter a blank line\n",
        f"\n8\n{'A' * 43}=\n",
    ],
)
def test_malformed_checkpoint_bodies_are_rejected(body: str) -> None:
    with pytest.raises(CheckpointMalformed) as err:
        Checkpoint.parse(body)
    assert err.value.code == "checkpoint.malformed"


@pytest.mark.parametrize(
    "key",
    [
        "example.com/foo+530d903a",
        "example.com/foo+530d903b+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # wrong id
        "example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k",  # not 0x01
        "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2",
    ],
)
def test_malformed_verifier_keys_are_rejected(key: str) -> None:
    with pytest.raises(VerifierKeyMalformed) as err:
        VerifierKey.parse(key)
    assert err.value.code == "note.bad_key"


def test_signer_repr_never_shows_the_private_key() -> None:
    assert "private" not in repr(PLANT).lower()


def test_verifier_keys_whose_base64_contains_plus_signs_round_trip() -> None:
    from linetrace.ledger.proof.note import VerifierKey, signer_from_seed

    for i in range(64):
        key = signer_from_seed(bytes([i]) * 32, "plant.example/linetrace/v1").verifier
        text = str(key)
        assert VerifierKey.parse(text) == key, text
    assert any("+" in str(signer_from_seed(bytes([i]) * 32, "p").verifier).split("+", 2)[2]
               for i in range(64))
