"""Writing the same records as different workers would: other partition orders, other batch
sizes, restarts. Shared by the tests of issue 8 item 9 (state and system events must be a
function of the events, never of the order or the batches in which they were consumed).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import select

from linetrace.ledger.db import Ledger
from linetrace.ledger.models import EventRow, Install, Operation, Unit
from linetrace.ledger.records import Candidate
from linetrace.ledger.system_events import SealedHbom
from linetrace.schemas.envelope import SYSTEM_SOURCE
from linetrace.schemas.topics import STATIONS
from tests.conftest import PG_URL, pg_admin

LedgerMaker = Callable[[], Ledger]


@contextmanager
def ledger_maker(kind: str, tmp_path: Path) -> Iterator[LedgerMaker]:
    """Fresh, empty ledgers on SQLite files or PostgreSQL schemas, closed (and dropped) after."""
    made: list[Ledger] = []
    schemas: list[str] = []
    conn: psycopg.Connection[tuple[object, ...]] | None = None
    if kind == "postgresql":
        conn = pg_admin()

    def make() -> Ledger:
        if conn is None:
            lg = Ledger(f"sqlite:///{tmp_path / f'ledger-{len(made)}.db'}")
        else:
            schema = f"t_{uuid.uuid4().hex[:12]}"
            conn.execute(f"CREATE SCHEMA {schema}")
            schemas.append(schema)
            sep = "&" if "?" in PG_URL else "?"
            lg = Ledger(f"{PG_URL}{sep}options=-csearch_path%3D{schema}")
        made.append(lg)
        return lg

    try:
        yield make
    finally:
        for lg in made:
            lg.close()
        if conn is not None:
            for schema in schemas:
                conn.execute(f"DROP SCHEMA {schema} CASCADE")
            conn.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def ledgers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[LedgerMaker]:
    with ledger_maker(request.param, tmp_path) as make:
        yield make


def partitions_in_turn(cands: Sequence[Candidate], *, descending: bool) -> list[Candidate]:
    """The records as a worker reading the partitions one after another would see them (each
    partition's records in their order); line.stations first, as keys precede events."""
    def key(c: Candidate) -> tuple[int, str, int]:
        r = c.record
        first = r.topic == STATIONS
        rank = (0 if first else 1) if not descending else (1 if first else 0)
        return rank, r.topic, r.partition or 0

    return sorted(cands, key=key, reverse=descending)  # sorted is stable, reversed too


def genealogy(ledger: Ledger) -> dict[str, list[tuple[object, ...]]]:
    """What `units`, `trace` and `recall` read, without surrogate ids or wall-clock columns."""
    with ledger.reader() as s:
        units = s.execute(select(Unit.serial, Unit.product, Unit.kind, Unit.state, Unit.step,
                                 Unit.installed_in, Unit.updated, Unit.created, Unit.order,
                                 Unit.carton, Unit.work_order).order_by(Unit.serial)).all()
        installs = s.execute(select(Install.unit, Install.serial, Install.lot, Install.ref,
                                    Install.slot, Install.installed_event, Install.removed_event)
                             ).all()
        ops = s.execute(select(Operation.serial, Operation.transaction_id, Operation.step,
                               Operation.result, Operation.started, Operation.completed)).all()
    return {"units": [tuple(r) for r in units],
            "installs": sorted((tuple(r) for r in installs), key=repr),
            "operations": sorted((tuple(r) for r in ops), key=repr)}


def system_events(ledger: Ledger) -> dict[str, bytes]:
    """Every system event linetrace wrote, by id: its exact bytes."""
    with ledger.reader() as s:
        rows = s.execute(select(EventRow.event_id, EventRow.value)
                         .where(EventRow.source == SYSTEM_SOURCE,
                                EventRow.type.in_(["unit.sealed", "material.checked"]))).all()
    return {r[0]: r[1] for r in rows}


def hboms(ledger: Ledger) -> dict[str, bytes]:
    with ledger.reader() as s:
        return {r[0]: r[1] for r in s.execute(select(SealedHbom.sealed_event, SealedHbom.data))}
