"""What every contender's database holds besides postsave's own schema, and how it is seeded.

`bench_events` records, for the contenders that have no outbox, when an event was committed
and when its delta reached the bars, both from the database clock (clock_timestamp()), so their
latencies are measured exactly like postsave's outbox_events.occurred_at / applied_at;
`bench_passes` records postsave's passes, part by part. Bars are made as postsave makes them:
in parts, each with its baseline."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from typing import Any

import psycopg

from bench.harness.product import postsave
from domain import use_cases
from domain.parts import DEFAULT_PART_SIZE
from domain.recalculation import EXAMPLE_RECALCULATION

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
);
-- postsave's passes, one row each, from a trigger on the part's update that ends a pass
-- (its passed_at): from its transaction's start to that update, and what it moved.
CREATE TABLE bench_passes (
    id bigserial PRIMARY KEY,
    part_id bigint NOT NULL,
    from_position bigint NOT NULL,
    to_position bigint NOT NULL,
    bars integer NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at timestamptz NOT NULL
);
CREATE FUNCTION bench_record_pass() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO bench_passes (part_id, from_position, to_position, bars, started_at, ended_at)
    VALUES (NEW.id, OLD.position, NEW.position, NEW.bars, now(), clock_timestamp());
    RETURN NULL;
END $$;
CREATE TRIGGER bench_record_pass AFTER UPDATE OF passed_at ON bar_parts FOR EACH ROW
    WHEN (NEW.passed_at IS DISTINCT FROM OLD.passed_at) EXECUTE FUNCTION bench_record_pass()
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


def insert_bars(
    connection: psycopg.Connection,
    count: int,
    part_size: int = DEFAULT_PART_SIZE,
    recalculation: str = EXAMPLE_RECALCULATION,
) -> None:
    """`count` more bars, exactly as domain.use_cases.create_bars makes them, in set-based
    statements: the first bars record `recalculation` as the bars'; the last part is filled
    while it has room, then new parts at the head; each bar at its part's position, valued
    weight x its part's applied total, and its baseline too."""
    connection.execute(
        "UPDATE bar_projection SET recalculation = %s WHERE NOT EXISTS (SELECT FROM bar_parts)",
        (recalculation,),
    )
    last = connection.execute(
        "SELECT id, bars FROM bar_parts ORDER BY id DESC LIMIT 1 FOR UPDATE"
    ).fetchone()
    room = min(count, part_size - last[1]) if last and last[1] < part_size else 0
    fresh = connection.execute(
        "INSERT INTO bar_parts (position, applied_total, baseline_position, baseline_total)"
        " SELECT head_position, head_total, head_position, head_total"
        " FROM bar_projection, generate_series(1, %s) RETURNING id",
        (-(-(count - room) // part_size),),
    ).fetchall()
    before = connection.execute("SELECT coalesce(max(id), 0) FROM bars").fetchone()
    assert before is not None
    connection.execute(
        "INSERT INTO bars (part_id, position, weight, value)"
        f" SELECT p.id, p.position, {WEIGHT_SQL}, ({WEIGHT_SQL}) * p.applied_total"
        " FROM generate_series(1, %(count)s) g JOIN bar_parts p ON p.id = CASE"
        " WHEN g <= %(room)s THEN %(last)s"
        " ELSE (%(fresh)s::bigint[])[(g - %(room)s - 1) / %(size)s + 1] END ORDER BY g",
        {
            "count": count,
            "room": room,
            "last": last[0] if last else None,
            "fresh": sorted(found[0] for found in fresh),
            "size": part_size,
        },
    )
    connection.execute(
        "UPDATE bar_parts p SET bars = p.bars + added.n FROM (SELECT part_id, count(*) AS n"
        " FROM bars WHERE id > %s GROUP BY part_id) added WHERE p.id = added.part_id",
        (before[0],),
    )
    connection.execute(
        "INSERT INTO bar_baselines (bar_id, position, state) SELECT id, position,"
        " jsonb_build_object('weight', weight, 'value', value) FROM bars WHERE id > %s",
        (before[0],),
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
        connection.execute(BENCH_TABLES)
        insert_bars(connection, bars)
        connection.execute(
            "INSERT INTO foos (amount, state, version) "
            f"SELECT {AMOUNT_SQL}, 'pending', 1 FROM generate_series(1, %s) g",
            (foos,),
        )


def seed_sqlite(database_url: str, bars: int, foos: int) -> None:
    """The embedded default's: its bars through domain.use_cases.create_bars."""
    with postsave(database_url) as container:
        for weight in range(1, 11):  # WEIGHT_SQL: bars g = weight - 1, weight - 1 + 10, ...
            if per_weight := len(range(weight - 1 or 10, bars + 1, 10)):
                use_cases.create_bars(container.uow(), weight, per_weight)
    path = database_url.removeprefix("sqlite:///")
    with closing(sqlite3.connect(path, timeout=30)) as connection, connection:
        connection.executemany(
            "INSERT INTO foos (id, amount, state, version) VALUES (?, ?, 'pending', 1)",
            [(g, 1 + (g * 7919) % 100) for g in range(1, foos + 1)],  # AMOUNT_SQL
        )


# Every bar moves by `delta * weight` per event, so value / weight is one number T for all bars
# (min = max), and T - sum(completed amounts) is how far the bars are off the invariant, in
# amount units: negative when deltas were lost, positive when applied twice. A scenario keeps
# the invariant when this drift is the same after it as before it.
DRIFT_SQL = """
SELECT min(value * 1.0 / weight), max(value * 1.0 / weight),
       (SELECT coalesce(sum(amount), 0) FROM foos WHERE state = 'completed')
FROM bars WHERE weight > 0
"""
