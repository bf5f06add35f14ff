"""order exits: bracket legs (stop-loss, take-profit, trailing stop)

Revision ID: 0007
Revises: 0008
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import ledger.types

revision = '0007'
down_revision = '0008'
branch_labels = None
depends_on = None


def _decimal(name: str) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, ledger.types.ExactDecimal(length=48), nullable=True)


def upgrade() -> None:
    with op.batch_alter_table('trade_proposals', schema=None) as batch_op:
        batch_op.add_column(sa.Column('exits', sa.JSON(), nullable=True))
    with op.batch_alter_table('sim_orders', schema=None) as batch_op:
        batch_op.add_column(sa.Column('parent_id', sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column('leg_role', sa.String(length=16), nullable=True))
        batch_op.add_column(_decimal('trail_percent'))
        batch_op.add_column(_decimal('trail_price'))
        batch_op.add_column(_decimal('hwm'))
        batch_op.create_index(batch_op.f('ix_sim_orders_parent_id'), ['parent_id'], unique=False)
    op.create_table('agent_order_legs',
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('parent_id', sa.String(length=36), nullable=False),
    sa.Column('agent_id', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('order_id', sa.String(length=64), nullable=True),
    sa.Column('symbol', sa.String(length=32), nullable=False),
    sa.Column('side', sa.String(length=4), nullable=False),
    sa.Column('quantity', ledger.types.ExactDecimal(length=48), nullable=True),
    sa.Column('order_type', sa.String(length=16), nullable=False),
    _decimal('limit_price'),
    _decimal('stop_price'),
    _decimal('trail_percent'),
    _decimal('trail_price'),
    _decimal('hwm'),
    sa.Column('time_in_force', sa.String(length=8), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('filled_qty', ledger.types.ExactDecimal(length=48), nullable=False),
    _decimal('price'),
    sa.Column('reject_reason', sa.Text(), nullable=True),
    sa.Column('created_at', ledger.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('executed_at', ledger.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', ledger.types.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['parent_id'], ['agent_trades.id'], ),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('parent_id', 'role')
    )
    with op.batch_alter_table('agent_order_legs', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_agent_order_legs_order_id'), ['order_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_agent_order_legs_status'), ['status'], unique=False)


def downgrade() -> None:
    op.drop_table('agent_order_legs')
    with op.batch_alter_table('sim_orders', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_sim_orders_parent_id'))
        for column in ('hwm', 'trail_price', 'trail_percent', 'leg_role', 'parent_id'):
            batch_op.drop_column(column)
    with op.batch_alter_table('trade_proposals', schema=None) as batch_op:
        batch_op.drop_column('exits')
