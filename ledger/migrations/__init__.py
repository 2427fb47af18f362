"""Alembic migrations of the ledger schema (`linetrace db upgrade`)."""
