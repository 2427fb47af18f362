"""Alembic environment: runs on the connection `ledger.schema` hands it (no alembic.ini)."""

from __future__ import annotations

from alembic import context

from linetrace.ledger.models import Base, load_all_tables

load_all_tables()
connection = context.config.attributes["connection"]
context.configure(connection=connection, target_metadata=Base.metadata,
                  render_as_batch=connection.dialect.name == "sqlite", compare_type=True)
with context.begin_transaction():
    context.run_migrations()
