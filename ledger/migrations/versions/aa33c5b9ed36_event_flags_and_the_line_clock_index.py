"""event flags and the line clock index

`event_flags`: accepted events a person should look at (first kinds: an event time far from
its partition's line clock, a clock reset), listed by `linetrace flags`. The index on
events (topic, partition, time) finds a partition's line clock (its highest event time).

Revision ID: aa33c5b9ed36
Revises: 5bd45dd0496c
Create Date: 2026-12-06 17:26:56.895173
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'aa33c5b9ed36'
down_revision: str | None = '5bd45dd0496c'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('event_flags',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('event_seq', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=32), nullable=False),
    sa.Column('source', sa.String(length=64), nullable=False),
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('topic', sa.String(length=64), nullable=False),
    sa.Column('partition', sa.Integer(), nullable=True),
    sa.Column('event_time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('clock', sa.DateTime(timezone=True), nullable=True),
    sa.Column('message', sa.String(length=512), nullable=False),
    sa.Column('recorded', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('event_flags', schema=None) as batch_op:
        batch_op.create_index('ix_event_flags_partition', ['topic', 'partition', 'kind', 'event_seq'], unique=False)
        batch_op.create_index('uq_event_flags_event_kind', ['event_seq', 'kind'], unique=True)

    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_partition_time', ['topic', 'partition', 'time'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_partition_time')

    with op.batch_alter_table('event_flags', schema=None) as batch_op:
        batch_op.drop_index('uq_event_flags_event_kind')
        batch_op.drop_index('ix_event_flags_partition')

    op.drop_table('event_flags')
