"""pending system events

`pending_system_events` and `pending_waits`: a system event whose content needs leaves the
ledger has not read yet (a `unit.sealed` over a sub-assembly's chain up to the event its
install names) waits here, written in its cause's transaction, and is written when the
awaited events arrive, with the same id and time (ledger/pending.py, docs/system-events.md).

Revision ID: 41a851f6d3ba
Revises: aa33c5b9ed36
Create Date: 2026-12-06 17:49:06.127914
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '41a851f6d3ba'
down_revision: str | None = 'aa33c5b9ed36'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('pending_system_events',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('type', sa.String(length=64), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('cause_source', sa.String(length=64), nullable=False),
    sa.Column('cause_id', sa.String(length=36), nullable=False),
    sa.Column('since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('event_id')
    )
    op.create_table('pending_waits',
    sa.Column('event_id', sa.String(length=36), nullable=False),
    sa.Column('subject', sa.String(length=128), nullable=False),
    sa.Column('awaited', sa.String(length=36), nullable=False),
    sa.PrimaryKeyConstraint('event_id', 'subject', 'awaited')
    )
    with op.batch_alter_table('pending_waits', schema=None) as batch_op:
        batch_op.create_index('ix_pending_waits_awaited', ['awaited'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('pending_waits', schema=None) as batch_op:
        batch_op.drop_index('ix_pending_waits_awaited')

    op.drop_table('pending_waits')
    op.drop_table('pending_system_events')
