"""How telemetry bytes are stored: compressed, deterministic, pruned to a marker, and still
recognised byte for byte by their SHA-256 (issue 10, goal 7)."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest

from linetrace.ledger import telemetry_store as ts
from linetrace.ledger.proof.errors import ProofError
from linetrace.ledger.proof.telemetry import commitment, commitment_of_events, event_digest
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import encode_event


def telemetry(t: int, gpus: int = 8) -> bytes:
    samples = [b.GpuSample(gpu_index=g, gpu_serial=f"1654{g:09d}", gpu_uuid=f"GPU-{uuid.UUID(int=g)}",
                           temp_c=60.0 + (t * 7 + g) % 13 / 10, power_w=650.5 + g, sm_clock_mhz=1980.0,
                           mem_clock_mhz=2619.0, util_pct=99.0, ecc_sbe_vol=t // 100)
               for g in range(gpus)]
    return encode_event(event_type="burnin.telemetry", source="burnin-01", subject="SRV-000001",
                        body=b.BurninTelemetry(run_id=str(uuid.UUID(int=7)), samples=samples),
                        time=datetime(2026, 5, 4, 8, 0, t % 60, tzinfo=UTC), stationseq=1000 + t,
                        event_id=str(uuid.UUID(int=t)))


def test_telemetry_is_stored_compressed_and_reads_back_byte_for_byte() -> None:
    value = telemetry(1)
    cols = ts.stored_columns("line.telemetry", value)
    assert cols["value"].startswith(ts.COMPRESSED) and len(cols["value"]) < len(value) / 4
    assert cols["digest"] == hashlib.sha256(value).digest()
    assert ts.decode(cols["value"]) == value
    assert ts.EventValue().process_result_value(cols["value"], None) == value  # type: ignore[arg-type]


def test_other_topics_are_stored_as_they_came_without_a_digest() -> None:
    value = b'{"specversion":"1.0","type":"work.started"}'
    assert ts.stored_columns("line.events", value) == {"value": value, "digest": None}
    assert ts.decode(value) == value  # raw rows (and telemetry written before) read unchanged


def test_compression_is_deterministic() -> None:
    values = [telemetry(t) for t in range(20)]
    assert [ts.stored_columns("line.telemetry", v) for v in values] == \
        [ts.stored_columns("line.telemetry", bytes(v)) for v in values]


def test_no_json_event_can_be_mistaken_for_a_stored_form() -> None:
    for prefix in (ts.COMPRESSED, ts.PRUNED):
        assert prefix[:1] == b"\x00"  # a JSON text starts with `{` or whitespace, never NUL
    assert not ts.is_pruned(telemetry(2)) and ts.decode(ts.PRUNED) == ts.PRUNED


def test_same_bytes_recognises_a_replay_and_refuses_other_bytes_also_after_pruning() -> None:
    value, other = telemetry(3), telemetry(4)
    cols = ts.stored_columns("line.telemetry", value)
    assert ts.same_bytes(ts.decode(cols["value"]), cols["digest"], value)
    assert ts.same_bytes(cols["value"], cols["digest"], value)  # read without the decoder
    assert not ts.same_bytes(cols["value"], cols["digest"], other)
    assert ts.same_bytes(ts.PRUNED, cols["digest"], value)
    assert not ts.same_bytes(ts.PRUNED, cols["digest"], other)
    assert not ts.same_bytes(ts.PRUNED, None, value)  # no digest: nothing proves it the same
    raw = b'{"a":1}'
    assert ts.same_bytes(raw, None, raw) and not ts.same_bytes(raw, None, b'{"a":2}')


def test_a_pruned_event_says_so_naming_the_retention_policy() -> None:
    d = event_digest(b"x")
    assert ts.require_bytes(b"{}", "event e") == b"{}"
    with pytest.raises(ts.TelemetryPruned, match="pruned under the retention policy") as e:
        ts.require_bytes(ts.PRUNED, "event burnin-01/e1", d)
    assert e.value.code == "telemetry.pruned" and d.hex() in e.value.message


def test_an_edited_compressed_value_reads_as_stored_and_fails_its_digest() -> None:
    value = telemetry(5)
    cols = ts.stored_columns("line.telemetry", value)
    edited = cols["value"][:-3] + bytes(3)
    read = ts.EventValue().process_result_value(edited, None)  # type: ignore[arg-type]
    assert read != value
    assert ts.digest_problem(read, cols["digest"]) is not None
    assert ts.digest_problem(value, cols["digest"]) is None
    assert ts.digest_problem(ts.PRUNED, cols["digest"]) is None
    assert ts.digest_problem(ts.PRUNED, None) is not None


def test_commitment_is_sha256_over_the_ordered_digests() -> None:
    values = [telemetry(t) for t in range(5)]
    digests = [hashlib.sha256(v).digest() for v in values]
    assert commitment(digests) == hashlib.sha256(b"".join(digests)).digest()
    assert commitment_of_events(values) == commitment(digests)
    assert commitment(digests[::-1]) != commitment(digests)
    assert commitment([]) == hashlib.sha256(b"").digest()
    with pytest.raises(ProofError, match="not 32"):
        commitment([digests[0][:31]])
