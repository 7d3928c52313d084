"""LoRA-format downloads: artifact kinds `lora` (per-module ranks) and `lora-serving` (one padded rank)

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

KINDS = "kind IN ('adapter', 'merged', 'lora', 'lora-serving')"
OLD_KINDS = "kind IN ('adapter', 'merged')"


def _replace_kinds(condition: str) -> None:
    with op.batch_alter_table('artifacts') as batch:
        batch.drop_constraint(op.f('ck_artifacts_kind'), type_='check')
        batch.create_check_constraint(op.f('ck_artifacts_kind'), condition)


def upgrade() -> None:
    _replace_kinds(KINDS)


def downgrade() -> None:
    op.execute("DELETE FROM artifacts WHERE kind IN ('lora', 'lora-serving')")  # the old constraint refuses them
    _replace_kinds(OLD_KINDS)
