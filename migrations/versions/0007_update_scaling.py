"""update scaling: jobs stored before the rank-stabilised scale keep the paper's lora_alpha / init_r

A stored spec is the whole validated spec, so one without budget.scaling predates the setting; resuming it,
or a download's conversion, must use the scale it trained with.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

jobs = sa.table('jobs', sa.column('id', sa.Integer), sa.column('spec', sa.JSON))


def upgrade() -> None:
    connection = op.get_bind()
    for job_id, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        budget = (spec or {}).get('budget')
        if isinstance(budget, dict) and 'scaling' not in budget:
            spec = {**spec, 'budget': {**budget, 'scaling': 'standard'}}
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(spec=spec))


def downgrade() -> None:
    # The older spec refuses unknown keys; a job trained rank-stabilised then reads with the paper's scale.
    connection = op.get_bind()
    for job_id, spec in connection.execute(sa.select(jobs.c.id, jobs.c.spec)).all():
        budget = (spec or {}).get('budget')
        if isinstance(budget, dict) and 'scaling' in budget:
            budget = {k: v for k, v in budget.items() if k != 'scaling'}
            connection.execute(jobs.update().where(jobs.c.id == job_id).values(spec={**spec, 'budget': budget}))
