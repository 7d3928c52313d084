"""parameter budgets: the budget's unit and target on the job, the adapter parameters kept

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table('jobs') as batch:
        batch.add_column(sa.Column('budget_unit', sa.String(length=8), nullable=True))
        batch.add_column(sa.Column('budget_target', sa.Float(), nullable=True))
        batch.add_column(sa.Column('adapter_params', sa.BigInteger(), nullable=True))
    with op.batch_alter_table('rank_snapshots') as batch:
        batch.add_column(sa.Column('adapter_params', sa.BigInteger(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('rank_snapshots') as batch:
        batch.drop_column('adapter_params')
    with op.batch_alter_table('jobs') as batch:
        batch.drop_column('adapter_params')
        batch.drop_column('budget_target')
        batch.drop_column('budget_unit')
