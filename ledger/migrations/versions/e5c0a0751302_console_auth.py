"""console sign-in

The console (issue 13): `console_passwords` (argon2id hashes), `console_sessions` (SHA-256 of
the cookie token, CSRF token, idle and absolute expiry), `console_tokens` (API tokens: SHA-256
of the secret, revocable), `console_signin_failures` (the sign-in throttle) and `console_audit`
(every state-changing request). Operational secrets: never in the Merkle log.

Revision ID: e5c0a0751302
Revises: c3f0e1a21203
Create Date: 2026-12-07 05:40:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op


revision: str = 'e5c0a0751302'
down_revision: str | None = 'c3f0e1a21203'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table('console_passwords',
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=256), nullable=False),
    sa.Column('must_change', sa.Boolean(), nullable=False),
    sa.Column('set_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('set_by', sa.String(length=64), nullable=False),
    sa.PrimaryKeyConstraint('user_id')
    )
    op.create_table('console_sessions',
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('csrf', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_seen', sa.DateTime(timezone=True), nullable=False),
    sa.Column('client', sa.String(length=128), nullable=False),
    sa.PrimaryKeyConstraint('token_hash')
    )
    op.create_index('ix_console_sessions_user_id', 'console_sessions', ['user_id'])
    op.create_table('console_tokens',
    sa.Column('token_id', sa.String(length=16), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=128), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created', sa.DateTime(timezone=True), nullable=False),
    sa.Column('created_by', sa.String(length=64), nullable=False),
    sa.Column('last_used', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('token_id')
    )
    op.create_index('ix_console_tokens_user_id', 'console_tokens', ['user_id'])
    op.create_table('console_signin_failures',
    sa.Column('key', sa.String(length=200), nullable=False),
    sa.Column('failures', sa.Integer(), nullable=False),
    sa.Column('first', sa.DateTime(timezone=True), nullable=False),
    sa.Column('locked_until', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('console_audit',
    sa.Column('id', sa.Integer(), autoincrement=True, nullable=False),
    sa.Column('time', sa.DateTime(timezone=True), nullable=False),
    sa.Column('user_id', sa.String(length=64), nullable=True),
    sa.Column('via', sa.String(length=32), nullable=False),
    sa.Column('method', sa.String(length=8), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('status', sa.Integer(), nullable=False),
    sa.Column('client', sa.String(length=128), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_console_audit_time', 'console_audit', ['time'])
    op.create_index('ix_console_audit_user_id', 'console_audit', ['user_id'])


def downgrade() -> None:
    op.drop_index('ix_console_audit_user_id', 'console_audit')
    op.drop_index('ix_console_audit_time', 'console_audit')
    op.drop_table('console_audit')
    op.drop_table('console_signin_failures')
    op.drop_index('ix_console_tokens_user_id', 'console_tokens')
    op.drop_table('console_tokens')
    op.drop_index('ix_console_sessions_user_id', 'console_sessions')
    op.drop_table('console_sessions')
    op.drop_table('console_passwords')
