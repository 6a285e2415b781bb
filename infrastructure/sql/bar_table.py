"""The bars' own columns: the table mapping of the team's Bar (domain/bar.py).

Each column here is a field of the Bar: a bar is loaded as `Bar(**{column: value})` and a
pass writes back every one of them. postsave adds its bookkeeping (id, part, position,
created_at) around them (schema.bars). A team whose bar has other fields lists them here and
adds them in one migration of its own (docs/extending.md)."""

from __future__ import annotations

from sqlalchemy import BigInteger, CheckConstraint, Column
from sqlalchemy.schema import SchemaItem

from infrastructure.sql.column_types import BigSum, integer_only


def bar_columns() -> list[SchemaItem]:
    return [
        Column("weight", BigInteger, nullable=False),
        # No index on value: every pass rewrites it, and an unindexed column lets PostgreSQL
        # update the row in place (HOT) without touching any index.
        Column("value", BigSum(), nullable=False),
        CheckConstraint("weight >= 0", name="weight_not_negative"),
        integer_only("value"),
    ]
