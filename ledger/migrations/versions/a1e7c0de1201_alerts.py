"""alerts

The alert engine (issue 12): `alerts` (one row per (condition, subject): its ISA-18.2 state,
occurrences, priority, message and action) and `alert_history` (every transition: raised,
cleared, acknowledged, shelved, ...; the KPIs, flood and chattering are computed from it).

Revision ID: a1e7c0de1201
Revises: fea8d23663f9
Create Date: 2026-12-07 02:21:03.025588
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'a1e7c0de1201'
down_revision: str | None = 'fea8d23663f9'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('alert_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('alert_id', sa.String(length=16), nullable=False),
    sa.Column('occurrence', sa.Integer(), nullable=False),
    sa.Column('transition', sa.String(length=24), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('condition', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('by', sa.String(length=128), nullable=True),
    sa.Column('cause', sa.String(length=128), nullable=False),
    sa.Column('note', sa.String(length=4096), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('alert_id', 'occurrence', 'transition', 'cause', name='uq_alert_history')
    )
    with op.batch_alter_table('alert_history', schema=None) as batch_op:
        batch_op.create_index('ix_alert_history_alert', ['alert_id', 'id'], unique=False)
        batch_op.create_index('ix_alert_history_time', ['time'], unique=False)

    op.create_table('alerts',
    sa.Column('alert_id', sa.String(length=16), nullable=False),
    sa.Column('condition', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=256), nullable=False),
    sa.Column('priority', sa.String(length=8), nullable=False),
    sa.Column('state', sa.String(length=24), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('process_active', sa.Boolean(), nullable=False),
    sa.Column('acked', sa.Boolean(), nullable=False),
    sa.Column('suppressed', sa.Boolean(), nullable=False),
    sa.Column('out_of_service', sa.Boolean(), nullable=False),
    sa.Column('latched', sa.Boolean(), nullable=False),
    sa.Column('chattering', sa.Boolean(), nullable=False),
    sa.Column('shelved_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('occurrences', sa.Integer(), nullable=False),
    sa.Column('raised', sa.DateTime(timezone=True), nullable=False),
    sa.Column('cleared', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated', sa.DateTime(timezone=True), nullable=False),
    sa.Column('message', sa.String(length=1024), nullable=False),
    sa.Column('action', sa.String(length=1024), nullable=False),
    sa.Column('details', sa.JSON(), nullable=False),
    sa.Column('unit', sa.String(length=128), nullable=True),
    sa.Column('station', sa.String(length=64), nullable=True),
    sa.Column('lot', sa.String(length=128), nullable=True),
    sa.Column('parent', sa.String(length=16), nullable=True),
    sa.Column('cause', sa.String(length=128), nullable=False),
    sa.Column('cause_active', sa.Boolean(), nullable=False),
    sa.Column('last_time', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('alert_id')
    )
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.create_index('ix_alerts_parent', ['parent'], unique=False)
        batch_op.create_index('ix_alerts_state', ['state'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('alerts', schema=None) as batch_op:
        batch_op.drop_index('ix_alerts_state')
        batch_op.drop_index('ix_alerts_parent')

    op.drop_table('alerts')
    with op.batch_alter_table('alert_history', schema=None) as batch_op:
        batch_op.drop_index('ix_alert_history_time')
        batch_op.drop_index('ix_alert_history_alert')

    op.drop_table('alert_history')
