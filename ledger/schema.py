"""The ledger's schema version: Alembic migrations, and the check every process makes.

A brand-new database is created at the current revision. A database at an older revision is
refused with a message saying to run `linetrace db upgrade` (the worker never migrates
silently: in production an operator decides when the schema changes).
"""

from __future__ import annotations

from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect, text

from .errors import LedgerError


class SchemaOutOfDate(LedgerError):
    code = "db.schema_out_of_date"


class SchemaUnknown(LedgerError):
    code = "db.schema_unknown"


def _config(engine: Engine | None = None) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("linetrace.ledger") / "migrations"))
    return cfg


def head() -> str:
    head_rev = ScriptDirectory.from_config(_config()).get_current_head()
    assert head_rev is not None
    return head_rev


def current(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str]:
    """Migrate to `revision`; returns (from, to)."""
    before = current(engine)
    cfg = _config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current(engine) or ""


def ensure_current(engine: Engine, *, create: bool = True) -> None:
    """Create an empty database at head; refuse one that is behind (or unknown).

    Creation happens under the database's write lock (SQLite: BEGIN IMMEDIATE; PostgreSQL: a
    transaction-scoped advisory lock), re-checking inside it, so processes that open a new
    ledger at the same moment (`up` starts the worker and the simulator together) never see
    each other's half-made schema.
    """
    rev = current(engine)
    if rev == head():
        return
    if rev is None:
        with engine.begin() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _CREATE_LOCK})
            rev = MigrationContext.configure(conn).get_current_revision()
            if rev is None:
                if inspect(conn).get_table_names():
                    raise SchemaUnknown(
                        "the ledger database has tables but no schema revision; point "
                        "LINETRACE_DB at a linetrace ledger (or an empty database)")
                if not create:
                    raise SchemaOutOfDate("the ledger database is empty; run `linetrace db upgrade`")
                cfg = _config()
                cfg.attributes["connection"] = conn
                command.upgrade(cfg, "head")
                return
        if rev == head():
            return
    raise SchemaOutOfDate(
        f"the ledger database schema is at revision {rev}, this linetrace needs {head()}; "
        "run `linetrace db upgrade` (back up the database first)")


_CREATE_LOCK = 0x6C74_6462  # "ltdb": serialises first-time schema creation on PostgreSQL


def check_current(engine: Engine) -> None:
    """Refuse, without writing anything, a ledger whose schema is not at head (queries).

    Unlike `ensure_current` it never creates: an empty database is refused too.
    """
    rev = current(engine)
    if rev == head():
        return
    if rev is None:
        if inspect(engine).get_table_names():
            raise SchemaUnknown(
                "the ledger database has tables but no schema revision; point "
                "LINETRACE_DB at a linetrace ledger")
        raise SchemaOutOfDate(
            "the ledger database is empty: no line has been recorded in it yet; "
            "`linetrace up` or `linetrace worker` records one (`linetrace db upgrade` creates "
            "the empty schema); check --data-dir / LINETRACE_DB")
    raise SchemaOutOfDate(
        f"the ledger database schema is at revision {rev}, this linetrace needs {head()}; "
        "run `linetrace db upgrade` (back up the database first)")
