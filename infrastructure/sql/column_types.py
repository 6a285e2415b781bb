"""Column types shared by the tables: postsave's and the team's bar columns (bar_table)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, BigInteger, CheckConstraint, DateTime, Integer, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from infrastructure.limits import BIGINT_MAX

# SQLite only auto-increments an INTEGER PRIMARY KEY.
Id = BigInteger().with_variant(Integer(), "sqlite")
Payload = JSON().with_variant(JSONB(), "postgresql")
Timestamp = DateTime(timezone=True)


class BigSum(TypeDecorator[int]):
    """A sum that may pass BIGINT: a bar's value, `weight * sum(amounts)`, passes 2**63 - 1
    once about 9.2 million foos at MAX_AMOUNT are completed, for a bar at MAX_WEIGHT. The
    projection's applied total has the same type, so that `weight * applied_total` is
    computed in it.

    NUMERIC(38, 0) on PostgreSQL: exact, and far beyond any reachable total. On SQLite an
    INTEGER (64 bits) guarded by `integer_only`. Always a Python int to the domain, never a
    Decimal or a float."""

    impl = Numeric(38, 0)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(Numeric(38, 0))
        return dialect.type_descriptor(BigInteger())

    def process_bind_param(self, value: int | None, dialect: Dialect) -> int | None:
        # sqlite3 would raise a bare OverflowError; this one reaches the caller as a
        # database error that says what to do.
        fits = value is None or -BIGINT_MAX - 1 <= value <= BIGINT_MAX
        if dialect.name == "sqlite" and not fits:
            raise OverflowError(
                f"{value} does not fit SQLite's 64-bit integers; values this large need PostgreSQL"
            )
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> int | None:
        return None if value is None else int(value)


def integer_only(column: str) -> CheckConstraint:
    """SQLite's guard for a BigSum column: SQLite turns an integer that overflows into a REAL,
    so an overflowing update fails here instead of storing a rounded value."""
    check = CheckConstraint(f"typeof({column}) = 'integer'", name=f"{column}_is_integer")
    return check.ddl_if(dialect="sqlite")
