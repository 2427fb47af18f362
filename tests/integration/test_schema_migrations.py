"""Alembic migrations match the models on both databases; stale schemas are refused."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from linetrace.ledger.db import Ledger, make_engine
from linetrace.ledger.models import Base, load_all_tables
from linetrace.ledger.schema import SchemaOutOfDate, current, ensure_current, head, upgrade

from ..conftest import linetrace_cmd, run_cli

pytestmark = pytest.mark.integration


def test_migrations_create_exactly_the_schema_the_models_describe(db_url: str) -> None:
    engine = make_engine(db_url)
    upgrade(engine)
    load_all_tables()
    with engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    engine.dispose()
    assert diff == [], f"models and migrations disagree; run `python -m linetrace.ledger.migrations.autogen`: {diff}"


def test_an_empty_database_is_created_at_head_and_an_old_one_is_refused(db_url: str) -> None:
    Ledger(db_url).close()
    engine = make_engine(db_url)
    assert current(engine) == head()
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '000000000000'"))
    with pytest.raises(SchemaOutOfDate, match="linetrace db upgrade"):
        ensure_current(engine)
    engine.dispose()


def test_worker_refuses_to_start_on_an_out_of_date_schema(tmp_path: Path) -> None:
    data = tmp_path / "d"
    assert run_cli("db", "upgrade", data_dir=data).returncode == 0
    engine = make_engine(f"sqlite:///{data / 'ledger.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '000000000000'"))
    engine.dispose()
    r = subprocess.run(linetrace_cmd("worker", "--data-dir", str(data)), capture_output=True,
                       text=True, timeout=60,
                       env={"LINETRACE_BROKER": "kafka://127.0.0.1:9", "PATH": "/usr/bin:/bin"})
    assert r.returncode == 2  # a configuration error (docs/errors.md "Exit codes"): not started
    assert "run `linetrace db upgrade`" in r.stderr and "db.schema_out_of_date" in r.stderr
    status = run_cli("db", "status", data_dir=data)
    assert status.returncode == 1 and "linetrace db upgrade" in status.stdout


def test_processes_opening_a_new_ledger_at_once_all_see_one_schema(db_url: str) -> None:
    """`up` starts the worker and the simulator together; neither may see a half-made schema."""
    import sys

    code = f"from linetrace.ledger.db import Ledger; Ledger({db_url!r}).close(); print('ok')"
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(6)]
    results = [p.communicate(timeout=120) for p in procs]
    assert [out.strip() for out, _ in results] == ["ok"] * 6, [err[-400:] for _, err in results]
