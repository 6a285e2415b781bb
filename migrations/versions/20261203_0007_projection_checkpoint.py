"""projection checkpoint: one row holding the events pruned from the log, folded (the sum of
their deltas, how many, the highest id), so that finished events can be deleted and a rebuild
is the checkpoint plus the events the log still holds

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    total = sa.Numeric(38, 0) if postgresql else sa.BigInteger()
    checks = [sa.CheckConstraint("id = 1", name=op.f("ck_projection_checkpoint_single_row"))]
    if not postgresql:
        checks.append(
            sa.CheckConstraint(
                "typeof(applied_total) = 'integer'",
                name=op.f("ck_projection_checkpoint_applied_total_is_integer"),
            )
        )
    checkpoint = op.create_table(
        "projection_checkpoint",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("applied_total", total, server_default="0", nullable=False),
        sa.Column("events_applied", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_pruned_id", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("pruned_at", sa.DateTime(timezone=True), nullable=True),
        *checks,
        sa.PrimaryKeyConstraint("id", name=op.f("pk_projection_checkpoint")),
    )
    op.bulk_insert(checkpoint, [{"id": 1}])


def downgrade() -> None:
    op.drop_table("projection_checkpoint")
