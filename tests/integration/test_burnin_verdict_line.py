"""The verdict stage over a simulated line through the real writer (SQLite), no broker:
byte-identical verdicts whatever the batches and the order partitions are read in, the
projection `verify-ledger` rebuilds, and routing of a failure the station passed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from linetrace.ledger import log
from linetrace.ledger.audit import audit_ledger
from linetrace.ledger.db import Ledger
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.models import EventRow
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.verdicts import BurninVerdictRow, BurninWait
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import decode_stored_event
from linetrace.schemas.signing import keyid_of
from linetrace.schemas.topics import EVENTS, TELEMETRY
from linetrace.stations.simulator import station_roster
from linetrace.streams.detect.verdict_stage import VerdictStage
from linetrace.streams.stages import Pipeline
from linetrace.streams.system_stage import SystemEventsStage

from ..unit.test_log_line import ENROLLED_AT, PLANT, SIGNER, line, station_candidates, station_key

pytestmark = pytest.mark.integration

Order = Callable[[list[Candidate]], list[Candidate]]


def _telemetry_last(cands: list[Candidate]) -> list[Candidate]:
    return ([c for c in cands if c.record.topic != TELEMETRY]
            + [c for c in cands if c.record.topic == TELEMETRY])


def _events_last(cands: list[Candidate]) -> list[Candidate]:
    return ([c for c in cands if c.record.topic != EVENTS]
            + [c for c in cands if c.record.topic == EVENTS])


def feed(path: Path, order: Order, batch: int, units: int = 2, seed: int = 11) -> Ledger:
    ledger = Ledger(f"sqlite:///{path}")
    plan = line(units=units, seed=seed)
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(),
                       now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT)
    pipeline = Pipeline([SystemEventsStage(ctx), VerdictStage(ctx)])
    cands = order(station_candidates(plan))
    for i in range(0, len(cands), batch):
        out = write_batch(ledger, cands[i:i + batch], ctx=ctx, stages=pipeline)
        assert not out.rejections, out.rejections[:1]
    return ledger


def verdicts(ledger: Ledger) -> dict[str, bytes]:
    with ledger.reader() as s:
        return {r.event_id: bytes(r.value) for r in s.scalars(
            select(EventRow).where(EventRow.type == "burnin.verdict"))}


def test_verdicts_are_byte_identical_whatever_the_batches_and_partition_order(
        tmp_path: Path) -> None:
    base = feed(tmp_path / "a.db", lambda c: c, 40)
    want = verdicts(base)
    assert want, "the simulated line burned nothing in"
    with base.reader() as s:
        runs = s.scalars(select(EventRow).where(EventRow.type == "burnin.run")).all()
        ends = [e for r in runs if isinstance((e := decode_stored_event(r.value)).body,
                                              b.BurninRun) and e.body.phase == "end"]
        assert len(want) == len(ends)  # one verdict per run
        rows = s.scalars(select(BurninVerdictRow)).all()
        assert {r.event_id for r in rows} == set(want)
    for name, order, size in [("b", _telemetry_last, 7), ("c", _events_last, 500),
                              ("d", lambda c: c, 1)]:
        other = feed(tmp_path / f"{name}.db", order, size)
        assert verdicts(other) == want, name
        with other.reader() as s:
            assert all(w.resolved is not None for w in s.scalars(select(BurninWait)))
        other.close()
    base.close()


def test_verify_ledger_rebuilds_the_verdict_projection_and_reports_an_edit(
        tmp_path: Path) -> None:
    ledger = feed(tmp_path / "a.db", _events_last, 40, units=1)
    log.maybe_checkpoint(ledger, SIGNER, 1, 0)
    keyid = keyid_of(PLANT.public_key())
    rep = audit_ledger(ledger, SIGNER.verifier, keyid)
    assert not rep.findings, rep.findings[:3]
    with ledger.transaction() as s:
        row = s.scalars(select(BurninVerdictRow)).first()
        assert row is not None
        row.result = "Passed" if row.result == "Failed" else "Failed"
    rep = audit_ledger(ledger, SIGNER.verifier, keyid)
    assert any("burnin_verdicts" in str(f) for f in rep.findings), rep.findings[:3]
    ledger.close()


def _routes(ledger: Ledger) -> list[b.CommandRoute]:
    with ledger.reader() as s:
        out = []
        for r in s.scalars(select(EventRow).where(EventRow.type == "command.route")):
            body = decode_stored_event(r.value).body
            assert isinstance(body, b.CommandRoute)
            out.append(body)
        return out


def test_no_failure_is_routed_by_the_verdict_when_the_station_reported_it(
        tmp_path: Path) -> None:
    ledger = feed(tmp_path / "a.db", lambda c: c, 40, units=6)
    with ledger.reader() as s:
        rows: Sequence[BurninVerdictRow] = s.scalars(select(BurninVerdictRow)).all()
        vals = {r.event_id: decode_stored_event(bytes(r.value)).body for r in s.scalars(
            select(EventRow).where(EventRow.type == "burnin.verdict"))}
    assert rows
    for body in vals.values():
        assert isinstance(body, b.BurninVerdict)
        # the station's own results and linetrace's verdict agree on the simulated line
        assert (body.result == "Passed") == (body.station_result == "Passed"), body.reasons
    assert not [r for r in _routes(ledger) if "verdict" in r.reason]
    ledger.close()


def test_evidence_carries_telemetry_that_verify_checks_against_the_verdict(
        tmp_path: Path) -> None:
    from linetrace.ledger.evidence import write_evidence
    from linetrace.ledger.proof.verify import VerificationFailed, verify_bundle

    ledger = feed(tmp_path / "a.db", lambda c: c, 40, units=1, seed=7)
    server = line(units=1, seed=7).servers[0].serial  # sealed (tests/unit/test_verify_bundle)
    plain = tmp_path / "plain"
    write_evidence(ledger, server, plain, SIGNER)
    seen: dict[str, str] = {}
    verify_bundle(plain, str(SIGNER.verifier), report=seen.__setitem__)
    assert seen["telemetry"].startswith("none carried (1 burn-in verdict")
    assert not (plain / "telemetry").exists()

    bundle = tmp_path / "bundle"
    write_evidence(ledger, server, bundle, SIGNER, telemetry=True)
    (path,) = sorted((bundle / "telemetry").iterdir())
    seen.clear()
    verify_bundle(bundle, str(SIGNER.verifier), report=seen.__setitem__)
    lines = path.read_bytes().splitlines()
    assert f"1 run(s), {len(lines)} telemetry events" in seen["telemetry"]

    def refused(data: bytes) -> str:
        path.write_bytes(data)
        try:
            verify_bundle(bundle, str(SIGNER.verifier))
        except VerificationFailed as e:
            assert e.check == "telemetry"
            return str(e)
        raise AssertionError("tampered telemetry verified")

    import base64
    value = bytearray(base64.b64decode(lines[5]))
    at = value.index(b'"temp_c":') + len(b'"temp_c":')
    value[at] = ord("9") if value[at] != ord("9") else ord("8")  # one temperature altered
    altered = [*lines[:5], base64.b64encode(bytes(value)), *lines[6:]]
    assert "altered" in refused(b"\n".join(altered) + b"\n")
    assert "dropped" in refused(b"\n".join(lines[:5] + lines[6:]) + b"\n")
    swapped = [*lines[:5], lines[6], lines[5], *lines[7:]]
    assert "order" in refused(b"\n".join(swapped) + b"\n")
    path.write_bytes(b"\n".join(lines) + b"\n")
    verify_bundle(bundle, str(SIGNER.verifier))
    path.rename(path.with_name("00000000-0000-4000-8000-000000000000.jsonl"))
    assert "no burnin.verdict leaf" in refused(path.read_bytes() if path.exists() else b"")
    ledger.close()


def test_a_failure_the_station_passed_is_routed_to_repair_once_by_the_verdict(
        tmp_path: Path) -> None:
    """One double-bit ECC error slipped into GPU 2's telemetry mid-run (signed by the station,
    whose own results still say Passed): the verdict fails and routes the unit to repair, and
    the route stage routes nothing for it (the station reported the step Completed)."""
    import msgspec

    from linetrace.schemas.envelope import decode_event, encode_event
    from linetrace.streams.route_stage import RouteStage

    plan = line(units=1, seed=7)
    server = plan.servers[0].serial
    seen = [0]

    def dbe(n: int, value: bytes, key: Any) -> tuple[bytes, Any]:
        ev = decode_event(value)
        body = ev.body
        if ev.subject != server or not isinstance(body, b.BurninTelemetry):
            return value, key
        seen[0] += 1
        if seen[0] != 10:
            return value, key
        samples = [msgspec.structs.replace(s, ecc_dbe_vol=s.ecc_dbe_vol + 1)
                   if s.gpu_index == 2 else s for s in body.samples]
        return encode_event(event_type=ev.type, source=ev.source, subject=ev.subject,
                            body=b.BurninTelemetry(run_id=body.run_id, samples=samples),
                            time=ev.envelope.time, event_id=ev.id, stationseq=ev.seq), key

    ledger = Ledger(f"sqlite:///{tmp_path / 'a.db'}")
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(),
                       now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT)
    pipeline = Pipeline([SystemEventsStage(ctx), RouteStage(ctx), VerdictStage(ctx)])
    cands = station_candidates(plan, tamper=dbe)
    for i in range(0, len(cands), 40):
        assert not write_batch(ledger, cands[i:i + 40], ctx=ctx, stages=pipeline).rejections
    with ledger.reader() as s:
        bodies = [decode_stored_event(bytes(r.value)).body for r in s.scalars(
            select(EventRow).where(EventRow.type == "burnin.verdict",
                                   EventRow.subject == server))]
    failed = [v for v in bodies if isinstance(v, b.BurninVerdict) and v.result == "Failed"]
    assert len(failed) == 1 and failed[0].station_result == "Passed"
    assert {(r.code, r.gpu_index) for r in failed[0].reasons} == {("ecc.dbe", 2)}
    routed = [r for r in _routes(ledger) if r.unit == server]
    assert len(routed) == 1, routed
    assert routed[0].step == 900 and routed[0].station_type == "repair"
    assert "burn-in verdict failed" in routed[0].reason and "double-bit" in routed[0].reason
    ledger.close()
