"""spc charts

SPC (issue 12): `spc_charts`, each (station type, measurement) chart's limits frozen from its
first baseline points (centre, sigma = MR-bar / d2), so replaying the same events gives the
same limits and the data a chart judges never moves them; `ix_measurements_name`, so a chart's
recent points are read by its measurement name instead of scanning every measurement.

Revision ID: c3f0e1a21203
Revises: b2ad1c7e1202
Create Date: 2026-12-07 02:45:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'c3f0e1a21203'
down_revision: str | None = 'b2ad1c7e1202'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('spc_charts',
    sa.Column('station_type', sa.String(length=64), nullable=False),
    sa.Column('measurement', sa.String(length=256), nullable=False),
    sa.Column('test', sa.String(length=256), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=False),
    sa.Column('centre', sa.Float(), nullable=False),
    sa.Column('sigma', sa.Float(), nullable=False),
    sa.Column('mr_bar', sa.Float(), nullable=False),
    sa.Column('baseline', sa.Integer(), nullable=False),
    sa.Column('established', sa.DateTime(timezone=True), nullable=False),
    sa.Column('baseline_event', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('station_type', 'measurement')
    )
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.create_index('ix_measurements_name', ['name', 'test_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('measurements', schema=None) as batch_op:
        batch_op.drop_index('ix_measurements_name')
    op.drop_table('spc_charts')
