"""values beyond BIGINT: `bars.value` (`weight * sum(amounts)`) passes 2**63 - 1 once about 9.2
million foos at the largest amount are completed, for a bar at the largest weight; on
PostgreSQL it and `bar_projection.applied_total` become NUMERIC(38, 0). SQLite has no wider
integer and turns one that overflows into a REAL: there a CHECK makes such an update fail

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIGINT_MAX = 2**63 - 1
# (table, column): the sums that may pass BIGINT.
SUMS = [("bars", "value"), ("bar_projection", "applied_total")]


def _integer_only(column: str) -> tuple[str, str]:
    return f"{column}_is_integer", f"typeof({column}) = 'integer'"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in SUMS:
            # Rewrites the table under an exclusive lock: bars are blocked while it runs.
            op.alter_column(
                table,
                column,
                type_=sa.Numeric(38, 0),
                existing_type=sa.BigInteger(),
                existing_nullable=False,
            )
        return
    for table, column in SUMS:  # SQLite keeps CHECKs in the table's definition: rebuilt
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.create_check_constraint(*_integer_only(column))


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for table, column in SUMS:
            too_large = op.get_bind().scalar(
                sa.text(f"SELECT count(*) FROM {table} WHERE abs({column}) > {BIGINT_MAX}")
            )
            if too_large:
                raise RuntimeError(
                    f"{too_large} row(s) of {table}.{column} exceed BIGINT; "
                    "they cannot go below revision 0005"
                )
            op.alter_column(
                table,
                column,
                type_=sa.BigInteger(),
                existing_type=sa.Numeric(38, 0),
                existing_nullable=False,
            )
        return
    for table, column in SUMS:
        with op.batch_alter_table(table, recreate="always") as batch:
            batch.drop_constraint(op.f(f"ck_{table}_{_integer_only(column)[0]}"), type_="check")
