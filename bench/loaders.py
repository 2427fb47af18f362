"""Bulk loaders into a ledger schema already created by `Ledger` (so the DDL is the models').

Secondary indexes are dropped for the load and rebuilt from the models' definitions after it,
as any bulk restore does; unique constraints stay in place throughout. PostgreSQL is then
ANALYZEd (autovacuum would have by the time a plant holds 100,000 servers); SQLite is left as
the ledger leaves it (linetrace never runs ANALYZE there).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable, Sequence
from typing import Any

import psycopg
from sqlalchemy import Index
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.schema import CreateIndex

from linetrace.ledger.models import Base

from .seed import BULK_TABLES, COLUMNS

Rows = dict[str, list[tuple[Any, ...]]]
SERIALS = {"installs": "id", "operations": "id", "tests": "id", "measurements": "id",
           "firmware": "id", "events": "seq"}


def _indexes() -> list[Index]:
    return [ix for t in BULK_TABLES for ix in Base.metadata.tables[t].indexes if not ix.unique]


def _cols(table: str) -> str:
    return ", ".join(f'"{c}"' for c in COLUMNS[table])


class SqliteLoader:
    def __init__(self, path: str) -> None:
        self.conn = sqlite3.connect(path, isolation_level=None)
        self.seconds = 0.0
        for pragma in ("journal_mode=OFF", "synchronous=OFF", "cache_size=-2000000",
                       "temp_store=MEMORY"):
            self.conn.execute(f"PRAGMA {pragma}")
        for ix in _indexes():
            self.conn.execute(f'DROP INDEX IF EXISTS "{ix.name}"')

    def load(self, rows: Rows) -> None:
        t = time.perf_counter()
        self.conn.execute("BEGIN")
        for table, data in rows.items():
            marks = ", ".join("?" * len(COLUMNS[table]))
            self.conn.executemany(f'INSERT INTO "{table}" ({_cols(table)}) VALUES ({marks})',
                                  data)
        self.conn.execute("COMMIT")
        self.seconds += time.perf_counter() - t

    def finish(self) -> None:
        t = time.perf_counter()
        for ix in _indexes():
            self.conn.execute(str(CreateIndex(ix).compile(dialect=sqlite.dialect())))
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.close()
        self.seconds += time.perf_counter() - t


class PgLoader:
    def __init__(self, conninfo: str, schema: str) -> None:
        self.conn = psycopg.connect(conninfo, autocommit=False)
        self.seconds = 0.0
        with self.conn.cursor() as cur:
            cur.execute(f'SET search_path TO "{schema}"')
            cur.execute("SET synchronous_commit TO off")
            cur.execute("SET maintenance_work_mem TO '1GB'")
            cur.execute("SET TIME ZONE 'UTC'")
            for ix in _indexes():
                cur.execute(f'DROP INDEX IF EXISTS "{ix.name}"')
        self.conn.commit()

    def load(self, rows: Rows) -> None:
        t = time.perf_counter()
        with self.conn.cursor() as cur:
            for table, data in rows.items():
                with cur.copy(f'COPY "{table}" ({_cols(table)}) FROM STDIN') as copy:
                    for r in data:
                        copy.write_row(r)
        self.conn.commit()
        self.seconds += time.perf_counter() - t

    def finish(self) -> None:
        t = time.perf_counter()
        with self.conn.cursor() as cur:
            for ix in _indexes():
                cur.execute(str(CreateIndex(ix).compile(
                    dialect=postgresql.dialect())))  # type: ignore[no-untyped-call]
            for table, col in SERIALS.items():
                cur.execute(f"SELECT setval(pg_get_serial_sequence('\"{table}\"', '{col}'), "
                            f'(SELECT coalesce(max("{col}"), 1) FROM "{table}"))')
        self.conn.commit()
        self.conn.autocommit = True
        for table in BULK_TABLES:  # only ours: other schemas of this database are not ours
            self.conn.execute(f'VACUUM ANALYZE "{table}"')
        self.conn.close()
        self.seconds += time.perf_counter() - t


def load_all(loaders: Sequence[SqliteLoader | PgLoader], chunks: Iterable[Rows]) -> None:
    for rows in chunks:
        for loader in loaders:
            loader.load(rows)
    for loader in loaders:
        loader.finish()
