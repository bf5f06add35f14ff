"""indexes that keep decisions and reads at constant cost as history grows

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30

- agent_trades (agent_id, status, created_at): an agent's live orders (refreshed before every get_orders,
  get_positions and by reconciliation for one agent) were found by walking every row the agent ever had.
- sim_orders (status, filled_at): the simulated broker's fills since its last one scanned every filled order.
"""
from __future__ import annotations

from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index('ix_agent_trades_agent_status_created', 'agent_trades', ['agent_id', 'status', 'created_at'])
    op.create_index('ix_sim_orders_status_filled_at', 'sim_orders', ['status', 'filled_at'])


def downgrade() -> None:
    op.drop_index('ix_sim_orders_status_filled_at', table_name='sim_orders')
    op.drop_index('ix_agent_trades_agent_status_created', table_name='agent_trades')
