"""operators and approval trust

Operators (people) with hashed tokens and roles; every approval says how far its approver can be trusted
(`auto` | `client` | `operator`) and, when the approver shrank the order, what was proposed.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ledger.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('operators',
    sa.Column('name', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('token_hash', sa.String(length=128), nullable=False),
    sa.Column('enabled', sa.Boolean(), nullable=False),
    sa.Column('created_at', ledger.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', ledger.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('token_rotated_at', ledger.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('name')
    )
    with op.batch_alter_table('operators', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_operators_token_hash'), ['token_hash'], unique=True)

    # Existing approvals keep the trust their channel had: `via` already says auto, client or operator.
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('trust', sa.String(length=16), nullable=False, server_default='client'))
        batch_op.add_column(sa.Column('original_order_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('original_order', sa.Text(), nullable=True))
    op.execute("UPDATE approvals SET trust = via WHERE via IN ('auto', 'client', 'operator')")


def downgrade() -> None:
    with op.batch_alter_table('approvals', schema=None) as batch_op:
        batch_op.drop_column('original_order')
        batch_op.drop_column('original_order_hash')
        batch_op.drop_column('trust')
    with op.batch_alter_table('operators', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_operators_token_hash'))
    op.drop_table('operators')
