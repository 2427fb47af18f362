"""The lot-clustering stage on a real ledger (SQLite and PostgreSQL): burn-in verdicts whose
failures cluster on one GPU lot raise the lot alert and place a plant-signed lot hold that
stops every unit containing the lot; a near miss does neither; a redo adds nothing."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from linetrace.ledger.alerts.models import Alert
from linetrace.ledger.db import Ledger
from linetrace.ledger.holds import stopped_units
from linetrace.ledger.models import EventRow, Hold
from linetrace.ledger.system_events import signed_system_event
from linetrace.ledger.writer import run_stages, store_events
from linetrace.schemas import bodies as b
from linetrace.schemas.envelope import SYSTEM_SOURCE
from linetrace.streams.detect.lots_stage import LotClusterStage
from linetrace.streams.processor import default_stages
from linetrace.streams.stages import Pipeline

from .route_line import Batches, serial_on

GPU_MPN = "699-21010-0210-000"


def gpus(lot: str, n: int = 16) -> list[str]:
    return [f"{lot}-G{i:02d}" for i in range(n)]


def build(batches: Batches, server: str, lot: str, serials: list[str]) -> None:
    """A server through kitting and the GPU install (8 GPUs of `lot` on its baseboard)."""
    f = batches.flow
    f.visit(server, 50, test=None)
    f.visit(server, 60, test=None, installs=[
        b.InstalledItem(lot="LOT-BB-1", mpn="935-24287-0000-000", category="baseboard",
                        serial=f"BB-{server}"),
        *(b.InstalledItem(lot=lot, mpn=GPU_MPN, category="gpu", serial=s, slot=i,
                          parent=f"BB-{server}") for i, s in enumerate(serials))])


def verdict(batches: Batches, pipeline: Pipeline, server: str, serials: list[str],
            failed: set[int]) -> str:
    """Record a burn-in verdict of `server` (GPU i failed for i in `failed`) and run the
    stages over it, as the worker does for a system event a stage decides; its id."""
    run = str(uuid.uuid4())
    t = batches.flow.tick(3600)
    body = b.BurninVerdict(
        run_id=run, station="burnin-01", sku="B200",
        result="Failed" if failed else "Passed",
        gpus=[b.GpuFigures(gpu_index=i, gpu_serial=s, samples=30,
                           result="Failed" if i in failed else "Passed")
              for i, s in enumerate(serials)],
        started=t.isoformat(), ended=t.isoformat(), run_end=str(uuid.uuid4()),
        telemetry_sha256="0" * 64, telemetry_events=30, limits_sha256="1" * 64,
        limits_version="1")
    c = signed_system_event("burnin.verdict", server, body, time=t, cause_id=run,
                            plant_key=batches.plant)
    with batches.ledger.transaction() as s:
        out = store_events(s, [c], batches.processor.ctx)
        run_stages(s, out, pipeline, batches.processor.ctx)
    return c.event.id


def setup(ledger: Ledger, tmp_path: Path) -> tuple[Batches, Pipeline]:
    batches = Batches(ledger, tmp_path / "keys")
    ctx = batches.processor.ctx
    assert ctx is not None
    stages = [s for s in default_stages(ctx) if not isinstance(s, LotClusterStage)]
    return batches, Pipeline([*stages, LotClusterStage.of(ctx)])


def test_half_a_lots_gpus_failing_holds_the_lot_and_every_unit_containing_it(
        ledger: Ledger, tmp_path: Path) -> None:
    batches, pipeline = setup(ledger, tmp_path)
    lot = "LOT-GPU-BAD"
    serials = gpus(lot)
    batches.receive(lot, GPU_MPN, serials)
    first, second = serial_on("SRV-X"), serial_on("SRV-Y")
    build(batches, first, lot, serials[:8])
    build(batches, second, lot, serials[8:])
    batches.write()

    vid = verdict(batches, pipeline, first, serials[:8], failed={0, 2, 5, 7})
    with ledger.reader() as s:
        (hold,) = s.scalars(select(Hold).where(Hold.scope == "lot")).all()
        assert (hold.target, hold.code, hold.placed_by, hold.category, hold.state) == (
            lot, "lot.failure_cluster", SYSTEM_SOURCE, "quality", "active")
        stopped = stopped_units(s)
        assert {first, second} <= set(stopped)
        alert = s.get(Alert, _alert(s, lot))
        assert alert is not None and alert.active and alert.priority == "high"
        assert alert.details["failed"] == 4 and alert.details["hold_id"] == hold.hold_id
        assert alert.cause == vid
        commands = s.scalars(select(EventRow.subject).where(
            EventRow.type == "command.hold", EventRow.source == SYSTEM_SOURCE)).all()
        assert len(commands) == 2  # one per held unit, at the station it was last seen

    # the second server's verdict (more failures) changes nothing: the lot is held already
    verdict(batches, pipeline, second, serials[8:], failed={1, 3})
    with ledger.reader() as s:
        assert len(s.scalars(select(Hold).where(Hold.scope == "lot")).all()) == 1
        alert = s.get(Alert, _alert(s, lot))
        assert alert is not None and alert.occurrences == 1


def test_a_near_miss_lot_is_neither_alerted_nor_held(ledger: Ledger, tmp_path: Path) -> None:
    batches, pipeline = setup(ledger, tmp_path)
    lot = "LOT-GPU-OK"
    serials = gpus(lot)
    batches.receive(lot, GPU_MPN, serials)
    first, second = serial_on("SRV-P"), serial_on("SRV-Q")
    build(batches, first, lot, serials[:8])
    build(batches, second, lot, serials[8:])
    batches.write()
    verdict(batches, pipeline, first, serials[:8], failed={3})  # one natural failure
    verdict(batches, pipeline, second, serials[8:], failed={6})  # and another
    with ledger.reader() as s:
        assert s.scalars(select(Hold).where(Hold.scope == "lot")).all() == []
        assert s.scalars(select(Alert).where(Alert.condition == "lot.failure_cluster")
                         ).all() == []


def _alert(s: object, lot: str) -> str:
    from linetrace.ledger.alerts.conditions import alert_id

    return alert_id("lot.failure_cluster", lot)
