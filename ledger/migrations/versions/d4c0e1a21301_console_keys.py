"""console keys

The console's own key (issue 13): `console_keys`, the keys the log enrolled for a web console
(`console.enrolled`, `console.revoked`): statements they sign attest a signed-in user's hold
and alert actions (ledger/console_key.py).

Revision ID: d4c0e1a21301
Revises: e5c0a0751302
Create Date: 2026-12-07 05:50:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'd4c0e1a21301'
down_revision: str | None = 'e5c0a0751302'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_keys',
    sa.Column('keyid', sa.String(length=16), nullable=False),
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('public_key', sa.LargeBinary(), nullable=False),
    sa.Column('enrolled_event', sa.String(length=36), nullable=False),
    sa.Column('enrolled_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('keyid')
    )


def downgrade() -> None:
    op.drop_table('console_keys')
