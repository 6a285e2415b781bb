"""event state rules in the database: a processed event is applied (applied_at set), a pending or
dead one is not; a dispatched one may be either. What the adapters' transitions keep to, held
by CHECK constraints, so that no write (a hand-written fix included) can break it

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CHECKS = {
    "processed_is_applied": "state <> 'processed' OR applied_at IS NOT NULL",
    "waiting_is_unapplied": "state NOT IN ('pending', 'dead') OR applied_at IS NULL",
}


def upgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        for name, condition in CHECKS.items():
            batch.create_check_constraint(name, condition)


def downgrade() -> None:
    with op.batch_alter_table("outbox_events") as batch:
        for name in CHECKS:
            batch.drop_constraint(op.f(f"ck_outbox_events_{name}"), type_="check")
