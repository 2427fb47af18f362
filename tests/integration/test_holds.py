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
from linetrace.ledger.genealogy import list_units, trace, work_in_progress
from linetrace.ledger.dispositions import dispose
from linetrace.ledger.hold_actions import HoldError, place_hold, release_hold
from linetrace.ledger.hold_views import list_holds
from linetrace.ledger.holds import (
    held_units,
    hold_id_for,
    load_holds_in_force,
    stopped_units,
)
from linetrace.ledger.interlock import validate
from linetrace.ledger.keys import enroll_station, load_or_create_plant_key
from linetrace.ledger.models import EventRow, Hold, HoldUnit
from linetrace.ledger.outbox import OutboxRow
from linetrace.ledger.users import UserError, enroll_user
from linetrace.schemas.routes import packaged_routes
from linetrace.schemas.routes.progress import MATERIAL_HELD
from linetrace.schemas.statements import new_statement, sign_statement
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


def person(name: str) -> Ed25519PrivateKey:
    return Ed25519PrivateKey.from_private_bytes(uuid.uuid5(_NS, name).bytes * 2)


#: The people of these tests and their roles (admin enrols itself, then the others).
PEOPLE = {"admin": "admin", "sup": "supervisor", "q1": "quality", "q2": "quality",
          "viewer": "viewer"}


@dataclass
class Line:
    ledger: Ledger
    plant: Ed25519PrivateKey

    def sign(self, user: str, action: str, target: str, details: dict[str, str],
             key: Ed25519PrivateKey | None = None) -> b.SignedStatement:
        return sign_statement(new_statement(action, target, details, user=user),
                              key or person(user))

    def place(self, user: str, scope: str, target: str, reason: str = "suspect lot"
              ) -> dict:  # type: ignore[type-arg]
        signed = self.sign(user, "hold.place", target, {"scope": scope, "reason": reason})
        return place_hold(self.ledger, self.plant, signed, scope=scope, target=target,
                          reason=reason).hold

    def release(self, user: str, hold_id: str, reason: str | None = None):  # type: ignore[no-untyped-def]
        signed = self.sign(user, "hold.release", hold_id, {"reason": reason} if reason else {})
        return release_hold(self.ledger, self.plant, signed, hold_id, reason)

    def commands(self, event_type: str) -> list[tuple[str, dict]]:  # type: ignore[type-arg]
        """(station, body) of every recorded command of this type, in log order."""
        import msgspec

        with self.ledger.reader() as s:
            rows = s.execute(select(EventRow.subject, EventRow.value).where(
                EventRow.type == event_type).order_by(EventRow.seq)).all()
        return [(subject, msgspec.json.decode(value)["data"]) for subject, value in rows]


def erp_notices(line: Line) -> list[tuple[str, str]]:
    """(type, serial) of every ERP message in the outbox, in the order queued."""
    import json

    with line.ledger.reader() as s:
        values = s.scalars(select(OutboxRow.value).where(OutboxRow.topic == "erp.outbound")
                           .order_by(OutboxRow.seq)).all()
    return [(m["type"], m["serial"]) for m in map(json.loads, values)]


def enrol_people(ledger: Ledger, plant: Ed25519PrivateKey) -> None:
    for name, role in PEOPLE.items():
        key = person(name)
        details = {"role": role, "public_key": signing.public_key_b64(key.public_key()),
                   "keyid": signing.keyid_of(key.public_key())}
        signed = sign_statement(new_statement("user.add", name, details, user="admin"),
                                person("admin"))
        enroll_user(ledger, plant, signed, user=name, role=role, public_key=key.public_key())


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
    enrol_people(ledger, plant)
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


def test_a_lot_hold_stops_every_unshipped_unit_containing_it_through_a_pcba_and_lists_the_shipped(
        line: Line) -> None:
    hold = line.place("q1", "lot", CAP_LOT, "capacitor lot fails ESR")
    assert (hold["scope"], hold["target"], hold["category"], hold["state"]) == (
        "lot", CAP_LOT, "quality", "active")
    assert hold["placed_by"] == "q1" and hold["approvals"] == []
    # PCBA-H-1 is in SRV-H-1 (stopped in its place); PCBA-H-5's reel was replaced.
    assert hold["affected_units"] == ["PCBA-H-1", "PCBA-H-3", "SRV-H-1"]
    assert hold["shipped"] == ["SRV-H-2"]
    assert line.commands("command.hold") == [
        ("smt-01", {"unit": "PCBA-H-3", "reason": "capacitor lot fails ESR",
                    "hold_id": hold["id"]}),
        ("int-01", {"unit": "SRV-H-1", "reason": "capacitor lot fails ESR",
                    "hold_id": hold["id"]})]
    with line.ledger.reader() as s:
        assert [(u.serial, u.state) for u in list_units(s, state="on_hold")] == [
            ("PCBA-H-3", "on_hold"), ("SRV-H-1", "on_hold")]
        assert "SRV-H-1" not in [u.serial for u in list_units(s, state="in_progress")]
        assert {u.serial: u.state for u in list_units(s)}["SRV-H-2"] == "shipped"
        srv = trace(s, "SRV-H-1")
        assert srv.state == "on_hold" and [h.id for h in srv.holds] == [hold["id"]]
        assert trace(s, "SRV-H-4").state == "in_progress"
        wip = {(w.kind, w.step, w.state): w.units for w in work_in_progress(s)}
        assert wip[("server", 70, "on_hold")] == 1 and ("server", 70, "in_progress") not in wip
        assert list_holds(s) == [hold]
        topics = s.scalars(select(OutboxRow.topic).order_by(OutboxRow.seq)).all()
        # An install from the held lot, or of a board it holds, is refused by the interlock.
        routes = packaged_routes()
        for lots, parts in (([CAP_LOT], []), ([], ["PCBA-H-3"])):
            verdict = validate(s, "SRV-H-4", 70, "int-01", routes=routes, lots=lots,
                               parts=parts)
            held = [r for r in verdict.reasons if r.code == MATERIAL_HELD]
            assert not verdict.allowed and len(held) == 1 and hold["id"] in held[0].message
        assert not [r for r in validate(s, "SRV-H-4", 70, "int-01", routes=routes,
                                        lots=["LOT-H-CAP2"]).reasons if r.code == MATERIAL_HELD]
    assert topics.count("line.holds") >= 1 and topics.count("line.commands") == 2
    assert erp_notices(line) == [("erp.hold", "PCBA-H-1"), ("erp.hold", "PCBA-H-3"),
                                 ("erp.hold", "SRV-H-1")]


def test_a_quality_release_needs_two_different_quality_users(line: Line) -> None:
    hold_id = line.place("q1", "lot", CAP_LOT)["id"]
    first = line.release("q1", hold_id, "ESR retest passed")
    assert first.in_force and first.new
    assert "a second quality user must sign" in first.message
    with line.ledger.reader() as s:
        assert [u.serial for u in list_units(s, state="on_hold")] == ["PCBA-H-3", "SRV-H-1"]
    with pytest.raises(HoldError, match="second, different quality user") as same:
        line.release("q1", hold_id)
    assert same.value.code == "hold.same_user"
    with pytest.raises(UserError) as sup:
        line.release("sup", hold_id)
    assert sup.value.code == "user.forbidden"
    assert line.commands("command.release") == []
    second = line.release("q2", hold_id)
    assert not second.in_force and second.hold["state"] == "released"
    assert second.hold["released_by"] == ["q1", "q2"]
    assert [a["user"] for a in second.hold["approvals"]] == ["q1", "q2"]
    assert sorted(line.commands("command.release")) == [
        ("int-01", {"unit": "SRV-H-1", "reason": "hold released", "hold_id": hold_id}),
        ("smt-01", {"unit": "PCBA-H-3", "reason": "hold released", "hold_id": hold_id})]
    assert erp_notices(line)[3:] == [("erp.release", "PCBA-H-1"), ("erp.release", "PCBA-H-3"),
                                     ("erp.release", "SRV-H-1")]
    with line.ledger.reader() as s:
        assert list_units(s, state="on_hold") == [] and list_holds(s) == []
        assert [h["state"] for h in list_holds(s, all_=True)] == ["released"]
        assert trace(s, "SRV-H-1").holds[0].state == "released"
    with pytest.raises(HoldError) as ended:
        line.release("q1", hold_id)
    assert ended.value.code == "hold.ended"


def test_the_same_request_again_records_nothing_new(line: Line) -> None:
    signed = line.sign("q1", "hold.place", CAP_LOT, {"scope": "lot", "reason": "r"})
    a = place_hold(line.ledger, line.plant, signed, scope="lot", target=CAP_LOT, reason="r")
    b_ = place_hold(line.ledger, line.plant, signed, scope="lot", target=CAP_LOT, reason="r")
    assert a.new and not b_.new and a.hold["id"] == b_.hold["id"]
    assert len(line.commands("command.hold")) == 2 and len(line.commands("hold.placed")) == 1


def test_a_viewer_cannot_place_a_hold_and_a_forged_signature_is_refused(line: Line) -> None:
    with pytest.raises(UserError, match="supervisor") as viewer:
        line.place("viewer", "unit", "SRV-H-1")
    assert viewer.value.code == "user.forbidden"
    with pytest.raises(UserError, match="quality") as sup:
        line.place("sup", "lot", CAP_LOT)
    assert sup.value.code == "user.forbidden"
    details = {"scope": "lot", "reason": "x"}
    forged = line.sign("q1", "hold.place", CAP_LOT, details, key=person("mallory"))
    forged = b.SignedStatement(user="q1", keyid=signing.keyid_of(person("q1").public_key()),
                               statement=forged.statement, signature=forged.signature)
    with pytest.raises(UserError, match="forged") as bad:
        place_hold(line.ledger, line.plant, forged, scope="lot", target=CAP_LOT, reason="x")
    assert bad.value.code == "statement.invalid"
    other = line.sign("q1", "hold.place", CAP_LOT, {"scope": "lot", "reason": "other"})
    with pytest.raises(UserError) as mismatch:  # signed one reason, recorded with another
        place_hold(line.ledger, line.plant, other, scope="lot", target=CAP_LOT, reason="x")
    assert mismatch.value.code == "statement.invalid"
    with line.ledger.reader() as s:
        assert list_holds(s, all_=True) == []
    assert line.commands("command.hold") == []


def test_operational_holds_release_with_one_signature_and_lock_stations(line: Line) -> None:
    unit = line.place("sup", "unit", "SRV-H-4", "torque check")
    order = line.place("sup", "work_order", "WO-H-4", "order on hold")
    station = line.place("admin", "station", "int-01", "fixture recalibration")
    assert {unit["category"], order["category"], station["category"]} == {"operational"}
    assert line.commands("command.lock") == [("int-01", {
        "station": "int-01", "locked": True, "reason": "fixture recalibration",
        "hold_id": station["id"]})]
    done = line.release("sup", unit["id"])
    assert not done.in_force and done.hold["released_by"] == ["sup"]
    assert line.commands("command.release") == []  # the work-order hold still stops it
    line.release("q1", order["id"], "order cleared")
    assert line.commands("command.release") == [("int-01", {
        "unit": "SRV-H-4", "reason": "order cleared", "hold_id": order["id"]})]
    line.release("sup", station["id"])
    assert line.commands("command.lock")[-1] == ("int-01", {
        "station": "int-01", "locked": False, "reason": "hold released",
        "hold_id": station["id"]})
    with pytest.raises(HoldError) as unknown:
        line.place("sup", "unit", "SRV-NOPE")
    assert unknown.value.code == "hold.target_unknown"


@pytest.mark.parametrize("decision,step,station_type", [
    ("scrap", 900, "repair"), ("repair", 900, "repair"), ("use-as-is", 100, "final-qa")])
def test_a_disposition_ends_the_hold_and_routes_the_unit(line: Line, decision: str, step: int,
                                                           station_type: str) -> None:
    hold_id = hold_id_for("burnin-failure-3", "route.max_loops")
    _record(line, "hold.placed", hold_id, b.HoldPlaced(
        hold_id=hold_id, scope="unit", target="SRV-H-1", reason="failed burn-in after 2 repairs",
        category="quality", code="route.max_loops", placed_by="linetrace", units=["SRV-H-1"],
        step=90, station="int-01"), "burnin-failure-3")
    with pytest.raises(HoldError) as release:
        line.release("q1", hold_id)
    assert release.value.code == "hold.no_disposition"

    def decide(user: str) -> object:
        signed = line.sign(user, "hold.disposition", "SRV-H-1", {
            "decision": decision, "reason": "GPU swap did not help", "hold_id": hold_id})
        return dispose(line.ledger, line.plant, signed, "SRV-H-1", decision,
                       "GPU swap did not help", routes=packaged_routes())

    with pytest.raises(UserError) as sup:
        decide("sup")
    assert sup.value.code == "user.forbidden"
    outcome = decide("q2")
    assert outcome.hold["state"] == "disposed" and outcome.hold["decision"] == decision  # type: ignore[attr-defined]
    assert line.commands("command.route") == [("int-01", {
        "unit": "SRV-H-1", "step": step, "station_type": station_type, "decision": decision,
        "reason": "GPU swap did not help", "hold_id": hold_id})]
    assert erp_notices(line) == [("erp.release", "SRV-H-1")]  # the route stage sent erp.hold
    with line.ledger.reader() as s:
        assert list_units(s, state="on_hold") == []
        assert [(h.id, h.decision) for h in trace(s, "SRV-H-1").holds] == [(hold_id, decision)]
    with pytest.raises(HoldError) as again:
        decide("q1")
    assert again.value.code == "hold.no_disposition"


def test_hold_and_release_events_verify_in_an_evidence_bundle(db_url: str, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The sealed server's bundle carries the holds on a lot in it, with the user.enrolled
    leaves of those who signed them, and verifies like any other leaf."""
    from linetrace.ledger.evidence import write_evidence
    from linetrace.ledger.proof.leaf import parse_leaf
    from linetrace.ledger.proof.verify import verify_bundle
    from linetrace.schemas.envelope import decode_stored_event
    from tests.unit.test_log_line import PLANT, SIGNER, VKEY, feed_line
    from tests.unit.test_log_line import line as line_plan

    ledger = Ledger(db_url)
    try:
        fed = feed_line(ledger, line_plan())
        enrol_people(ledger, PLANT)
        lh = Line(ledger, PLANT)
        with ledger.reader() as s:
            lot = next(p.lot for p in trace(s, fed.server).parts if p.category == "gpu")
        hold = lh.place("q1", "lot", lot, "GPU lot recalled by supplier")
        assert fed.server in hold["shipped"] + hold["affected_units"]
        assert lh.release("q1", hold["id"]).in_force
        assert not lh.release("q2", hold["id"], "supplier withdrew the notice").in_force
        write_evidence(ledger, fed.server, tmp_path / "bundle", SIGNER)
        verify_bundle(tmp_path / "bundle", VKEY)
        found = [decode_stored_event(parse_leaf(p.read_bytes()).value)
                 for p in sorted((tmp_path / "bundle" / "leaves").iterdir())]
        holds = [(e.type, e.subject) for e in found if e.type.startswith("hold.")]
        assert holds == [("hold.placed", hold["id"]), ("hold.approved", hold["id"]),
                         ("hold.released", hold["id"])]
        # The signers' enrolments, and that of the admin who enrolled them (the first admin).
        assert {e.subject for e in found if e.type == "user.enrolled"} == {"admin", "q1", "q2"}
        from linetrace.ledger.audit import audit_ledger

        report = audit_ledger(ledger, SIGNER.verifier, signing.keyid_of(PLANT.public_key()))
        assert report.findings == []  # the log, with the hold leaves, replays as recorded
    finally:
        ledger.close()


def test_the_hold_commands_end_to_end(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """`linetrace hold place|release`, `holds`, `units --state on_hold`, `trace` and
    `disposition` on a SQLite ledger, each signed with LINETRACE_USER_KEY."""
    import json

    from tests.conftest import run_cli

    data = tmp_path / "data"
    data.mkdir()
    ledger = Ledger(f"sqlite:///{data / 'ledger.db'}")
    plant, _ = load_or_create_plant_key(data / "keys")
    build_line(ledger, plant)
    enrol_people(ledger, plant)
    keys = {}
    for name in PEOPLE:
        keys[name] = tmp_path / f"{name}.key"
        keys[name].write_bytes(signing.private_key_pem(person(name)))

    def cli(user: str | None, *args: str):  # type: ignore[no-untyped-def]
        env = {"LINETRACE_USER_KEY": str(keys[user])} if user else {"LINETRACE_USER_KEY": ""}
        return run_cli(*args, data_dir=data, env=env)

    r = cli("viewer", "hold", "place", "--lot", CAP_LOT, "--reason", "ESR drift")
    assert r.returncode == 1 and "[user.forbidden]" in r.stderr, r.stderr
    r = cli(None, "hold", "place", "--lot", CAP_LOT, "--reason", "ESR drift")
    assert r.returncode == 2 and "LINETRACE_USER_KEY" in r.stderr, r.stderr
    r = cli("q1", "hold", "place", "--lot", CAP_LOT, "--reason", "ESR drift", "--json")
    assert r.returncode == 0, r.stderr
    placed = json.loads(r.stdout)
    assert list(placed)[:9] == ["id", "scope", "target", "reason", "placed_by", "placed",
                                "state", "approvals", "affected_units"]
    assert placed["shipped"] == ["SRV-H-2"] and placed["new"] is True
    r = cli(None, "units", "--state", "on_hold", "--json")
    assert [(u["serial"], u["state"]) for u in json.loads(r.stdout)] == [
        ("PCBA-H-3", "on_hold"), ("SRV-H-1", "on_hold")]
    r = cli(None, "holds", "--json")
    assert [h["id"] for h in json.loads(r.stdout)] == [placed["id"]]
    r = cli("q1", "hold", "release", placed["id"], "--reason", "retested")
    assert r.returncode == 1 and "second quality user must sign" in r.stdout + r.stderr
    r = cli("q2", "hold", "release", placed["id"], "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["released_by"] == ["q1", "q2"]
    r = cli(None, "holds", "--json")
    assert json.loads(r.stdout) == []
    r = cli(None, "holds", "--all")
    assert r.returncode == 0 and placed["id"] in r.stdout and "released" in r.stdout
    r = cli(None, "trace", "SRV-H-1", "--json")
    got = json.loads(r.stdout)
    assert got["state"] == "in_progress" and got["violations"] == []
    assert [(h["id"], h["state"]) for h in got["holds"]] == [(placed["id"], "released")]

    hold_id = hold_id_for("kitting-failure", "route.unable_to_repair")
    _record(Line(ledger, plant), "hold.placed", hold_id, b.HoldPlaced(
        hold_id=hold_id, scope="unit", target="SRV-H-4", reason="repair could not fix it",
        category="quality", code="route.unable_to_repair", placed_by="linetrace",
        units=["SRV-H-4"], step=60), "kitting-failure")
    ledger.close()
    r = cli("q1", "disposition", "SRV-H-4", "--decision", "sideways", "--reason", "x")
    assert r.returncode == 2
    r = cli("q1", "disposition", "SRV-H-4", "--decision", "use-as-is", "--reason",
            "cosmetic only", "--json")
    assert r.returncode == 0, r.stderr
    done = json.loads(r.stdout)
    assert (done["id"], done["state"], done["decision"]) == (hold_id, "disposed", "use-as-is")
    r = cli("q1", "disposition", "SRV-H-4", "--decision", "scrap", "--reason", "x")
    assert r.returncode == 1 and "[hold.no_disposition]" in r.stderr


def test_two_approvals_recorded_at_once_are_completed_by_either_signing_again(line: Line
                                                                              ) -> None:
    """Two quality users who signed at the same moment each left an approval; the next
    signature of either releases the hold with the other's approval."""
    hold_id = line.place("q1", "lot", CAP_LOT)["id"]
    assert line.release("q1", hold_id).in_force
    q2 = line.sign("q2", "hold.release", hold_id, {})
    _record(line, "hold.approved", hold_id, b.HoldApproved(hold_id=hold_id, statement=q2),
            str(uuid.uuid4()))
    done = line.release("q1", hold_id)
    assert not done.in_force and done.hold["released_by"] == ["q2", "q1"]
