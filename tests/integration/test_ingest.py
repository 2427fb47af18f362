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


def test_events_stored_before_the_bounds_stay_readable_by_trace_and_verify_ledger(
        line_dir: Path) -> None:
    """Item 1: new bounds apply at admission only. A ledger written before them holds a
    `materials.installed` with qty 2^40 and a subject with a space (both valid in v1, both
    refused by admission now); `trace` and `verify-ledger` still read and verify it."""
    import json as json_

    from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
    from linetrace.ledger.log import maybe_checkpoint
    from linetrace.ledger.proof.checkpoints import plant_signer
    from linetrace.ledger.records import Candidate, SourceRecord
    from linetrace.ledger.writer import write_batch
    from linetrace.schemas.envelope import decode_event, decode_stored_event
    from linetrace.schemas.errors import MalformedEvent
    from linetrace.schemas.topics import partition_of

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(line_dir / "keys")
    key = signing.generate_key()
    enroll_station(ledger, plant, "gpu-install-01", "gpu-install", key.public_key())
    serial = "SRV OLD 1"  # v1 allowed any 1-128 characters as subject
    txn = str(uuid.uuid4())
    docs = [
        ("work.started", {"transaction_id": txn, "step": 60, "operation": "GPU install",
                          "work_order": "WO-OLD", "product": "HGX-OLD"}),
        ("materials.installed", {"items": [
            {"lot": "LOT-SCREWS", "mpn": "M3X6", "category": "fastener", "qty": 2**40,
             "ref": "BB-MOUNT"}]}),
    ]
    cands = []
    for seq, (etype, data) in enumerate(docs, start=1):
        value = json_.dumps({
            "specversion": "1.0", "id": str(uuid.uuid4()), "source": "gpu-install-01",
            "type": etype, "time": f"2026-01-05T06:0{seq}:00.000Z", "subject": serial,
            "datacontenttype": "application/json",
            "dataschema": f"urn:linetrace:schema:{etype}:v1",
            "stationseq": f"{seq:016d}", "data": data}, separators=(",", ":")).encode()
        with pytest.raises(MalformedEvent):
            decode_event(value)  # what admission says now
        kid, sig = signing.read_signature(signing.sign_value(value, key))
        cands.append(Candidate(SourceRecord("line.events", partition_of(serial.encode(), 8), seq,
                                            serial.encode(), value), decode_stored_event(value),
                               kid, sig))
    assert len(write_batch(ledger, cands).stored) == 2  # as the v1 worker wrote them
    maybe_checkpoint(ledger, plant_signer(plant, "linetrace.local/ledger/v1"), 1, 0.0)
    ledger.close()

    trace = run_cli("trace", serial, "--json", data_dir=line_dir)
    assert trace.returncode == 0, trace.stderr
    parts = json_.loads(trace.stdout)["parts"]
    assert [(p["lot"], p["qty"]) for p in parts] == [("LOT-SCREWS", 2**40)]
    audit = run_cli("verify-ledger", data_dir=line_dir)
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "verified" in audit.stdout


def _event(etype: str, station: str, subject: str, seq: int, body: b.Body,
           time: str = T0) -> bytes:
    return encode_event(event_type=etype, source=station, subject=subject, time=time,
                        stationseq=seq, event_id=str(uuid.uuid4()), body=body)


def _doc(value: bytes) -> dict:  # type: ignore[type-arg]
    import json as json_

    out: dict = json_.loads(value)  # type: ignore[type-arg]
    return out


def _raw(doc: dict) -> bytes:  # type: ignore[type-arg]
    import json as json_

    return json_.dumps(doc, separators=(",", ":")).encode()


async def _produce_raw(bootstrap: str, records: list[tuple[str, bytes | None, bytes,
                                                           list[tuple[str, bytes]], int | None]]) -> None:
    """Like a misbehaving client: no key, a chosen partition, huge or repeated headers."""
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", max_request_size=4 * 1024 * 1024)
    await p.start()
    try:
        for topic, key, value, headers, partition in records:
            await p.send_and_wait(topic, value, key=key, headers=headers, partition=partition)
    finally:
        await p.stop()


def test_the_ingest_boundary_refuses_what_issue_8_found_and_keeps_the_rest(
        broker: str, worker, line_dir: Path, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    """Items 2, 3, 5, 6, 7, 8 and 17 against the real broker and worker: each bad record is
    dead-lettered or quarantined with its own code, the valid events around them are stored,
    absurd times are stored and flagged, and nothing is logged as an ERROR."""
    import json as json_

    from linetrace.ledger.models import StationPosition
    from linetrace.schemas.topics import partition_of

    keys = {}
    for station, stype in (("ict-88", "ict"), ("gpu-install-88", "gpu-install")):
        key_file = tmp_path / f"{station}.key"
        assert run_cli("stations", "keygen", "--out", str(key_file), data_dir=line_dir).returncode == 0
        r = run_cli("stations", "enroll", station, "--type", stype, "--public-key",
                    f"{key_file}.pub", data_dir=line_dir)
        assert r.returncode == 0, r.stderr
        keys[station] = signing.load_private_key_pem(key_file.read_bytes())
    ict, gpu = keys["ict-88"], keys["gpu-install-88"]
    serial = "PCBA-B8-000001"
    k = serial.encode()
    right = partition_of(k, 8)
    wrong = (right + 1) % 8
    seq = iter(range(1, 1000))

    def ws(time: str = T0) -> bytes:
        return work_started("ict-88", serial, next(seq)) if time == T0 else _raw(
            {**_doc(work_started("ict-88", serial, next(seq))), "time": time})

    def signed(v: bytes, key=ict) -> list[tuple[str, bytes]]:  # type: ignore[no-untyped-def]
        return signing.sign_value(v, key)

    good = [ws() for _ in range(3)]
    far_past, far_future = ws("0001-01-01T00:00:00Z"), ws("9999-12-31T23:59:59Z")
    no_key = ws()
    on_wrong_partition = ws()
    newline_subject = _raw({**_doc(ws()), "subject": serial + "\n"})
    escape_op = _doc(ws())
    escape_op["data"]["operation"] = "ICT\x1b]0;pwned\x07\x1b[2J"
    escape_op_v = _raw(escape_op)
    dup_sig = ws()
    huge_header = ws()
    many_headers = ws()
    seq_max = _raw({**_doc(ws()), "stationseq": "9999999999999999"})
    deep = b'{"specversion":"1.0","data":' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    receipt = _event("material.received", "gpu-install-88", "LOT-B8-1", 1, b.MaterialReceived(
        lot="LOT-B8-1", mpn="MPN-1", supplier="SUP", date_code="2609", qty=10))
    after = [ws() for _ in range(3)]
    other = signing.generate_key()
    L = "line.events"
    records = [
        *[(L, k, v, signed(v), None) for v in good],
        (L, k, far_past, signed(far_past), None),
        (L, None, no_key, signed(no_key), None),
        (L, k, on_wrong_partition, signed(on_wrong_partition), wrong),
        (L, serial.encode() + b"\n", newline_subject, signed(newline_subject), None),
        (L, k, escape_op_v, signed(escape_op_v), None),
        (L, k, dup_sig, signed(dup_sig) + signing.sign_value(dup_sig, other)[1:], None),
        (L, k, huge_header, signed(huge_header) + [("traceparent", b"0" * 1_000_000)], None),
        (L, k, many_headers, signed(many_headers) + [(f"x-{i}", b"1") for i in range(5000)], None),
        (L, k, seq_max, signed(seq_max), None),
        (L, k, deep, signed(deep), None),
        ("line.receipts", b"LOT-B8-1", receipt, signed(receipt, gpu), None),
        (L, k, far_future, signed(far_future), None),
        *[(L, k, v, signed(v), None) for v in after],
    ]
    asyncio.run(_produce_raw(broker, records))

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    expected = {
        ("line.events.dlq", "event.key_mismatch"), ("line.events.dlq", "event.wrong_partition"),
        ("line.events.dlq", "event.invalid"), ("line.quarantine", "signature.ambiguous"),
        ("line.events.dlq", "headers.too_large"), ("line.events.dlq", "headers.too_many"),
        ("line.events.dlq", "seq.ahead_of_time"), ("line.events.dlq", "event.not_json"),
        ("line.quarantine", "station.not_permitted"),
    }

    def state() -> tuple[list[bytes], list[tuple[str, str, bytes | None]]]:
        with ledger.reader() as s:
            stored = list(s.scalars(select(EventRow.value).where(
                EventRow.source.in_(["ict-88", "gpu-install-88"])).order_by(EventRow.seq)))
            rejected = [(r.destination, r.code, r.value) for r in s.scalars(
                select(Rejected).order_by(Rejected.id))]
            return stored, rejected

    try:
        wait_for(lambda: len(state()[0]) == 8 and len(state()[1]) == 10, timeout=120,
                 what="8 events stored and 10 records refused")
    except AssertionError:
        raise AssertionError(f"have {state()}\n{worker.tail()}") from None
    stored, rejected = state()
    assert stored == [*good, far_past, far_future, *after]  # absurd times are never refused
    assert {(d, c) for d, c, _ in rejected} == expected
    by_value = {v: c for _, c, v in rejected}
    assert by_value[newline_subject] == "event.invalid"  # a subject with a newline is no subject
    assert by_value[no_key] == "event.key_mismatch"
    assert by_value[on_wrong_partition] == "event.wrong_partition"
    assert by_value[escape_op_v] == "event.invalid"
    assert by_value[dup_sig] == "signature.ambiguous"
    assert by_value[huge_header] == "headers.too_large"
    assert by_value[many_headers] == "headers.too_many"
    assert by_value[seq_max] == "seq.ahead_of_time"
    assert by_value[deep] == "event.not_json"
    assert by_value[receipt] == "station.not_permitted"
    # every refused record also reaches its topic, the oversized one included
    dlq = asyncio.run(read_all(broker, "line.events.dlq", 8))
    quarantine = asyncio.run(read_all(broker, "line.quarantine", 2))
    codes = sorted(dict(m.headers)["error.code"].decode() for m in dlq + quarantine)
    assert codes == sorted(c for _, c, _ in rejected), codes
    with ledger.reader() as s:  # the refused 9999999999999999 did not block the station
        last = s.scalar(select(StationPosition.last_seq).where(StationPosition.station_id == "ict-88"))
    assert last is not None and last < 10**6

    # item 5: the absurd times are flagged, listable, and did not move the line clock
    flags = json_.loads(run_cli("flags", "--json", data_dir=line_dir).stdout)
    assert [(f["kind"], f["event_time"], f["subject"], f["partition"]) for f in flags] == [
        ("time.far_from_clock", "0001-01-01T00:00:00.000Z", serial, right),
        ("time.far_from_clock", "9999-12-31T23:59:59.000Z", serial, right)]
    assert {f["clock"] for f in flags} == {"2026-03-01T08:00:00.000Z"}
    text = run_cli("flags", data_dir=line_dir)
    assert text.returncode == 0 and "2 flags" in text.stdout

    # item 8 and the rest: ordinary bad input, never an ERROR or a traceback in the worker log
    log = (line_dir / "worker.out").read_text(errors="replace")
    assert "Traceback" not in log and " ERROR " not in log and "[ERROR]" not in log, log[-3000:]
