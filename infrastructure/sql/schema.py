"""The tables. Every constraint is named by the convention, so migrations can refer to it."""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    Numeric,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from domain.foo import FooState
from infrastructure.limits import BIGINT_MAX
from infrastructure.sql.clock import db_now

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

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


class FooStateColumn(TypeDecorator[FooState]):
    """Stores a FooState as its plain value ('pending'), whatever the driver does with enums."""

    impl = String(16)
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: object) -> str | None:
        return None if value is None else FooState(value).value

    def process_result_value(self, value: str | None, dialect: object) -> FooState | None:
        return None if value is None else FooState(value)


foos = Table(
    "foos",
    metadata,
    Column("id", Id, primary_key=True),
    Column("amount", BigInteger, nullable=False),
    Column("state", FooStateColumn(), nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    CheckConstraint("amount >= 0", name="amount_not_negative"),
    CheckConstraint("state IN ('pending', 'completed', 'cancelled')", name="state_known"),
)

bars = Table(
    "bars",
    metadata,
    Column("id", Id, primary_key=True),
    Column("weight", BigInteger, nullable=False),
    # No index on value: every event rewrites it, and an unindexed column lets PostgreSQL
    # update the row in place (HOT) without touching any index.
    Column("value", BigSum(), nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    CheckConstraint("weight >= 0", name="weight_not_negative"),
    integer_only("value"),
)

# One row: the sum of every delta applied to the bars. Its row lock orders bar creation
# against event application, so a bar created mid-flight misses no event and gets none twice.
bar_projection = Table(
    "bar_projection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("applied_total", BigSum(), nullable=False),
    Column("events_applied", BigInteger, nullable=False),
    CheckConstraint("id = 1", name="single_row"),
    integer_only("applied_total"),
)

PROCESSED_IS_APPLIED = "state <> 'processed' OR applied_at IS NOT NULL"
WAITING_IS_UNAPPLIED = "state NOT IN ('pending', 'dead') OR applied_at IS NULL"

outbox_events = Table(
    "outbox_events",
    metadata,
    Column("id", Id, primary_key=True),
    Column("event_type", String(64), nullable=False),
    Column("payload", Payload, nullable=False),
    Column("state", String(16), nullable=False, server_default="pending"),
    # Messages sent for the event: each lease counts one.
    Column("dispatches", Integer, nullable=False, server_default="0"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("occurred_at", Timestamp, nullable=False, server_default=db_now()),
    # When the relay may claim the event: now for a new event, the lease's end once dispatched,
    # the backoff's end after a failure.
    Column("available_at", Timestamp, nullable=False, server_default=db_now()),
    Column("dispatched_at", Timestamp),
    # When a pass put its delta on the bars (it may stay dispatched until its message is back).
    Column("applied_at", Timestamp),
    Column("last_error", Text),
    CheckConstraint("state IN ('pending', 'dispatched', 'processed', 'dead')", name="state_known"),
    CheckConstraint("dispatches >= 0", name="dispatches_not_negative"),
    CheckConstraint("failures >= 0", name="failures_not_negative"),
    # What the states imply of applied_at (domain.outbox's transitions keep to it, and so does
    # any hand-written fix): a processed event is applied; a pending or dead one is not, since
    # a pass that applies an event finishes it and an applied event never fails. A dispatched
    # one may be either: another delivery's pass may have applied it while its message is out.
    CheckConstraint(PROCESSED_IS_APPLIED, name="processed_is_applied"),
    CheckConstraint(WAITING_IS_UNAPPLIED, name="waiting_is_unapplied"),
)

_unfinished = text("state IN ('pending', 'dispatched')")
# The relay's hot path reads only unfinished events: a partial index keeps the claim's cost
# independent of how many finished events the log holds.
Index(
    "ix_outbox_events_due",
    outbox_events.c.available_at,
    outbox_events.c.id,
    postgresql_where=_unfinished,
    sqlite_where=_unfinished,
)

_dead = text("state = 'dead'")
# Dead events stay until an operator retries them: counting them reads this index, not the log.
Index("ix_outbox_events_dead", outbox_events.c.id, postgresql_where=_dead, sqlite_where=_dead)

# One row: counters kept as the relay and the deliveries go, and when the relay last committed
# a batch (by the database's clock, so any host can tell). Monitoring reads this, never the
# event log.
outbox_counters = Table(
    "outbox_counters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("relay_passes", BigInteger, nullable=False, server_default="0"),
    Column("last_relay_pass_at", Timestamp),
    Column("events_dispatched", BigInteger, nullable=False, server_default="0"),
    Column("leases_expired", BigInteger, nullable=False, server_default="0"),
    Column("event_failures", BigInteger, nullable=False, server_default="0"),
    Column("events_dead", BigInteger, nullable=False, server_default="0"),
    CheckConstraint("id = 1", name="single_row"),
)

# One row: the events pruned from the log, folded (domain.outbox.Checkpoint). A rebuild is
# this plus the events the log still holds.
projection_checkpoint = Table(
    "projection_checkpoint",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("applied_total", BigSum(), nullable=False, server_default="0"),
    Column("events_applied", BigInteger, nullable=False, server_default="0"),
    Column("last_pruned_id", BigInteger, nullable=False, server_default="0"),
    Column("pruned_at", Timestamp),
    CheckConstraint("id = 1", name="single_row"),
    integer_only("applied_total"),
)

# The guard of exactly-once effect: the primary key refuses to apply one event twice.
applied_events = Table(
    "applied_events",
    metadata,
    Column(
        "event_id",
        Id,
        ForeignKey("outbox_events.id", ondelete="RESTRICT"),
        primary_key=True,
    ),
    Column("applied_at", Timestamp, nullable=False, server_default=db_now()),
)
