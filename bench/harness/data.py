"""What every contender's database holds besides postsave's own schema, and how it is seeded.

`bench_events` records, for the contenders that have no outbox, when an event was committed
and when its delta reached the bars, both from the database clock (clock_timestamp()), so their
latencies are measured exactly like postsave's outbox_events.occurred_at / applied_at."""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg

BENCH_TABLES = """
CREATE TABLE bench_events (
    id bigserial PRIMARY KEY,
    foo_id bigint NOT NULL,
    delta bigint NOT NULL,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    applied_at timestamptz
);
CREATE TABLE bench_ticks (
    id bigserial PRIMARY KEY,
    ticked_at timestamptz NOT NULL,
    foos_scanned bigint NOT NULL,
    bars_updated bigint NOT NULL,
    events_covered bigint NOT NULL
)
"""

# The event stream: foo i (ids start at 1) completes with this amount, in every contender;
# bar i has this weight. %% is a literal % for psycopg.
AMOUNT_SQL = "1 + (g * 7919) %% 100"
WEIGHT_SQL = "1 + g %% 10"

# Completes the pending foos with ids in [%s, %s] in one statement: `done` (id, amount) is what
# the INSERT appended to it records as their events.
COMPLETE_RANGE_SQL = (
    "WITH done AS (UPDATE foos SET state = 'completed', version = version + 1"
    " WHERE id BETWEEN %s AND %s AND state = 'pending' RETURNING id, amount)"
)


def insert_bars(connection: psycopg.Connection, count: int, per_weight: int = 0) -> None:
    """`count` more bars, each at `per_weight` x its weight: the deltas already applied."""
    connection.execute(
        f"INSERT INTO bars (weight, value) SELECT {WEIGHT_SQL}, ({WEIGHT_SQL}) * %s"
        " FROM generate_series(1, %s) g",
        (per_weight, count),
    )


def row(conninfo: str, statement: str, *params: object) -> tuple[Any, ...]:
    """One statement in autocommit (VACUUM, counts, sums): its first row, () if none."""
    with psycopg.connect(conninfo, autocommit=True) as connection:
        cursor = connection.execute(statement, params or None)
        found = cursor.fetchone() if cursor.description else None
    return tuple(found or ())


def execute(conninfo: str, statement: str, *params: object) -> Any:
    """row()'s first value, None if none."""
    return (row(conninfo, statement, *params) or (None,))[0]


def seed_postgres(conninfo: str, bars: int, foos: int) -> None:
    """Bench tables, `bars` bars at value 0 and `foos` pending foos, on a migrated database."""
    with psycopg.connect(conninfo) as connection:
        for statement in BENCH_TABLES.split(";"):
            connection.execute(statement)
        insert_bars(connection, bars)
        connection.execute(
            "INSERT INTO foos (amount, state, version) "
            f"SELECT {AMOUNT_SQL}, 'pending', 1 FROM generate_series(1, %s) g",
            (foos,),
        )


def seed_sqlite(path: str, bars: int, foos: int) -> None:
    with sqlite3.connect(path, timeout=30) as connection:
        connection.executemany(
            "INSERT INTO bars (weight, value) VALUES (?, 0)",
            [(1 + g % 10,) for g in range(1, bars + 1)],  # WEIGHT_SQL
        )
        connection.executemany(
            "INSERT INTO foos (id, amount, state, version) VALUES (?, ?, 'pending', 1)",
            [(g, 1 + (g * 7919) % 100) for g in range(1, foos + 1)],  # AMOUNT_SQL
        )
    connection.close()


# Every bar moves by `delta * weight` per event, so value / weight is one number T for all bars
# (min = max), and T - sum(completed amounts) is how far the bars are off the invariant, in
# amount units: negative when deltas were lost, positive when applied twice. A scenario keeps
# the invariant when this drift is the same after it as before it.
DRIFT_SQL = """
SELECT min(value * 1.0 / weight), max(value * 1.0 / weight),
       (SELECT coalesce(sum(amount), 0) FROM foos WHERE state = 'completed')
FROM bars WHERE weight > 0
"""
