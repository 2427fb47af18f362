"""A unit keeps the route it started on, through the writer on real SQLite and PostgreSQL.

The route in force when a unit's product becomes known (its first `work.started`) is recorded
on the unit: product, revision and SHA-256. A route file changed later (a plant's
LINETRACE_ROUTES) applies to units started later, never to units already started.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import trace
from linetrace.ledger.keys import load_or_create_plant_key
from linetrace.ledger.models import Unit
from linetrace.ledger.records import Candidate, SourceRecord
from linetrace.ledger.system_events import SystemContext
from linetrace.ledger.views import UnitRoute, to_data
from linetrace.ledger.writer import write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas import signing
from linetrace.schemas.envelope import decode_event, encode_event
from linetrace.schemas.routes import PRODUCTS_DIR, RouteBook, load_route_book, packaged_routes

pytestmark = pytest.mark.integration

KEY = signing.generate_key()


class Station:
    def __init__(self, sid: str) -> None:
        self.sid, self.seq = sid, 0

    def event(self, etype: str, subject: str, body: b.Body, t: str) -> Candidate:
        self.seq += 1
        v = encode_event(event_type=etype, source=self.sid, subject=subject, body=body, time=t,
                         stationseq=self.seq, event_id=str(uuid.uuid4()))
        kid, sig = signing.read_signature(signing.sign_value(v, KEY))
        return Candidate(SourceRecord("line.events", 0, self.seq, subject.encode(), v),
                         decode_event(v), kid, sig)

    def started(self, serial: str, step: int, product: str, kind: str, t: str) -> Candidate:
        return self.event("work.started", serial, b.WorkStarted(
            transaction_id=str(uuid.uuid4()), step=step, operation=f"op-{step}",
            work_order="WO-1", product=product, kind=kind), t)  # type: ignore[arg-type]


def revised_a(folder: Path) -> RouteBook:
    """The plant changes route A: a new revision with a longer kitting step."""
    folder.mkdir(exist_ok=True)
    text = (PRODUCTS_DIR / "A.json").read_text(encoding="utf-8")
    (folder / "A.json").write_text(text.replace('"revision": "R1"', '"revision": "R2-plant"')
                                   .replace('"max_cycle_s": 1800', '"max_cycle_s": 2400', 1))
    return load_route_book(folder)


def recorded(ledger: Ledger, serial: str) -> tuple[str | None, str | None, str | None]:
    with ledger.reader() as s:
        u = s.get(Unit, serial)
        assert u is not None
        return u.route_product, u.route_revision, u.route_sha256


def test_a_unit_keeps_the_route_it_started_on(ledger: Ledger, tmp_path: Path) -> None:
    plant, _ = load_or_create_plant_key(tmp_path / "keys")
    before = SystemContext(plant_key=plant)  # the packaged routes
    after = SystemContext(plant_key=plant, routes=revised_a(tmp_path / "routes"))
    a1, pcba = packaged_routes().route("A"), packaged_routes().route("A-PCBA")
    a2 = after.routes.route("A")
    assert a2.sha256 != a1.sha256
    kit, smt = Station("kitting-01"), Station("smt-01")

    # SRV-1 arrives before its product is known; its first work.started decides its route
    write_batch(ledger, [kit.event("unit.arrived", "SRV-1", b.UnitArrived(step=50),
                                   "2026-01-05T06:00:00Z")], ctx=before)
    assert recorded(ledger, "SRV-1") == (None, None, None)
    write_batch(ledger, [kit.started("SRV-1", 50, "A", "server", "2026-01-05T06:00:05Z"),
                         smt.started("PCBA-1", 20, "A", "assembly", "2026-01-05T06:00:06Z")],
                ctx=before)
    assert recorded(ledger, "SRV-1") == ("A", "R1", a1.sha256)
    assert recorded(ledger, "PCBA-1") == ("A-PCBA", pcba.revision, pcba.sha256)

    # the plant revises route A: SRV-1 keeps R1 at its next steps, SRV-2 starts on R2-plant
    gpu = Station("gpu-install-01")
    write_batch(ledger, [gpu.started("SRV-1", 60, "A", "server", "2026-01-05T07:00:00Z"),
                         kit.started("SRV-2", 50, "A", "server", "2026-01-05T07:00:01Z")],
                ctx=after)
    assert recorded(ledger, "SRV-1") == ("A", "R1", a1.sha256)
    assert recorded(ledger, "SRV-2") == ("A", "R2-plant", a2.sha256)

    # a product with no route in force records none (and gets none later either)
    write_batch(ledger, [kit.started("SRV-X", 50, "HGX-B300", "server",
                                     "2026-01-05T07:00:02Z")], ctx=after)
    write_batch(ledger, [gpu.started("SRV-X", 60, "A", "server", "2026-01-05T07:10:00Z")],
                ctx=after)
    assert recorded(ledger, "SRV-X") == (None, None, None)

    # trace shows it: an added field at the end of the --json contract
    with ledger.reader() as s:
        t1, tx = trace(s, "SRV-1"), trace(s, "SRV-X")
    assert t1.route == UnitRoute(product="A", revision="R1", sha256=a1.sha256)
    data = to_data(t1)
    fields = list(data)  # added after `history`, before later additions (holds, violations)
    assert fields[fields.index("history") + 1] == "route" and data["route"] == {
        "product": "A", "revision": "R1", "sha256": a1.sha256}
    assert tx.route is None and to_data(tx)["route"] is None


def test_without_a_context_the_writer_records_the_packaged_route(ledger: Ledger) -> None:
    write_batch(ledger, [Station("kitting-01").started("SRV-9", 50, "B", "server",
                                                        "2026-01-05T06:00:00Z")])
    b_route = packaged_routes().route("B")
    assert recorded(ledger, "SRV-9") == ("B", b_route.revision, b_route.sha256)
