"""operator overrides of agent settings

Revision ID: 0005
Revises: 0002
Create Date: 2026-11-30

Which of an agent's settings an operator set (disable, enable, a limit from the command line), by whom and
when: a config sync leaves those alone (policies/agent_settings.py).
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('agent_trading_permissions') as batch:
        batch.add_column(sa.Column('operator_overrides', sa.JSON(), nullable=False, server_default='{}'))


def downgrade() -> None:
    with op.batch_alter_table('agent_trading_permissions') as batch:
        batch.drop_column('operator_overrides')
