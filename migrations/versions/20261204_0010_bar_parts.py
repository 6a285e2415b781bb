"""bar parts: the bars split into parts of 1,000 that advance on their own along one order of
events (`outbox_events.position`, given by the relay), each bar's baseline for verify and
rebuild to replay from, and the projection's head; the `applied_events` guard goes, a part's
position written with its bars is what keeps an event from being applied twice.

The database continues where it was: the applied events get positions 1..P in the order they
were applied, every part and bar is at P with the old applied total, and each bar's state now
is its baseline. Unapplied events stay unsequenced: the relay sequences them.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
Payload = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")
PART_SIZE = 1_000  # domain.parts.DEFAULT_PART_SIZE when this revision was written
RECALCULATION = "domain.recalculation:recalculate"  # the example's, all 0009 could run
DEAD_IS_UNSEQUENCED = "state <> 'dead' OR position IS NULL"
APPLIED_WITHIN_HEAD = "applied_position <= head_position"

# Every bar gets a part: the first 1,000 by id part 1, the next part 2, ...
NUMBERED_BARS = (
    f"SELECT id, (row_number() OVER (ORDER BY id) - 1) / {PART_SIZE} + 1 AS part FROM bars"
)


def _postgresql() -> bool:
    return op.get_bind().dialect.name == "postgresql"


def _now() -> sa.TextClause:
    # The database clock; on SQLite in SQLAlchemy's own DateTime text format.
    if _postgresql():
        return sa.text("clock_timestamp()")
    return sa.text("(strftime('%Y-%m-%d %H:%M:%f000', 'now'))")


def _sum() -> sa.types.TypeEngine[Any]:
    return sa.Numeric(38, 0) if _postgresql() else sa.BigInteger()


def _integer_only(table: str, *columns: str) -> list[sa.CheckConstraint]:
    """SQLite's guard of a sum (revision 0005): an integer that overflows would be a REAL."""
    if _postgresql():
        return []
    return [
        sa.CheckConstraint(f"typeof({c}) = 'integer'", name=op.f(f"ck_{table}_{c}_is_integer"))
        for c in columns
    ]


def _scalar(sql: str, **params: object) -> int:
    return int(op.get_bind().scalar(sa.text(sql), params) or 0)


def upgrade() -> None:
    applied = _scalar("SELECT count(*) FROM outbox_events WHERE applied_at IS NOT NULL")
    _sequence_applied_events()
    _create_parts(applied)
    _move_projection_to_head(applied)
    op.drop_table("applied_events")
    # Failed passes are counted on the parts, as failed deliveries were on the events.
    with op.batch_alter_table("outbox_counters") as batch:
        batch.add_column(
            sa.Column("part_failures", sa.BigInteger(), server_default="0", nullable=False)
        )


def _sequence_applied_events() -> None:
    """Positions 1..P for the applied events, in the order they were applied."""
    with op.batch_alter_table("outbox_events") as batch:
        batch.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    op.execute(
        "UPDATE outbox_events SET position = ranked.position FROM ("
        " SELECT id, row_number() OVER (ORDER BY applied_at, id) AS position"
        " FROM outbox_events WHERE applied_at IS NOT NULL"
        ") AS ranked WHERE outbox_events.id = ranked.id"
    )
    with op.batch_alter_table("outbox_events") as batch:
        batch.create_unique_constraint(op.f("uq_outbox_events_position"), ["position"])
        batch.create_check_constraint("dead_is_unsequenced", DEAD_IS_UNSEQUENCED)


def _create_parts(applied: int) -> None:
    """Every part and bar at position `applied`, with the projection's applied total; each
    bar's state as it is now is its baseline."""
    op.create_table(
        "bar_parts",
        sa.Column("id", Id, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("applied_total", _sum(), nullable=False),
        sa.Column("bars", sa.Integer(), server_default="0", nullable=False),
        sa.Column("state", sa.String(length=16), server_default="ready", nullable=False),
        sa.Column("failures", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "available_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("rebuilding", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("baseline_position", sa.BigInteger(), nullable=False),
        sa.Column("baseline_total", _sum(), nullable=False),
        sa.Column("passed_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("state IN ('ready', 'dead')", name=op.f("ck_bar_parts_state_known")),
        sa.CheckConstraint(
            "position >= baseline_position", name=op.f("ck_bar_parts_position_past_baseline")
        ),
        sa.CheckConstraint("bars >= 0", name=op.f("ck_bar_parts_bars_not_negative")),
        sa.CheckConstraint("failures >= 0", name=op.f("ck_bar_parts_failures_not_negative")),
        *_integer_only("bar_parts", "applied_total", "baseline_total"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_bar_parts")),
    )
    op.execute(
        sa.text(
            "INSERT INTO bar_parts (id, position, applied_total, bars, baseline_position,"
            " baseline_total)"
            " SELECT numbered.part, :at, bar_projection.applied_total, count(*), :at,"
            " bar_projection.applied_total"
            f" FROM ({NUMBERED_BARS}) AS numbered CROSS JOIN bar_projection"
            " GROUP BY numbered.part, bar_projection.applied_total"
        ).bindparams(at=applied)
    )
    if _postgresql():  # the ids were given: new parts take the next one
        op.execute(
            "SELECT setval(pg_get_serial_sequence('bar_parts', 'id'), max(id)) FROM bar_parts"
        )

    with op.batch_alter_table("bars") as batch:
        batch.add_column(sa.Column("part_id", Id, nullable=True))
        batch.add_column(sa.Column("position", sa.BigInteger(), nullable=True))
    op.execute(
        sa.text(
            "UPDATE bars SET part_id = numbered.part, position = :at"
            f" FROM ({NUMBERED_BARS}) AS numbered WHERE bars.id = numbered.id"
        ).bindparams(at=applied)
    )
    with op.batch_alter_table("bars") as batch:
        batch.alter_column("part_id", existing_type=Id, nullable=False)
        batch.alter_column("position", existing_type=sa.BigInteger(), nullable=False)
        batch.create_foreign_key(
            op.f("fk_bars_part_id_bar_parts"), "bar_parts", ["part_id"], ["id"], ondelete="RESTRICT"
        )
    op.create_index(op.f("ix_bars_part_id"), "bars", ["part_id", "id"])

    op.create_table(
        "bar_baselines",
        sa.Column("bar_id", Id, nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column("state", Payload, nullable=False),
        sa.ForeignKeyConstraint(
            ["bar_id"], ["bars.id"], name=op.f("fk_bar_baselines_bar_id_bars"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("bar_id", name=op.f("pk_bar_baselines")),
    )
    # The bar's fields as JSON numbers (a NUMERIC value too), as the bar repository writes them.
    build = "jsonb_build_object" if _postgresql() else "json_object"
    op.execute(
        "INSERT INTO bar_baselines (bar_id, position, state)"
        f" SELECT id, position, {build}('weight', weight, 'value', value) FROM bars"
    )


def _move_projection_to_head(applied: int) -> None:
    """The old applied total is the head's: every sequenced event is applied."""
    with op.batch_alter_table("bar_projection") as batch:
        if not _postgresql():  # the guard names the old column: it goes with it
            batch.drop_constraint(op.f("ck_bar_projection_applied_total_is_integer"), type_="check")
        batch.alter_column(
            "applied_total",
            new_column_name="head_total",
            existing_type=_sum(),
            existing_nullable=False,
            server_default="0",
        )
        for name in ("head_position", "applied_position", "counted_position"):
            batch.add_column(sa.Column(name, sa.BigInteger(), server_default="0", nullable=False))
        batch.add_column(
            sa.Column(
                "recalculation", sa.String(length=200), server_default=RECALCULATION, nullable=False
            )
        )
        batch.create_check_constraint("applied_within_head", APPLIED_WITHIN_HEAD)
        if not _postgresql():
            batch.create_check_constraint("head_total_is_integer", "typeof(head_total) = 'integer'")
    op.execute(
        sa.text(
            "UPDATE bar_projection SET head_position = :at, applied_position = :at,"
            " counted_position = :at"
        ).bindparams(at=applied)
    )


def downgrade() -> None:
    with op.batch_alter_table("outbox_counters") as batch:
        batch.drop_column("part_failures")
    _apply_through(_common_position())
    op.create_table(
        "applied_events",
        sa.Column("event_id", Id, nullable=False),
        sa.Column("applied_at", sa.DateTime(timezone=True), server_default=_now(), nullable=False),
        sa.ForeignKeyConstraint(
            ["event_id"],
            ["outbox_events.id"],
            name=op.f("fk_applied_events_event_id_outbox_events"),
            ondelete="RESTRICT",
        ),
        sa.PrimaryKeyConstraint("event_id", name=op.f("pk_applied_events")),
    )
    op.execute(
        "INSERT INTO applied_events (event_id, applied_at)"
        " SELECT id, applied_at FROM outbox_events WHERE applied_at IS NOT NULL"
    )

    with op.batch_alter_table("bar_projection") as batch:
        batch.drop_constraint(op.f("ck_bar_projection_applied_within_head"), type_="check")
        if not _postgresql():
            batch.drop_constraint(op.f("ck_bar_projection_head_total_is_integer"), type_="check")
        for name in ("head_position", "applied_position", "counted_position", "recalculation"):
            batch.drop_column(name)
        batch.alter_column(
            "head_total",
            new_column_name="applied_total",
            existing_type=_sum(),
            existing_nullable=False,
            server_default=None,
        )
        if not _postgresql():
            batch.create_check_constraint(
                "applied_total_is_integer", "typeof(applied_total) = 'integer'"
            )
    # The parts' total (all at one position); with no part, the head's, kept by the rename.
    op.execute(
        "UPDATE bar_projection SET applied_total = (SELECT applied_total FROM bar_parts"
        " ORDER BY position, id LIMIT 1) WHERE EXISTS (SELECT 1 FROM bar_parts)"
    )

    op.drop_table("bar_baselines")
    op.drop_index(op.f("ix_bars_part_id"), table_name="bars")
    with op.batch_alter_table("bars") as batch:
        batch.drop_constraint(op.f("fk_bars_part_id_bar_parts"), type_="foreignkey")
        batch.drop_column("part_id")
        batch.drop_column("position")
    op.drop_table("bar_parts")

    with op.batch_alter_table("outbox_events") as batch:
        batch.drop_constraint(op.f("ck_outbox_events_dead_is_unsequenced"), type_="check")
        batch.drop_constraint(op.f("uq_outbox_events_position"), type_="unique")
        batch.drop_column("position")


def _common_position() -> int:
    """The position every bar is at (the head's when there is no bar): 0009 keeps one applied
    total for every bar. Refused while bars differ (a backlog of some parts, a rebuild)."""
    bind = op.get_bind()
    positions, rebuilding, position = bind.execute(
        sa.text(
            "SELECT count(DISTINCT position), COALESCE(sum(CASE WHEN rebuilding THEN 1 ELSE 0 END),"
            " 0), COALESCE(min(position), (SELECT head_position FROM bar_projection))"
            " FROM bar_parts"
        )
    ).one()
    off = _scalar("SELECT count(*) FROM bars WHERE position <> :at", at=position)
    ahead = _scalar(
        "SELECT count(*) FROM outbox_events WHERE position > :at AND applied_at IS NOT NULL",
        at=position,
    )
    if positions > 1 or rebuilding or off or ahead:
        raise RuntimeError(
            f"the bars are not all at one position ({positions} part position(s), {rebuilding}"
            f" part(s) rebuilding, {off} bar(s) off their part's, {ahead} event(s) applied past"
            " it): let the workers finish the backlog and any rebuild (`postsave status`,"
            " `postsave dead retry --part` for dead parts), then downgrade below 0010 again"
        )
    return int(position)


def _apply_through(position: int) -> None:
    """Stamp applied every event the bars hold, as a settling delivery would: 0009 applies
    again any unapplied event it finds."""
    counted, applied = (
        op.get_bind()
        .execute(sa.text("SELECT counted_position, applied_position FROM bar_projection"))
        .one()
    )
    op.execute(
        sa.text(
            f"UPDATE outbox_events SET applied_at = {_now().text},"
            " state = CASE WHEN state = 'dispatched' THEN state ELSE 'processed' END,"
            " last_error = NULL WHERE position <= :at AND applied_at IS NULL"
        ).bindparams(at=position)
    )
    newly = max(position - max(int(counted), int(applied)), 0)
    op.execute(
        sa.text("UPDATE bar_projection SET events_applied = events_applied + :newly").bindparams(
            newly=newly
        )
    )
