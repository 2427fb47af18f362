"""burnin verdicts

The burn-in verdict (issue 12): `burnin_verdicts` (a projection of each `burnin.verdict` leaf)
and `burnin_waits` (a run whose end is stored before the unit's results: decided later).

Revision ID: b2ad1c7e1202
Revises: a1e7c0de1201
Create Date: 2026-12-07 02:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'b2ad1c7e1202'
down_revision: str | None = 'a1e7c0de1201'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('burnin_verdicts',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('run_id', sa.String(length=36), nullable=False),
    sa.Column('run_end', sa.String(length=36), nullable=False),
    sa.Column('station', sa.String(length=64), nullable=False),
    sa.Column('sku', sa.String(length=128), nullable=True),
    sa.Column('result', sa.String(length=8), nullable=False),
    sa.Column('reasons', sa.Integer(), nullable=False),
    sa.Column('failed_gpus', sa.String(length=256), nullable=False),
    sa.Column('telemetry_sha256', sa.String(length=64), nullable=False),
    sa.Column('telemetry_events', sa.Integer(), nullable=False),
    sa.Column('limits_sha256', sa.String(length=64), nullable=False),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    with op.batch_alter_table('burnin_verdicts', schema=None) as batch_op:
        batch_op.create_index('ix_burnin_verdicts_serial', ['serial', 'decided_at'], unique=False)

    op.create_table('burnin_waits',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('serial', sa.String(length=128), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('until', sa.DateTime(timezone=True), nullable=False),
    sa.Column('resolved', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('source', 'event_id', name='uq_burnin_waits_end')
    )
    with op.batch_alter_table('burnin_waits', schema=None) as batch_op:
        batch_op.create_index('ix_burnin_waits_serial', ['serial', 'resolved'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('burnin_waits', schema=None) as batch_op:
        batch_op.drop_index('ix_burnin_waits_serial')
    op.drop_table('burnin_waits')
    with op.batch_alter_table('burnin_verdicts', schema=None) as batch_op:
        batch_op.drop_index('ix_burnin_verdicts_serial')
    op.drop_table('burnin_verdicts')
