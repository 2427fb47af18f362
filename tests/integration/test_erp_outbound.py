"""ERP fed effectively once through the outbox (`erp.outbound`, docs/erp.md).

First the ledger side, on SQLite and PostgreSQL with no broker: a simulated line written
through the worker's stage pipeline yields one confirmation per unit and reporting step, one
goods receipt per packed unit stating the ledger's as-built parts, scrap and hold/release
notices; and a batch redone after a crash, re-decided later or replayed, or the same line cut
into other batches on another database, gives the same messages byte for byte, each once.

Then the acceptance test: the real broker, a real simulator and a real worker SIGKILLed and
restarted five times during the run; a plain aiokafka consumer that de-duplicates on
`linetrace-message-id` receives exactly one goods receipt per packed unit, with its serials.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from linetrace.ledger import erp, outbox
from linetrace.ledger.db import Ledger
from linetrace.ledger.genealogy import trace
from linetrace.ledger.keys import enroll_station
from linetrace.ledger.models import EventRow, Unit
from linetrace.ledger.outbox import MESSAGE_ID_HEADER, OutboxRow
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SystemContext, signed_system_event
from linetrace.ledger.writer import record_system_event, write_batch
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import decode_stored_event
from linetrace.schemas.erp import decode_message
from linetrace.schemas.erp.schema_files import load_erp_schema
from linetrace.schemas.routes import packaged_routes
from linetrace.schemas.topics import ERP_OUTBOUND
from linetrace.stations.simulator import LineConfig, LinePlan, generate_line, station_roster
from linetrace.streams.processor import default_stages
from linetrace.streams.stages import Pipeline

from ..conftest import Proc, linetrace_cmd, need, wait_for
from ..unit.test_log_line import ENROLLED_AT, PLANT, line, station_candidates, station_key
from ..unit.test_schemas import FORMATS, Validator

pytestmark = pytest.mark.integration

Row = tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]]]


def feed(ledger: Ledger, plan: LinePlan, batch: int,
         hook: Callable[[int], Callable[..., Any] | None] | None = None) -> list[Candidate]:
    """Enrol the plan's stations and write its events in batches through the worker's
    stages (`hook(k)` may wrap the stages of batch k)."""
    for sid, stype in station_roster(plan.config.product):
        enroll_station(ledger, PLANT, sid, stype, station_key(sid).public_key(), now=ENROLLED_AT)
    ctx = SystemContext(plant_key=PLANT)
    pipeline = Pipeline(default_stages(ctx))
    cands = station_candidates(plan)
    for k, i in enumerate(range(0, len(cands), batch)):
        wrapped = hook(k) if hook is not None else None
        out = write_batch(ledger, cands[i:i + batch], ctx=ctx,
                          stages=wrapped(pipeline) if wrapped is not None else pipeline)
        assert not out.rejections, out.rejections[:1]
    assert not pipeline.stats.failures, pipeline.stats
    return cands


def erp_rows(session: Session) -> list[Row]:
    return [(r.message_id, r.key, r.value, outbox._decode_headers(r.headers))
            for r in session.scalars(select(OutboxRow).where(OutboxRow.kind == "erp")
                                     .order_by(OutboxRow.seq))]


def messages(ledger: Ledger) -> list[dict[str, Any]]:
    with ledger.reader() as s:
        return [json.loads(v or b"") for _, _, v, _ in erp_rows(s)]


def of_type(msgs: Sequence[dict[str, Any]], t: str) -> list[dict[str, Any]]:
    return [m for m in msgs if m["type"] == t]


def stored_events(session: Session) -> list[Any]:
    return [decode_stored_event(v) for v in session.scalars(
        select(EventRow.value).where(EventRow.topic.in_(["line.events", "line.holds"]))
        .order_by(EventRow.seq))]


@pytest.fixture
def fed(ledger: Ledger) -> Ledger:
    feed(ledger, line(2), 40)
    return ledger


# --- the ledger side ---------------------------------------------------------------------------


def test_every_message_is_valid_for_its_published_schema_and_names_unit_and_work_order(
        fed: Ledger) -> None:
    with fed.reader() as s:
        rows = erp_rows(s)
    assert rows
    for message_id, key, value, headers in rows:
        assert value is not None
        m = json.loads(value)
        assert not list(Validator(load_erp_schema(m["type"]), format_checker=FORMATS)
                        .iter_errors(m))
        decode_message(value)
        assert m["message_id"] == message_id and key == m["work_order"].encode()
        assert dict(headers)["linetrace-type"] == m["type"].encode()
        assert m["serial"] and m["cause"] and m["posting_date"] == m["time"][:10]


def test_each_unit_is_confirmed_once_per_reporting_step_and_finally_at_the_last(
        fed: Ledger) -> None:
    routes = packaged_routes()
    yields = of_type(messages(fed), "erp.yield")
    with fed.reader() as s:
        units = {u.serial: u for u in s.scalars(select(Unit))}
    assert {y["serial"] for y in yields} == set(units)
    for serial, unit in units.items():
        route = routes.route(unit.route_product or "")
        mine = [y for y in yields if y["serial"] == serial]
        steps = [y["step"] for y in mine]
        assert steps == erp.reporting_steps(route)  # once each, in order; no ship, no repair
        assert [y["final_confirmation"] for y in mine] == [False] * (len(steps) - 1) + [True]
        assert all(y["work_order"] == unit.work_order and y["yield_qty"] == 1
                   and y["scrap_qty"] == 0 and y["unit_of_measure"] == "EA" for y in mine)
    assert erp.reporting_steps(routes.route("A"))[-1] == 110  # pack; 120 (ship) is a delivery
    assert erp.reporting_steps(routes.route("A-PCBA"))[-1] == 40


def test_goods_receipt_of_each_packed_unit_states_the_parts_the_ledger_traces(
        fed: Ledger) -> None:
    msgs = messages(fed)
    receipts = of_type(msgs, "erp.goods_receipt")
    with fed.reader() as s:
        packed = set(s.scalars(select(Unit.serial).where(Unit.state.in_(["packed", "shipped"]))))
        assert packed and sorted(r["serial"] for r in receipts) == sorted(packed)
        for r in receipts:
            t = trace(s, r["serial"])
            assert r["material"] == t.product and r["work_order"] == t.work_order
            assert r["sales_order"] == t.order and r["movement_type"] == "101"
            assert Counter((c["serial"], c["lot"], c["mpn"]) for c in r["components"]) == \
                Counter((p.serial, p.lot, p.mpn) for p in t.parts)
            # what the yields backflushed, less what was removed since, is what was received
            pcba = {c["serial"] for c in r["components"] if c["category"] == "mainboard"}
            consumed: Counter[tuple[Any, ...]] = Counter()
            for y in of_type(msgs, "erp.yield"):
                if y["serial"] in {r["serial"], *pcba}:
                    consumed.update((c["serial"], c["lot"]) for c in y["components"])
                    consumed.subtract((c["serial"], c["lot"]) for c in y["removed"])
            assert +consumed == Counter((c["serial"], c["lot"]) for c in r["components"])


def test_a_repair_replaces_a_part_reported_at_the_next_confirmation(fed: Ledger) -> None:
    msgs = of_type(messages(fed), "erp.yield")
    with_removed = [y for y in msgs if y["removed"]]
    assert with_removed, "line(2) repairs a unit at burn-in (a GPU replaced)"
    for y in with_removed:
        assert len(y["components"]) == len(y["removed"])
        assert {c["category"] for c in y["components"]} == {c["category"] for c in y["removed"]}
        assert all(c["reason"] for c in y["removed"])


def test_re_deciding_every_stored_event_later_gives_the_same_bytes_and_no_new_row(
        fed: Ledger) -> None:
    with fed.transaction() as s:
        before = erp_rows(s)
        again = erp.messages_for(s, stored_events(s))
        assert [(m.message_id, m.key, m.value) for m in again] == [
            (i, k, v) for i, k, v, _ in before]
        outbox.enqueue(s, again)
        assert erp_rows(s) == before


def test_a_batch_redone_after_a_crash_writes_the_same_bytes_once(ledger: Ledger) -> None:
    """The first batch that packs a unit is written, its stages decide (a seal, a goods
    receipt), then the worker dies before the commit; the batch is written again: the lost
    attempt's messages and the redo's are identical, each in one row."""
    lost: list[Row] = []

    def crash_once(k: int) -> Callable[..., Any] | None:
        def wrap(pipeline: Pipeline) -> Callable[..., Any]:
            def hook(session: Session, batch: Sequence[Candidate]) -> list[Candidate]:
                decided = pipeline(session, batch)
                if not lost and any(c.event.type == "unit.sealed" for c in batch):
                    lost.extend(erp_rows(session))
                    raise RuntimeError("killed before the commit")
                return decided
            return hook
        return wrap

    with pytest.raises(RuntimeError, match="killed before the commit"):
        feed(ledger, line(2), 40, crash_once)
    assert any(json.loads(v or b"")["type"] == "erp.goods_receipt" for _, _, v, _ in lost)
    with ledger.reader() as s:
        committed = erp_rows(s)
    assert len(committed) < len(lost)  # the lost attempt's rows rolled back
    feed(ledger, line(2), 40)  # the restarted worker: replays every batch
    with ledger.reader() as s:
        redone = erp_rows(s)
        assert s.scalar(select(func.count()).select_from(OutboxRow)
                        .where(OutboxRow.kind == "erp")) == len(redone)
    assert redone[:len(lost)] == lost
    assert len({r[0] for r in redone}) == len(redone)


def test_another_batching_on_another_database_gives_byte_identical_messages(
        fed: Ledger, tmp_path: Path) -> None:
    other = Ledger(f"sqlite:///{tmp_path / 'other.db'}")
    try:
        feed(other, line(2), 7)
        with fed.reader() as s, other.reader() as o:
            assert sorted(erp_rows(o)) == sorted(erp_rows(s))
    finally:
        other.close()


def scrapping_line() -> LinePlan:
    """A small line in which the simulator scraps a server (it decides on its own)."""
    for seed in range(1, 200):
        plan = generate_line(LineConfig(units=3, seed=seed, burnin_seconds=5))
        if any(e.event_type == "unit.scrapped" for e in plan.stream()):
            return plan
    raise AssertionError("no seed below 200 scraps a unit")


def test_a_scrapped_unit_is_reported_with_its_reason_and_step(ledger: Ledger) -> None:
    plan = scrapping_line()
    feed(ledger, plan, 25)
    scraps = of_type(messages(ledger), "erp.scrap")
    with ledger.reader() as s:
        scrapped = {e.subject: e for e in stored_events(s) if e.type == "unit.scrapped"}
        units = {u.serial: u for u in s.scalars(select(Unit))}
    assert sorted(m["serial"] for m in scraps) == sorted(scrapped)
    routes = packaged_routes()
    for m in scraps:
        e = scrapped[m["serial"]]
        assert isinstance(e.body, b.UnitScrapped)
        assert m["reason"] == e.body.reason and m["cause"] == e.id and m["scrap_qty"] == 1
        assert m["station"] == e.source and m["work_order"] == units[m["serial"]].work_order
        route = routes.route(units[m["serial"]].route_product or "")
        assert m["step"] in erp.reporting_steps(route)
        assert m["work_center"] == route.step(m["step"]).station_type
        assert m["scrapped_at_step"] is not None


def _record(session: Session, event_type: str, subject: str, body: b.Body, cause: str,
            time: str) -> Any:
    c = signed_system_event(event_type, subject, body, time=time, cause_id=cause,
                            plant_key=PLANT)
    assert record_system_event(session, c)
    return c.event


def test_a_unit_joining_a_lot_hold_later_gets_one_hold_notice(ledger: Ledger,
                                                               tmp_path: Path) -> None:
    """An install from a held lot joins the unit to the lot's hold (the route stage): ERP
    hears of it once, though the unit's next station is told of the hold again."""
    from .route_line import Batches, serial_on

    line = Batches(ledger, tmp_path / "keys")
    line.record("hold.placed", "HOLD-LOT-ERP", b.HoldPlaced(
        hold_id="HOLD-LOT-ERP", scope="lot", target="LOT-GPU-BAD", reason="supplier recall",
        category="quality", code="hold.manual", placed_by="qa1"),
        cause="44444444-4444-4444-8444-444444444444")
    srv = serial_on("SRV-JOIN")
    line.flow.visit(srv, 50)
    line.flow.visit(srv, 60, installs=[b.InstalledItem(
        lot="LOT-GPU-BAD", mpn="699-2G520", category="gpu", serial="GPU-J1", slot=0)])
    assert [c.event.type for c in line.write()] == ["command.hold"]
    line.flow.arrive(srv, 70)  # its next station is told again
    assert [c.event.type for c in line.write()] == ["command.hold"]
    holds = [m for m in of_type(messages(ledger), "erp.hold") if m["serial"] == srv]
    assert len(holds) == 1, holds
    (notice,) = holds
    assert notice["hold_id"] == "HOLD-LOT-ERP" and notice["scope"] == "lot"
    assert notice["cause_type"] == "command.hold" and notice["work_order"]


def test_hold_and_release_notices_name_each_affected_unit_once(fed: Ledger) -> None:
    with fed.reader() as s:
        server, pcba = sorted(s.scalars(select(Unit.serial).where(Unit.kind == "server")))[0], \
            sorted(s.scalars(select(Unit.serial).where(Unit.kind == "assembly")))[0]
        wo = {u.serial: u.work_order for u in s.scalars(select(Unit))}
    placed = b.HoldPlaced(hold_id="HOLD-ERP-TEST-1", scope="lot", target="LOT-X", reason="test",
                          category="quality", code="hold.manual", placed_by="linetrace",
                          units=[server, pcba, server])
    with fed.transaction() as s:
        e = _record(s, "hold.placed", "HOLD-ERP-TEST-1", placed,
                    "0c4b3e1a-1111-4a2b-8c3d-000000000001", "2026-03-01T08:00:00.000Z")
        msgs = erp.messages_for(s, [e])
        outbox.enqueue(s, msgs)
        outbox.enqueue(s, erp.messages_for(s, [e]))  # the same notices again: nothing new
    holds = of_type(messages(fed), "erp.hold")
    assert [(m["serial"], m["work_order"]) for m in holds] == [(server, wo[server]),
                                                               (pcba, wo[pcba])]
    assert all(m["hold_id"] == "HOLD-ERP-TEST-1" and m["scope"] == "lot"
               and m["category"] == "quality" and m["cause_type"] == "hold.placed"
               for m in holds)
    released = b.HoldReleased(hold_id="HOLD-ERP-TEST-1", reason="cleared",
                              released_by=["qa.lee", "qa.ng"], statements=[])
    disposed = b.HoldDisposition(hold_id="HOLD-ERP-TEST-1", unit=server, decision="use-as-is",
                                 reason="within limits", decided_by="qa.lee",
                                 statement=b.SignedStatement(user="qa.lee",
                                                             keyid="0123456789abcdef",
                                                             statement="", signature=""))
    with fed.transaction() as s:
        r = _record(s, "hold.released", "HOLD-ERP-TEST-1", released,
                    "0c4b3e1a-1111-4a2b-8c3d-000000000002", "2026-03-01T09:00:00.000Z")
        d = _record(s, "hold.disposition", "HOLD-ERP-TEST-1", disposed,
                    "0c4b3e1a-1111-4a2b-8c3d-000000000003", "2026-03-01T09:30:00.000Z")
        outbox.enqueue(s, erp.messages_for(s, [r, d]))
    releases = of_type(messages(fed), "erp.release")
    assert [(m["serial"], m["decision"], m["released_by"]) for m in releases] == [
        (pcba, "released", ["qa.lee", "qa.ng"]), (server, "released", ["qa.lee", "qa.ng"]),
        (server, "use-as-is", ["qa.lee"])]
    assert len({m["message_id"] for m in releases}) == 3


# --- acceptance: a real broker, simulator and worker, killed five times ------------------------


def _bootstrap(line_dir: Path) -> str:
    return (line_dir / "broker.url").read_text().strip().removeprefix("kafka://")


def _count(ledger: Ledger, query: Any) -> int:
    with ledger.reader() as s:
        return int(s.scalar(query) or 0)


async def _consume(bootstrap: str, until: Callable[[list[Any]], bool], timeout: float
                   ) -> list[Any]:
    """Everything on erp.outbound from the beginning, until `until(records)` or timeout."""
    c = AIOKafkaConsumer(ERP_OUTBOUND, bootstrap_servers=bootstrap, group_id=None,
                         auto_offset_reset="earliest", enable_auto_commit=False)
    await c.start()
    records: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and not until(records):
            for batch in (await c.getmany(timeout_ms=500)).values():
                records.extend(batch)
        return records
    finally:
        await c.stop()


@pytest.mark.slow
def test_an_erp_consumer_gets_one_goods_receipt_per_packed_unit_while_the_worker_is_killed(
        broker: str, line_dir: Path) -> None:
    from linetrace.cli.supervisor import waiting_for

    ledger = Ledger(f"sqlite:///{line_dir / 'ledger.db'}")
    env = {"LINETRACE_BATCH_WINDOW": "0.02"}
    n = 0

    def start() -> Proc:
        nonlocal n
        n += 1
        return Proc(linetrace_cmd("worker", "--data-dir", str(line_dir)),
                    line_dir / f"worker-{n}.out", env=env)

    events = select(func.count()).select_from(EventRow)
    worker = start()
    sim = Proc(linetrace_cmd("simulate", "--units", "5", "--seed", "11", "--burnin-seconds", "5",
                             "--rate", "40", "--data-dir", str(line_dir)), line_dir / "sim.out")
    logs = [worker]
    kills = 0
    try:
        while kills < 5:  # kill once the restarted worker has stored more events
            base = _count(ledger, events)

            def worked(base: int = base) -> bool:
                """The restarted worker stored more, or, the line over, has nothing left (the
                simulator may finish before five kills: an idle worker is killed then)."""
                count = _count(ledger, events)
                if count >= base + 40:
                    return True
                return sim.proc.poll() is not None and (
                    count > base or not waiting_for(ledger, broker))

            wait_for(worked, timeout=180, what=f"the worker to store events before kill {kills + 1}")
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()
            kills += 1
            worker = start()
            logs.append(worker)
        assert sim.proc.wait(300) == 0, sim.tail()
        try:
            wait_for(lambda: not waiting_for(ledger, broker), timeout=180, interval=0.5,
                     what="the worker to drain")
        except AssertionError:
            raise AssertionError(f"{waiting_for(ledger, broker)}\n{worker.tail()}") from None
        with ledger.reader() as s:
            packed = sorted(s.scalars(select(Unit.serial).where(
                Unit.kind == "server", Unit.state.in_(["packed", "shipped"]))))
            traces = {serial: trace(s, serial) for serial in packed}
            rows = erp_rows(s)
        need(bool(packed), "packed units")
        assert len(packed) >= 4, packed

        def receipts_in(records: list[Any]) -> set[str]:
            return {dict(r.headers)[MESSAGE_ID_HEADER].decode() for r in records
                    if dict(r.headers).get("linetrace-type") == b"erp.goods_receipt"}

        records = asyncio.run(_consume(broker, lambda rs: len(receipts_in(rs)) >= len(packed)
                                       and len(rs) >= len(rows), timeout=120))
    finally:
        worker.stop()
        sim.stop()
        ledger.close()
    assert kills == 5 and all(w.proc.returncode == -9 for w in logs[:-1])
    seen: dict[str, bytes] = {}
    for r in records:  # the consumer: de-duplicate on the header
        mid = dict(r.headers)[MESSAGE_ID_HEADER].decode()
        assert seen.setdefault(mid, r.value) == r.value, "a re-send must carry the same bytes"
        assert r.key == json.loads(r.value)["work_order"].encode()
    assert set(seen) == {row[0] for row in rows}  # every ERP message of the ledger, once
    got = [json.loads(v) for v in seen.values()]
    receipts = of_type(got, "erp.goods_receipt")
    assert Counter(m["serial"] for m in receipts) == Counter(packed)  # exactly one each
    for m in receipts:
        t = traces[m["serial"]]
        assert m["work_order"] == t.work_order and m["material"] == t.product
        assert Counter((c["serial"], c["lot"]) for c in m["components"]) == \
            Counter((p.serial, p.lot) for p in t.parts)
        assert sum(c["category"] == "gpu" for c in m["components"]) == 8
    yields = of_type(got, "erp.yield")
    finals = Counter(m["serial"] for m in yields if m["final_confirmation"])
    assert all(finals[s] == 1 for s in packed)
