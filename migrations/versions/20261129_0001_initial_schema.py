"""initial schema: foos, bars, the bar projection row, the outbox and its processed guard

Revision ID: 0001
Revises:
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Payload = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
UNFINISHED = sa.text("state IN ('pending', 'dispatched')")


def _now() -> sa.TextClause:
    # The database clock; on SQLite in SQLAlchemy's own DateTime text format.
    if op.get_bind().dialect.name == "sqlite":
        return sa.text("(strftime('%Y-%m-%d %H:%M:%f000', 'now'))")
    return sa.text("clock_timestamp()")


def upgrade() -> None:
    now = _now()
    op.create_table(
        "foos",
        sa.Column("id", Id, nullable=False),
        sa.Column("amount", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint("amount >= 0", name=op.f("ck_foos_amount_not_negative")),
        sa.CheckConstraint(
            "state IN ('pending', 'completed', 'cancelled')", name=op.f("ck_foos_state_known")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_foos")),
    )
    op.create_table(
        "bars",
        sa.Column("id", Id, nullable=False),
        sa.Column("weight", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.CheckConstraint("weight >= 0", name=op.f("ck_bars_weight_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bars")),
    )
    projection = op.create_table(
        "bar_projection",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("applied_total", sa.BigInteger(), nullable=False),
        sa.Column("events_applied", sa.BigInteger(), nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_bar_projection_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bar_projection")),
    )
    op.bulk_insert(projection, [{"id": 1, "applied_total": 0, "events_applied": 0}])
    op.create_table(
        "outbox_events",
        sa.Column("id", Id, nullable=False),
        sa.Column("event_type", sa.String(length=64), nullable=False),
        sa.Column("payload", Payload, nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("available_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("processed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'dispatched', 'processed', 'dead')",
            name=op.f("ck_outbox_events_state_known"),
        ),
        sa.CheckConstraint("attempts >= 0", name=op.f("ck_outbox_events_attempts_not_negative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_events")),
    )
    op.create_index(
        "ix_outbox_events_due",
        "outbox_events",
        ["available_at", "id"],
        unique=False,
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.create_table(
        "processed_events",
        sa.Column("event_id", Id, nullable=False),
        sa.Column("processed_at", sa.DateTime(timezone=True), server_default=now, nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox_events.id"],
            name=op.f("fk_processed_events_event_id_outbox_events"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_processed_events")),
    )


def downgrade() -> None:
    op.drop_table("processed_events")
    op.drop_index(
        "ix_outbox_events_due",
        table_name="outbox_events",
        postgresql_where=UNFINISHED,
        sqlite_where=UNFINISHED,
    )
    op.drop_table("outbox_events")
    op.drop_table("bar_projection")
    op.drop_table("bars")
    op.drop_table("foos")
