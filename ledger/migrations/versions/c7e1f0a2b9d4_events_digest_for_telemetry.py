"""events.digest for telemetry

`events.digest`: SHA-256 of the exact event bytes, filled for `line.telemetry` rows, whose
`value` is stored compressed and dropped (a short marker) after the retention period; the
digest stays forever so the burn-in verdict's telemetry commitment stays checkable
(ledger/telemetry_store.py, docs/operations.md).

Revision ID: c7e1f0a2b9d4
Revises: 41a851f6d3ba
Create Date: 2026-12-06 20:25:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c7e1f0a2b9d4'
down_revision: str | None = '41a851f6d3ba'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('digest', sa.LargeBinary(length=32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_column('digest')
