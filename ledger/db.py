"""Engines and sessions for SQLite (embedded default) and PostgreSQL (production).

SQLite: WAL, foreign keys on, and every write transaction begins with BEGIN IMMEDIATE
(SQLAlchemy's documented pysqlite recipe) so two writers can never read the same log head.
PostgreSQL: psycopg 3; a plain `postgresql://` URL is normalised to `postgresql+psycopg://`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.orm import Session, sessionmaker

from .errors import LedgerError


class ConfigError(LedgerError):
    code = "db.config"


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


def make_engine(url: str, **kw: Any) -> Engine:
    url = normalise_url(url)
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"timeout": 60}, **kw)

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn: Any, _rec: Any) -> None:
            dbapi_conn.isolation_level = None  # we issue BEGIN ourselves
            cur = dbapi_conn.cursor()
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


class Ledger:
    """A handle on one ledger database: engine plus session factory."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = normalise_url(url)
        self.engine = make_engine(self.url)
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
