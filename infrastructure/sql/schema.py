"""The tables. Every constraint is named by the convention, so migrations can refer to it."""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Column,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    text,
)
from sqlalchemy.types import TypeDecorator

from domain.foo import FooState
from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.sql.bar_table import bar_columns
from infrastructure.sql.clock import db_now
from infrastructure.sql.column_types import BigSum, Id, Payload, Timestamp, integer_only

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(column_0_label)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


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

# The parts of the bars (domain.parts): how far each has applied, and its retries.
bar_parts = Table(
    "bar_parts",
    metadata,
    Column("id", Id, primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("applied_total", BigSum(), nullable=False),
    Column("bars", Integer, nullable=False, server_default="0"),
    Column("state", String(16), nullable=False, server_default="ready"),
    Column("failures", Integer, nullable=False, server_default="0"),
    Column("available_at", Timestamp, nullable=False, server_default=db_now()),
    Column("last_error", Text),
    Column("rebuilding", Boolean, nullable=False, server_default=text("false")),
    # Its bars' baselines are at this position or after, with this sum of deltas through it.
    Column("baseline_position", BigInteger, nullable=False),
    Column("baseline_total", BigSum(), nullable=False),
    Column("passed_at", Timestamp),
    CheckConstraint("state IN ('ready', 'dead')", name="state_known"),
    CheckConstraint("position >= baseline_position", name="position_past_baseline"),
    CheckConstraint("bars >= 0", name="bars_not_negative"),
    CheckConstraint("failures >= 0", name="failures_not_negative"),
    integer_only("applied_total"),
    integer_only("baseline_total"),
)

# The bars: postsave's bookkeeping columns, then the team's own (bar_table.bar_columns).
BOOKKEEPING_COLUMNS = ("id", "part_id", "position", "created_at")
bars = Table(
    "bars",
    metadata,
    Column("id", Id, primary_key=True),
    Column("part_id", Id, ForeignKey("bar_parts.id", ondelete="RESTRICT"), nullable=False),
    # The position the bar's state is at: its part's, or ahead of it while a rebuild replays.
    Column("position", BigInteger, nullable=False),
    Column("created_at", Timestamp, nullable=False, server_default=db_now()),
    *bar_columns(),
)
Index("ix_bars_part_id", bars.c.part_id, bars.c.id)
BAR_FIELDS = tuple(column for column in bars.c if column.name not in BOOKKEEPING_COLUMNS)

# Each bar's state as of a position: as created, or as the last prune found it. A replay
# (verify, rebuild) starts here; the events before it may be gone from the log.
bar_baselines = Table(
    "bar_baselines",
    metadata,
    Column("bar_id", Id, ForeignKey("bars.id", ondelete="CASCADE"), primary_key=True),
    Column("position", BigInteger, nullable=False),
    Column("state", Payload, nullable=False),
)

# One row: what the relay has sequenced (the head, with the sum of its deltas), how far
# every part has applied, how many events that is, and the recalculation the bars hold.
bar_projection = Table(
    "bar_projection",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("head_position", BigInteger, nullable=False, server_default="0"),
    Column("head_total", BigSum(), nullable=False, server_default="0"),
    Column("applied_position", BigInteger, nullable=False, server_default="0"),
    Column("events_applied", BigInteger, nullable=False),
    # The highest position ever applied: a rebuild's replay does not count events again.
    Column("counted_position", BigInteger, nullable=False, server_default="0"),
    Column(
        "recalculation",
        String(200),
        nullable=False,
        server_default=EXAMPLE_RECALCULATION,
    ),
    CheckConstraint("id = 1", name="single_row"),
    CheckConstraint("applied_position <= head_position", name="applied_within_head"),
    integer_only("head_total"),
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
    # Its place in the one order every bar sees; given by the relay when it first dispatches.
    Column("position", BigInteger, unique=True),
    CheckConstraint("state IN ('pending', 'dispatched', 'processed', 'dead')", name="state_known"),
    CheckConstraint("dispatches >= 0", name="dispatches_not_negative"),
    CheckConstraint("failures >= 0", name="failures_not_negative"),
    # What the states imply of applied_at (domain.outbox's transitions keep to it, and so does
    # any hand-written fix): a processed event is applied; a pending or dead one is not, since
    # a pass that applies an event finishes it and an applied event never fails. A dispatched
    # one may be either: another delivery's pass may have applied it while its message is out.
    CheckConstraint(PROCESSED_IS_APPLIED, name="processed_is_applied"),
    CheckConstraint(WAITING_IS_UNAPPLIED, name="waiting_is_unapplied"),
    # An event is dead only before it has a place in the order: no part waits for it.
    CheckConstraint("state <> 'dead' OR position IS NULL", name="dead_is_unsequenced"),
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
    Column("part_failures", BigInteger, nullable=False, server_default="0"),
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
