"""A simulated line fed straight into the ledger writer (no broker), and the system events the
writer derives from it: `material.checked` per receipt, `unit.sealed` per packed unit.

`feed_line` is also the fixture of the HBOM, evidence and verify-ledger tests.
"""

from __future__ import annotations

import hashlib
import zlib
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import func, select

from linetrace.ledger import log
from linetrace.ledger.avl import ApprovedVendorList, default_avl
from linetrace.ledger.proof.checkpoints import plant_signer
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SealedHbom, SystemContext
from linetrace.ledger.proof.leaf import parse_leaf
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import INPUT_TOPICS, TOPIC_OF_TYPE
from linetrace.stations.simulator import LineConfig, LinePlan, generate_line, station_roster

ORIGIN = "test.plant/linetrace/v1"
PLANT = Ed25519PrivateKey.from_private_bytes(hashlib.sha256(b"linetrace test plant").digest())
SIGNER = plant_signer(PLANT, ORIGIN)
VKEY = str(SIGNER.verifier)
ENROLLED_AT = datetime(2026, 1, 1, tzinfo=UTC)
PARTITIONS = {t.name: t.partitions for t in INPUT_TOPICS}


def station_key(station_id: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(
        hashlib.sha256(f"linetrace test station {station_id}".encode()).digest())


@cache
def line(units: int = 1, seed: int = 7) -> LinePlan:
    return generate_line(LineConfig(units=units, seed=seed))


@dataclass
class Fed:
    ledger: Ledger
    plan: LinePlan
    candidates: list[Candidate]

    @property
    def server(self) -> str:
        return self.plan.servers[0].serial


Tamper = Callable[[int, bytes, Ed25519PrivateKey], tuple[bytes, Ed25519PrivateKey]]


def station_candidates(plan: LinePlan, tamper: Tamper | None = None, first_seq: int = 0
                       ) -> list[Candidate]:
    """Every event of the plan, encoded and signed as each station would, in stream order."""
    seq: Counter[str] = Counter({sid: first_seq for sid, _ in station_roster()})
    out = []
    for n, ev in enumerate(plan.stream()):
        seq[ev.station_id] += 1
        topic = TOPIC_OF_TYPE[ev.event_type]
        value = encode_event(event_type=ev.event_type, source=ev.station_id, subject=ev.subject,
                             body=ev.body, time=ev.time, event_id=ev.event_id,
                             stationseq=seq[ev.station_id])
        key = station_key(ev.station_id)
        if tamper is not None:
            value, key = tamper(n, value, key)
        headers = signing.sign_value(value, key)
        kid, sig = signing.read_signature(headers)
        partition = zlib.crc32(ev.subject.encode()) % PARTITIONS[topic]
        out.append(Candidate(SourceRecord(topic, partition, n, ev.subject.encode(), value,
                                          headers), decode_event(value), kid, sig))
    return out


def feed_line(ledger: Ledger, plan: LinePlan, *, batch: int = 40, tamper: Tamper | None = None,
              avl: ApprovedVendorList | None = None,
              keep: Callable[[Candidate], bool] | None = None, first_seq: int = 0) -> Fed:
    """Enrol the line's stations, then write all its events in batches with system events."""
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(), now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT, avl=avl or default_avl())
    cands = [c for c in station_candidates(plan, tamper, first_seq)
             if keep is None or keep(c)]
    for i in range(0, len(cands), batch):
        out = write_batch(ledger, cands[i : i + batch], ctx=ctx)
        assert not out.rejections, out.rejections[:1]
    return Fed(ledger, plan, cands)


@pytest.fixture
def fed(tmp_path: Path) -> Iterator[Fed]:
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.db'}")
    yield feed_line(ledger, line())
    ledger.close()


def system_bodies(ledger: Ledger, event_type: str) -> list[b.Body]:
    with ledger.reader() as s:
        values = s.scalars(select(EventRow.value).where(EventRow.type == event_type)
                           .order_by(EventRow.seq)).all()
    return [decode_event(v).body for v in values]


def test_every_receipt_is_checked_against_the_avl_and_passes_for_approved_parts(fed: Fed) -> None:
    receipts = [e for e in fed.plan.receipts]
    checks = system_bodies(fed.ledger, "material.checked")
    assert len(checks) == len(receipts) > 0
    assert all(isinstance(c, b.MaterialChecked) and c.result == "Passed" for c in checks)
    assert {c.lot for c in checks if isinstance(c, b.MaterialChecked)} == {
        r.subject for r in receipts}


def test_a_supplier_not_on_the_avl_fails_the_check_with_the_reason(tmp_path: Path) -> None:
    strict = ApprovedVendorList.from_json(b'{"approved": {"699-21010-0210-000": ["SUP-OTHER"]}}')
    ledger = Ledger(f"sqlite:///{tmp_path / 'l.db'}")
    feed_line(ledger, line(), avl=strict)
    checks = [c for c in system_bodies(ledger, "material.checked")
              if isinstance(c, b.MaterialChecked)]
    gpu = next(c for c in checks if c.mpn == "699-21010-0210-000")
    assert gpu.result == "Failed" and gpu.reason is not None and "SUP-NVIDIA" in gpu.reason
    other = next(c for c in checks if c.mpn != "699-21010-0210-000")
    assert other.result == "Failed" and "not on the approved vendor list" in (other.reason or "")
    assert gpu.avl_sha256 == strict.sha256 != default_avl().sha256


def test_each_packed_unit_is_sealed_with_its_hbom_hash_and_chain_head(fed: Fed) -> None:
    seals = [x for x in system_bodies(fed.ledger, "unit.sealed") if isinstance(x, b.UnitSealed)]
    assert len(seals) == len(fed.plan.servers)
    seal = seals[0]
    with fed.ledger.reader() as s:
        hbom = s.scalars(select(SealedHbom)).one()
        assert hashlib.sha256(hbom.data).hexdigest() == seal.hbom_sha256 == hbom.sha256
        chain = log.chain_leaves(s, "line.events", fed.server)
    kinds = [decode_event(parse_leaf(r.data).value).type for r in chain]
    at = kinds.index("unit.sealed")
    packed = kinds.index("unit.packed")
    assert packed < at  # later events of the same batch may come in between
    from linetrace.ledger.proof.merkle import leaf_hash

    # The seal covers the chain up to its cause, the unit.packed, never beyond it.
    assert seal.chain_head == leaf_hash(chain[packed].data).hex()
    assert decode_event(parse_leaf(chain[packed].data).value).id == seal.packed
    assert parse_leaf(chain[at].data).unit_prev == leaf_hash(chain[at - 1].data)
    assert [a.serial for a in seal.assemblies] == [fed.plan.servers[0].mainboard.serial]  # type: ignore[union-attr]


def test_system_events_are_deterministic_so_a_redo_is_byte_identical(tmp_path: Path) -> None:
    values: list[Sequence[bytes]] = []
    for name in ("a", "b"):
        ledger = Ledger(f"sqlite:///{tmp_path / name}.db")
        feed_line(ledger, line())
        with ledger.reader() as s:
            values.append(s.scalars(select(EventRow.value).where(
                EventRow.type.in_(["material.checked", "unit.sealed"]))
                .order_by(EventRow.event_id)).all())
            hbom = s.scalars(select(SealedHbom.data)).one()
            values.append([hbom])
        ledger.close()
    assert values[0] == values[2] and values[1] == values[3]


def test_telemetry_bears_no_leaf_and_every_leaf_bearing_event_has_one(fed: Fed) -> None:
    with fed.ledger.reader() as s:
        kinds = Counter(dict(s.execute(select(EventRow.type, func.count())
                                       .group_by(EventRow.type)).all()))
        leaves = s.scalar(select(func.count()).select_from(log.LogLeaf))
        assert log.tree_size(s) == leaves
    telemetry = sum(kinds[t] for t in ("burnin.telemetry", "burnin.xid", "burnin.run"))
    assert leaves == sum(kinds.values()) - telemetry
