"""Holds on the real writer, on SQLite and PostgreSQL: what a hold stops (a lot hold through a
PCBA), what it lists (shipped units), how it is released (two quality users), dispositions,
and that hold events are leaves like any other.

The line history is written by the real batch writer from signed station events: three
servers with a PCBA each, whose boards carry a capacitor reel lot; one server is shipped.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.holds import (
    held_units,
    hold_id_for,
    load_holds_in_force,
    stopped_units,
)
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow, Hold, HoldUnit
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext, register_plant_key, signed_system_event
from linetrace.ledger.writer import record_system_event, write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.topics import TOPIC_OF_TYPE

pytestmark = pytest.mark.integration

CAP_LOT = "LOT-H-CAP"  # a reel on every board
GPU_LOT = "LOT-H-GPU"
_NS = uuid.UUID("6c696e65-7472-6163-6500-0000000000a2")


@dataclass
class Station:
    sid: str
    key: Ed25519PrivateKey
    seq: int = 0

    def cand(self, etype: str, subject: str, body: b.Body, t: str) -> Candidate:
        self.seq += 1
        eid = str(uuid.uuid5(_NS, f"{self.sid}:{self.seq}"))
        v = encode_event(event_type=etype, source=self.sid, subject=subject, body=body, time=t,
                         stationseq=self.seq, event_id=eid)
        kid, sig = signing.read_signature(signing.sign_value(v, self.key))
        return Candidate(SourceRecord(TOPIC_OF_TYPE[etype], 0, self.seq, subject.encode(), v),
                         decode_event(v), kid, sig)


@dataclass
class Line:
    ledger: Ledger
    plant: Ed25519PrivateKey


def _t(minute: int) -> str:
    return f"2026-03-02T{8 + minute // 60:02d}:{minute % 60:02d}:00Z"


def build_line(ledger: Ledger, plant: Ed25519PrivateKey) -> None:
    """PCBA-H-1 in SRV-H-1 (at integration, step 70), PCBA-H-2 in SRV-H-2 (shipped), PCBA-H-3
    not installed yet (at ICT, step 40), SRV-H-4 with no board yet; PCBA-H-5's reel of
    CAP_LOT was replaced by another lot's. Every board carries CAP_LOT; SRV-H-4 a GPU of
    GPU_LOT. Stations: smt-01, int-01 (integration), ship-01."""
    keys = {sid: Ed25519PrivateKey.from_private_bytes(bytes([n]) * 32)
            for n, sid in enumerate(("smt-01", "int-01", "ship-01", "rep-01"), start=1)}
    types = {"smt-01": "smt", "int-01": "integration", "ship-01": "shipping", "rep-01": "repair"}
    for sid, key in keys.items():
        enroll_station(ledger, plant, sid, types[sid], key.public_key())
    st = {sid: Station(sid, key) for sid, key in keys.items()}
    minutes = iter(range(1, 900))

    def ev(sid: str, etype: str, subject: str, body: b.Body) -> Candidate:
        return st[sid].cand(etype, subject, body, _t(next(minutes)))

    def started(sid: str, serial: str, step: int, wo: str, product: str, kind: str = "server"
                ) -> Candidate:
        return ev(sid, "work.started", serial, b.WorkStarted(
            transaction_id=str(uuid.uuid5(_NS, f"{serial}:{step}")), step=step,
            operation=f"op {step}", work_order=wo, product=product, kind=kind))

    cap = b.InstalledItem(lot=CAP_LOT, mpn="CAP-100N", category="capacitor", qty=480,
                          ref="C1-C480")
    batch: list[Candidate] = []
    for n in (1, 2, 3, 5):
        pcba = f"PCBA-H-{n}"
        batch += [started("smt-01", pcba, 20, "WO-H-P", "A-PCBA", "assembly"),
                  ev("smt-01", "materials.installed", pcba, b.MaterialsInstalled(items=[cap]))]
    batch.append(ev("rep-01", "materials.uninstalled", "PCBA-H-5", b.MaterialsUninstalled(
        items=[b.RemovedItem(lot=CAP_LOT)], reason="DefectiveMaterial")))
    batch.append(ev("rep-01", "materials.installed", "PCBA-H-5", b.MaterialsInstalled(
        items=[b.InstalledItem(lot="LOT-H-CAP2", mpn="CAP-100N", category="capacitor", qty=480,
                               ref="C1-C480")])))
    for n in (1, 2):
        srv, pcba = f"SRV-H-{n}", f"PCBA-H-{n}"
        batch += [started("int-01", srv, 70, "WO-H-1", "A"),
                  ev("int-01", "materials.installed", srv, b.MaterialsInstalled(items=[
                      b.InstalledItem(lot="LOT-H-PCBA", mpn="A-PCBA", category="mainboard",
                                      serial=pcba)]))]
    batch += [started("ship-01", "SRV-H-2", 120, "WO-H-1", "A"),
              ev("ship-01", "unit.shipped", "SRV-H-2", b.UnitShipped(
                  order="SO-1", carton="CTN-1", shipment="SHP-1", destination="Berlin"))]
    batch += [started("smt-01", "PCBA-H-3", 40, "WO-H-P", "A-PCBA", "assembly")]
    batch += [started("int-01", "SRV-H-4", 60, "WO-H-4", "A"),
              ev("int-01", "materials.installed", "SRV-H-4", b.MaterialsInstalled(items=[
                  b.InstalledItem(lot=GPU_LOT, mpn="GPU-X", category="gpu", serial="GPU-H-1",
                                  slot=0)]))]
    out = write_batch(ledger, batch, ctx=SystemContext(plant))
    assert len(out.stored) == len(batch), [r.message for r in out.rejections]


@pytest.fixture
def line(ledger: Ledger, tmp_path) -> Line:  # type: ignore[no-untyped-def]
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    build_line(ledger, plant)
    return Line(ledger, plant)


def _record(line: Line, event_type: str, subject: str, body: b.Body, cause: str) -> int:
    """Record a plant-signed system event the way the CLI does; returns its events.seq."""
    now = datetime.now(UTC)
    with line.ledger.transaction() as s:
        register_plant_key(s, line.plant, now)
        c = signed_system_event(event_type, subject, body, time=now, cause_id=cause,
                                plant_key=line.plant)
        assert record_system_event(s, c)
        seq = s.scalar(select(EventRow.seq).where(EventRow.event_id == c.event.id))
        assert seq is not None
        return seq


def test_a_route_hold_is_projected_with_its_log_position_and_stops_its_unit(line: Line) -> None:
    """The route stage's own hold.placed (code route.*, placed by linetrace) needs no person."""
    hold_id = hold_id_for("cause-event-1", "route.missing_step")
    body = b.HoldPlaced(hold_id=hold_id, scope="unit", target="SRV-H-1", reason="skipped 80",
                        category="quality", code="route.missing_step", placed_by="linetrace",
                        units=["SRV-H-1"], step=90, station="int-01")
    seq = _record(line, "hold.placed", hold_id, body, "cause-event-1")
    with line.ledger.reader() as s:
        hold = s.get(Hold, hold_id)
        assert hold is not None and hold.placed_seq == seq and hold.state == "active"
        assert (hold.step, hold.station, hold.category) == (90, "int-01", "quality")
        assert s.scalars(select(HoldUnit.serial)).all() == ["SRV-H-1"]
        in_force = load_holds_in_force(s)
        got = in_force.for_unit("SRV-H-1", work_order="WO-H-1", lots=(), mpns=(), station=None)
        assert [h.hold_id for h in got] == [hold_id]
        assert in_force.for_unit("SRV-H-1", work_order=None, lots=(), mpns=(), station=None,
                                 before_seq=seq) == []
        assert in_force.for_unit("SRV-H-4", work_order="WO-H-4", lots=(), mpns=(),
                                 station=None) == []
        assert held_units(s) == [{"serial": "SRV-H-1", "product": "A", "state": "in_progress",
                                  "step": 70, "holds": [{"hold_id": hold_id,
                                                         "reason": "skipped 80",
                                                         "code": "route.missing_step"}]}]
    _record(line, "hold.released", hold_id, b.HoldReleased(
        hold_id=hold_id, reason="checked", released_by=[], statements=[]), "release-1")
    with line.ledger.reader() as s:
        hold = s.get(Hold, hold_id)
        assert hold is not None and hold.state == "released" and hold.released_seq is not None
        assert held_units(s) == []


def test_lot_station_and_work_order_holds_reach_what_they_name(line: Line) -> None:
    """A lot hold reaches the boards that carry the lot and the servers they went into (not a
    board whose reel was replaced); a work-order hold its units; a station hold the station."""
    ids = {}
    for scope, target in (("lot", CAP_LOT), ("work_order", "WO-H-4"), ("station", "int-01")):
        ids[scope] = hold_id_for(f"req-{scope}", "hold.manual")
        _record(line, "hold.placed", ids[scope], b.HoldPlaced(
            hold_id=ids[scope], scope=scope, target=target, reason=f"{scope} hold",  # type: ignore[arg-type]
            category="quality", code="hold.manual", placed_by="qa-1"), f"req-{scope}")
    with line.ledger.reader() as s:
        stopped = stopped_units(s)
        assert {k: [h.hold_id for h in v] for k, v in stopped.items()} == {
            "PCBA-H-3": [ids["lot"]], "SRV-H-1": [ids["lot"]], "SRV-H-4": [ids["work_order"]]}
        in_force = load_holds_in_force(s)
        assert in_force.station_locked("int-01") is not None
        assert in_force.station_locked("smt-01") is None
        got = in_force.for_unit("X", work_order=None, lots=[CAP_LOT], mpns=(), station="int-01")
        assert [h.scope for h in got] == ["lot", "station"]
