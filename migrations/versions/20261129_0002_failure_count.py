"""count recalculation failures apart from dispatches: only failures lead to dead letters

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("failures", sa.Integer(), server_default="0", nullable=False))
        batch.create_check_constraint("failures_not_negative", "failures >= 0")


def downgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_constraint(op.f("ck_outbox_events_failures_not_negative"), type_="check")
        batch.drop_column("failures")
