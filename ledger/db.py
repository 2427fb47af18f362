"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite: WAL, foreign keys on, and every write transaction begins with BEGIN IMMEDIATE
(SQLAlchemy's documented pysqlite recipe) so two writers can never read the same log head.
PostgreSQL: psycopg 3; a plain `postgresql://` URL is normalised to `postgresql+psycopg://`.
"""

from __future__ import annotations

from collections.abc import Iterator
import os
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .errors import LedgerError


class ConfigError(LedgerError):
    code = "db.config"


class LedgerMissing(LedgerError):
    """A query was pointed at a ledger database that does not exist."""

    code = "db.missing"


def normalise_url(url: str) -> str:
    if url.startswith("postgres://"):
        url = "postgresql://" + url[len("postgres://") :]
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if not (url.startswith("sqlite") or url.startswith("postgresql+psycopg")):
        raise ConfigError(
            f"unsupported database URL {url.split(':', 1)[0]!r}: use sqlite:///PATH or "
            "postgresql://USER@HOST:PORT/DB (LINETRACE_DB)"
        )
    return url


def make_engine(url: str, *, read_only: bool = False, **kw: Any) -> Engine:
    """An engine; `read_only` ones never write (SQLite: `query_only`, deferred BEGIN, and the
    journal mode left as the writer set it)."""
    url = normalise_url(url)
    if read_only:
        kw["execution_options"] = {**kw.get("execution_options", {}),
                                   "linetrace_read_only": True}
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kw)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
            if read_only:
                cur.execute("PRAGMA query_only=ON")
            else:
                cur.execute("PRAGMA journal_mode=WAL")
                cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn: Any) -> None:
            # Writers take the write lock up front (two writers can never read the same log
            # head); readers begin deferred so a trace never blocks the worker's batch.
            read_only = conn.get_execution_options().get("linetrace_read_only", False)
            conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_pre_ping=True, **kw)


def sqlite_path(url: str) -> str | None:
    """The file of a `sqlite:///PATH` URL (None for other databases and in-memory SQLite)."""
    url = normalise_url(url)
    if not url.startswith("sqlite:///"):
        return None
    path = url[len("sqlite:///"):].split("?", 1)[0]
    return None if path in ("", ":memory:") else path


class Ledger:
    """A handle on one ledger database: engine plus session factory.

    `read_only=True` is how queries open a ledger: it never creates a database file or a
    schema and never migrates; a missing, empty or out-of-date ledger is refused (LedgerMissing,
    SchemaOutOfDate, SchemaUnknown), saying what to run.
    """

    def __init__(self, url: str, *, create: bool = True, read_only: bool = False) -> None:
        self.url = normalise_url(url)
        path = sqlite_path(self.url) if read_only else None
        if path is not None and not os.path.isfile(path):
            raise LedgerMissing(
                f"no ledger database at {path}; `linetrace up` or `linetrace worker` creates it "
                "as the line runs (`linetrace db upgrade` creates an empty one); check "
                "--data-dir / LINETRACE_DB")
        self.engine = make_engine(self.url, read_only=read_only)
        if read_only:
            try:
                from .schema import check_current

                check_current(self.engine)
            except BaseException:
                self.engine.dispose()
                raise
            create = False
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(linetrace_read_only=True), expire_on_commit=False)
        if create:
            from .models import create_schema

            create_schema(self.engine)

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One write transaction: commit on success, roll back on any error."""
        with self._sessions() as session, session.begin():
            yield session

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A read-only session (on SQLite it does not take the write lock)."""
        with self._read_sessions() as session:
            yield session

    def close(self) -> None:
        self.engine.dispose()
