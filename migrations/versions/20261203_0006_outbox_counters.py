"""outbox counters: one row of counters kept as the relay and the deliveries go, and when a relay
pass last ran, so that health checks and metrics never read the event log; and a partial index
of dead events, so that counting them does not either

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

DEAD = sa.text("state = 'dead'")


def upgrade() -> None:
    counters = op.create_table(
        "outbox_counters",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("relay_passes", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("last_relay_pass_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("events_dispatched", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("leases_expired", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("event_failures", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("events_dead", sa.BigInteger(), server_default="0", nullable=False),
        sa.CheckConstraint("id = 1", name=op.f("ck_outbox_counters_single_row")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox_counters")),
    )
    # The history so far, counted once: failures on events and events dead now.
    bind = op.get_bind()
    failures, dead = bind.execute(
        sa.text(
            "SELECT COALESCE(SUM(failures), 0), "
            "COALESCE(SUM(CASE WHEN state = 'dead' THEN 1 ELSE 0 END), 0) FROM outbox_events"
        )
    ).one()
    op.bulk_insert(
        counters,
        [{"id": 1, "event_failures": int(failures), "events_dead": int(dead)}],
    )
    op.create_index(
        "ix_outbox_events_dead",
        "outbox_events",
        ["id"],
        postgresql_where=DEAD,
        sqlite_where=DEAD,
    )


def downgrade() -> None:
    op.drop_index(
        "ix_outbox_events_dead",
        table_name="outbox_events",
        postgresql_where=DEAD,
        sqlite_where=DEAD,
    )
    op.drop_table("outbox_counters")
