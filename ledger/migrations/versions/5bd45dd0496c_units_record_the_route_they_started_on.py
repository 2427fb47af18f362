"""units record the route they started on

Each unit keeps the route (product, revision, SHA-256) in force when its product became known;
NULL for units recorded before this revision and units with no route in force.

Revision ID: 5bd45dd0496c
Revises: 9af923019b97
Create Date: 2026-12-06 17:13:48.514557
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = '5bd45dd0496c'
down_revision: str | None = '9af923019b97'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.add_column(sa.Column('route_product', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('route_revision', sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column('route_sha256', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('units', schema=None) as batch_op:
        batch_op.drop_column('route_sha256')
        batch_op.drop_column('route_revision')
        batch_op.drop_column('route_product')
