"""one name per concept: `processed_events` becomes the `applied_events` guard, `processed_at`
becomes `applied_at` (when a pass put the event's delta on the bars) and `attempts` becomes
`dispatches` (messages sent); `processed` stays the state of a finished event

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


class Names(NamedTuple):
    count: str  # outbox_events: messages sent
    stamp: str  # outbox_events and the guard: when the delta went on the bars
    guard: str  # the table whose primary key lets each event's delta in once

    @property
    def count_check(self) -> str:
        return f"ck_outbox_events_{self.count}_not_negative"

    @property
    def guard_pk(self) -> str:
        return f"pk_{self.guard}"

    @property
    def guard_fk(self) -> str:
        return f"fk_{self.guard}_event_id_outbox_events"


OLD = Names(count="attempts", stamp="processed_at", guard="processed_events")
NEW = Names(count="dispatches", stamp="applied_at", guard="applied_events")


def _rename(old: Names, new: Names) -> None:
    op.rename_table(old.guard, new.guard)
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("outbox_events", old.count, new_column_name=new.count)
        op.alter_column("outbox_events", old.stamp, new_column_name=new.stamp)
        op.alter_column(new.guard, old.stamp, new_column_name=new.stamp)
        for table, before, after in [
            ("outbox_events", old.count_check, new.count_check),
            (new.guard, old.guard_pk, new.guard_pk),
            (new.guard, old.guard_fk, new.guard_fk),
        ]:
            op.execute(f"ALTER TABLE {table} RENAME CONSTRAINT {before} TO {after}")
        return
    # SQLite keeps constraint names in the table's definition: the tables are rebuilt.
    with op.batch_alter_table("outbox_events", recreate="always") as batch:
        batch.drop_constraint(op.f(old.count_check), type_="check")
        batch.alter_column(old.count, new_column_name=new.count)
        batch.alter_column(old.stamp, new_column_name=new.stamp)
        batch.create_check_constraint(f"{new.count}_not_negative", f"{new.count} >= 0")
    with op.batch_alter_table(new.guard, recreate="always") as batch:
        batch.drop_constraint(op.f(old.guard_fk), type_="foreignkey")
        batch.drop_constraint(op.f(old.guard_pk), type_="primary")
        batch.alter_column(old.stamp, new_column_name=new.stamp)
        batch.create_primary_key(op.f(new.guard_pk), ["event_id"])
        batch.create_foreign_key(
            op.f(new.guard_fk), "outbox_events", ["event_id"], ["id"], ondelete="RESTRICT"
        )


def upgrade() -> None:
    _rename(OLD, NEW)


def downgrade() -> None:
    _rename(NEW, OLD)
