"""exact rolling-window sums in SQL: agent_trades.window_micros and its index

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30

The usage read behind every decision read every trade of the agent's rolling window into Python to sum its
notional exactly (amounts are text). A final row's window notional is now also stored as whole micro-dollars
(NULL when not final or not exact at that scale; ledger/traded.py), so SUM() in the database is exact, and
(agent_id, created_at, status, window_micros) lets the sum, the counts and the filters on status and on a
missing window_micros read the index alone. Existing rows keep NULL: the read sums those exactly in Python.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('agent_trades', sa.Column('window_micros', sa.BigInteger(), nullable=True))
    op.create_index('ix_agent_trades_agent_created_status_micros', 'agent_trades',
                    ['agent_id', 'created_at', 'status', 'window_micros'])
    # Only the rows whose notional is not stored: what the read must still sum in Python, found without
    # walking the stored ones.
    op.create_index('ix_agent_trades_unstored_micros', 'agent_trades', ['agent_id', 'created_at'],
                    sqlite_where=sa.text('window_micros IS NULL'), postgresql_where=sa.text('window_micros IS NULL'))


def downgrade() -> None:
    op.drop_index('ix_agent_trades_unstored_micros', table_name='agent_trades')
    op.drop_index('ix_agent_trades_agent_created_status_micros', table_name='agent_trades')
    with op.batch_alter_table('agent_trades') as batch:
        batch.drop_column('window_micros')
