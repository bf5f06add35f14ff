"""rows bound to their audit records (policies/bindings.py)

Revision ID: 0003
Revises: 0005
Create Date: 2026-11-30
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0005'
branch_labels = None
depends_on = None

_BOUND_TABLES = ("trade_proposals", "approvals", "agent_trades")


def upgrade() -> None:
    for table in _BOUND_TABLES:
        op.add_column(table, sa.Column('audit_event_id', sa.String(length=36), nullable=True))
        # Rows from before the binding cannot be bound after the fact: marked, they never execute and
        # `audit verify` counts them apart.
        op.execute(sa.text(f"UPDATE {table} SET audit_event_id = 'legacy'"))


def downgrade() -> None:
    for table in _BOUND_TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column('audit_event_id')
