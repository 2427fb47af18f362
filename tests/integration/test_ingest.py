"""Ingest rules against the real embedded broker and a real `linetrace worker` process.

Records are produced with plain aiokafka, as a station vendor's code would.
"""

from __future__ import annotations

import asyncio
import base64
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from sqlalchemy import func, select

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, Rejected
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import encode_event

from ..conftest import run_cli, wait_for

pytestmark = pytest.mark.integration

T0 = "2026-03-01T08:00:00.000Z"


def work_started(station: str, serial: str, seq: int, *, operation: str = "ICT",
                 event_id: str | None = None) -> bytes:
    return encode_event(
        event_type="work.started", source=station, subject=serial, time=T0, stationseq=seq,
        event_id=event_id or str(uuid.uuid4()),
        body=b.WorkStarted(transaction_id=str(uuid.uuid4()), step=40, operation=operation,
                           work_order="WO-1", product="PCBA-MB", kind="assembly"))


async def produce(bootstrap: str, records: list[tuple[str, bytes, bytes, list[tuple[str, bytes]]]]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await p.start()
    try:
        for topic, key, value, headers in records:
            await p.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await p.stop()


async def read_all(bootstrap: str, topic: str, n: int, timeout: float = 30) -> list:  # type: ignore[type-arg]
    c = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                         enable_auto_commit=False)
    await c.start()
    out: list = []  # type: ignore[type-arg]
    try:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout
        while len(out) < n and loop.time() < end:
            batch = await c.getmany(timeout_ms=500)
            for msgs in batch.values():
                out.extend(msgs)
    finally:
        await c.stop()
    return out


def test_bad_input_is_dead_lettered_or_quarantined_and_good_input_still_flows(
        broker: str, worker, line_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    key_file = tmp_path / "ict.key"
    assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", "ict-77", "--type", "ict", "--public-key",
                str(key_file) + ".pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    key = signing.load_private_key_pem(key_file.read_bytes())
    stranger = signing.generate_key()
    serial = "PCBA-T-000001"
    k = serial.encode()

    good1 = work_started("ict-77", serial, 1)
    schema_bad = good1.replace(b'"step":40', b'"step":"forty"')
    unenrolled = work_started("ict-99", serial, 1)
    forged = work_started("ict-77", serial, 2)
    dup_id = str(uuid.uuid4())
    original = work_started("ict-77", serial, 3, event_id=dup_id)
    equivocating = work_started("ict-77", serial, 4, event_id=dup_id, operation="ICT retest")
    after = [work_started("ict-77", serial, 10 + i) for i in range(5)]

    records = [
        ("line.events", k, b"not json at all", signing.sign_value(b"not json at all", key)),
        ("line.events", k, schema_bad, signing.sign_value(schema_bad, key)),
        ("line.events", k, unenrolled, signing.sign_value(unenrolled, stranger)),
        # a valid signature by the station's key, but over other bytes
        ("line.events", k, forged, [(n, v) for n, v in signing.sign_value(good1, key)]),
        ("line.events", k, good1, signing.sign_value(good1, key)),
        ("line.events", k, good1, signing.sign_value(good1, key)),  # exact replay
        ("line.events", k, original, signing.sign_value(original, key)),
        ("line.events", k, equivocating, signing.sign_value(equivocating, key)),
    ] + [("line.events", k, v, signing.sign_value(v, key)) for v in after]
    asyncio.run(produce(broker, records))

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")

    def counts() -> tuple[int, int]:
        with ledger.reader() as s:
            ev = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.source == "ict-77"))
            rj = s.scalar(select(func.count()).select_from(Rejected))
            return ev or 0, rj or 0

    try:
        wait_for(lambda: counts() == (7, 5), timeout=90, what="7 events and 5 rejections")
    except AssertionError:
        raise AssertionError(f"have {counts()}\n{worker.tail()}") from None

    with ledger.reader() as s:
        stored = s.scalars(select(EventRow.value).where(EventRow.source == "ict-77")
                           .order_by(EventRow.stationseq)).all()
        rejected = {(r.destination, r.code) for r in s.scalars(select(Rejected))}
        raw = {r.code: r.value for r in s.scalars(select(Rejected))}
    assert stored == [good1, original] + after  # the replay stored once, equivocation not at all
    assert rejected == {
        ("line.events.dlq", "event.not_json"), ("line.events.dlq", "event.invalid"),
        ("line.quarantine", "station.unknown"), ("line.quarantine", "signature.invalid"),
        ("line.quarantine", "event.equivocation"),
    }
    assert raw["event.equivocation"] == equivocating and raw["event.not_json"] == b"not json at all"

    dlq = asyncio.run(read_all(broker, "line.events.dlq", 2))
    quarantine = asyncio.run(read_all(broker, "line.quarantine", 3))
    assert [m.value for m in dlq] == [b"not json at all", schema_bad]
    assert sorted(m.value for m in quarantine) == sorted([unenrolled, forged, equivocating])
    for m in dlq + quarantine:
        h = {name: v.decode() for name, v in m.headers}
        for name in ("error.code", "error.message", "error.stage", "original.topic",
                     "original.partition", "original.offset"):
            assert name in h, (name, h)
        assert h["original.topic"] == "line.events"
        assert int(h["original.offset"]) >= 0
        assert m.key == k
        # the original signature headers travel along for forensics
        assert base64.b64decode(h["linetrace-signature"])
    codes = {dict(m.headers)["error.code"].decode() for m in dlq}
    assert codes == {"event.not_json", "event.invalid"}


def test_rotated_key_takes_over_and_the_revoked_one_is_quarantined_after_its_last_event(
        broker: str, worker, line_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    old_file, new_file = tmp_path / "old.key", tmp_path / "new.key"
    for f in (old_file, new_file):
        assert run_cli("stations", "keygen", "--out", str(f), data_dir=line_dir).returncode == 0
    r = run_cli("stations", "enroll", "aoi-05", "--type", "aoi", "--public-key",
                f"{old_file}.pub", data_dir=line_dir)
    assert r.returncode == 0, r.stderr
    old = signing.load_private_key_pem(old_file.read_bytes())
    new = signing.load_private_key_pem(new_file.read_bytes())
    serial = "PCBA-R-000001"
    before = [work_started("aoi-05", serial, s) for s in (1, 2, 3)]
    asyncio.run(produce(broker, [("line.events", serial.encode(), v, signing.sign_value(v, old))
                                 for v in before]))
    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")

    def stored() -> list[bytes]:
        with ledger.reader() as s:
            return list(s.scalars(select(EventRow.value).where(EventRow.source == "aoi-05")
                                  .order_by(EventRow.stationseq)))

    wait_for(lambda: len(stored()) == 3, timeout=60, what="events signed by the first key")
    r = run_cli("stations", "rotate", "aoi-05", "--public-key", f"{new_file}.pub", "--revoke-old",
                data_dir=line_dir)
    assert r.returncode == 0 and "revoked 1 old key" in r.stdout, r.stdout + r.stderr
    late_old = work_started("aoi-05", serial, 4)
    with_new = work_started("aoi-05", serial, 5)
    asyncio.run(produce(broker, [
        ("line.events", serial.encode(), late_old, signing.sign_value(late_old, old)),
        ("line.events", serial.encode(), with_new, signing.sign_value(with_new, new))]))
    wait_for(lambda: len(stored()) == 4, timeout=60, what="the event signed by the new key")
    assert stored() == before + [with_new]
    with ledger.reader() as s:
        codes = [r.code for r in s.scalars(select(Rejected).where(Rejected.source == "aoi-05"))]
    assert codes == ["key.revoked"]
    show = run_cli("stations", "show", "aoi-05", "--json", data_dir=line_dir)
    keys = {k["keyid"]: k for k in __import__("json").loads(show.stdout)["keys"]}
    assert keys[signing.keyid_of(old.public_key())]["revoked_after"] == {"line.events": 3}
    assert keys[signing.keyid_of(new.public_key())]["revoked"] is None
