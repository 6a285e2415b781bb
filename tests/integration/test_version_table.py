"""postsave's revision in `postsave_alembic_version`: a database that an older postsave left
with its revision in `alembic_version` moves on its next upgrade, with every row kept."""

from __future__ import annotations

import pytest
from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from infrastructure.sql.engines import make_engine
from infrastructure.sql.migrate import (
    MIGRATIONS_DIR,
    VERSION_TABLE,
    alembic_config,
    downgrade,
    upgrade,
)
from tests.integration.databases import (
    execute,
    migrated_as_before_its_own_table,
    scalar_rows,
    tables,
)

SCRIPT = ScriptDirectory.from_config(alembic_config("sqlite://"))
HEAD = SCRIPT.get_current_head()
# The last revision an older postsave can have left in alembic_version.
LAST_IN_SHARED_TABLE = "0008"
# What a database at 0008 holds, as later revisions keep it: 0010 adds parts, positions and
# baselines, turns applied_events into positions and the applied total into the head's.
KEPT = {
    "foos": "SELECT * FROM foos ORDER BY id",
    "bars": "SELECT id, weight, value FROM bars ORDER BY id",
    "outbox_events": "SELECT id, event_type, payload, state, dispatches, applied_at"
    " FROM outbox_events ORDER BY id",
}


def insert_rows_at_0008(url: str) -> None:
    execute(
        url,
        "INSERT INTO foos (amount, state, version) VALUES (120, 'completed', 2), (7, 'pending', 1)",
        "INSERT INTO bars (weight, value) VALUES (3, 360), (0, 0)",
        "UPDATE bar_projection SET applied_total = 120, events_applied = 1",
        # A processed event has been applied: postsave stamps applied_at as it applies it.
        "INSERT INTO outbox_events (event_type, payload, state, dispatches, applied_at) VALUES "
        "('FooCompleted', '{\"foo_id\": 1, \"delta\": 120}', 'processed', 1, "
        "'2026-12-03 12:00:00'), "
        "('FooRevised', '{\"foo_id\": 1, \"delta\": -20}', 'pending', 0, NULL)",
        "INSERT INTO applied_events (event_id) VALUES (1)",
    )


def snapshot(url: str) -> dict[str, list[tuple[object, ...]]]:
    return {table: scalar_rows(url, query) for table, query in KEPT.items()}


def own_revision(url: str) -> list[tuple[object, ...]]:
    return scalar_rows(url, f"SELECT version_num FROM {VERSION_TABLE}")


def test_a_database_at_0008_in_alembic_version_upgrades_to_head_with_every_row_kept(
    empty_url: str,
) -> None:
    migrated_as_before_its_own_table(empty_url, LAST_IN_SHARED_TABLE)
    insert_rows_at_0008(empty_url)
    before = snapshot(empty_url)

    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert "alembic_version" not in tables(empty_url)  # postsave's row was its only one
    assert snapshot(empty_url) == before
    assert scalar_rows(empty_url, "SELECT head_total, events_applied FROM bar_projection") == [
        (120, 1)
    ]
    command.check(alembic_config(empty_url))  # and no drift


def test_an_older_revision_in_alembic_version_moves_and_then_upgrades(empty_url: str) -> None:
    migrated_as_before_its_own_table(empty_url, "0007")

    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert "alembic_version" not in tables(empty_url)
    if empty_url.startswith("postgresql"):  # 0008 ran after the move: foos' fillfactor is set
        assert scalar_rows(empty_url, "SELECT reloptions FROM pg_class WHERE relname = 'foos'") != [
            (None,)
        ]


def test_the_applications_revision_in_a_shared_alembic_version_stays_where_it_is(
    empty_url: str,
) -> None:
    migrated_as_before_its_own_table(empty_url, LAST_IN_SHARED_TABLE)
    execute(empty_url, "INSERT INTO alembic_version (version_num) VALUES ('app_0003')")

    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [("app_0003",)]


def test_an_alembic_version_without_a_postsave_revision_is_left_alone(empty_url: str) -> None:
    execute(
        empty_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "INSERT INTO alembic_version (version_num) VALUES ('app_0003')",
    )

    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [("app_0003",)]


def test_an_applications_revision_with_a_postsave_id_is_not_taken_for_postsaves(
    empty_url: str,
) -> None:
    """Sequential ids are common: without postsave's tables, an "0001" is the application's."""
    execute(
        empty_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "INSERT INTO alembic_version (version_num) VALUES ('0001')",
    )

    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [("0001",)]


def test_once_postsave_has_its_own_table_alembic_version_is_never_read_again(
    empty_url: str,
) -> None:
    upgrade(empty_url)
    execute(
        empty_url,
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        "INSERT INTO alembic_version (version_num) VALUES ('0001')",  # an application's own 0001
    )

    downgrade(empty_url, "0007")
    upgrade(empty_url)

    assert own_revision(empty_url) == [(HEAD,)]
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [("0001",)]


def test_a_failed_upgrade_leaves_the_revision_where_it_was(empty_url: str) -> None:
    """The move is in the upgrade's transaction: when a migration fails, nothing moved."""
    migrated_as_before_its_own_table(empty_url, "0005")
    execute(empty_url, "CREATE TABLE outbox_counters (stray INTEGER)")  # 0006 creates it

    with pytest.raises(DBAPIError, match="outbox_counters"):
        upgrade(empty_url)

    assert VERSION_TABLE not in tables(empty_url)
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [("0005",)]


def test_reading_the_revision_moves_nothing(empty_url: str) -> None:
    migrated_as_before_its_own_table(empty_url, LAST_IN_SHARED_TABLE)

    command.current(alembic_config(empty_url))

    assert VERSION_TABLE not in tables(empty_url)
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [
        (LAST_IN_SHARED_TABLE,)
    ]


def test_the_move_rolls_back_with_the_transaction_of_a_connection_handed_in(
    empty_url: str,
) -> None:
    migrated_as_before_its_own_table(empty_url, LAST_IN_SHARED_TABLE)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    engine = make_engine(empty_url)  # on SQLite, the engine that runs DDL in transactions
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))  # the caller's transaction has begun
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
            assert connection.scalar(text(f"SELECT version_num FROM {VERSION_TABLE}")) == HEAD
            connection.rollback()
    finally:
        engine.dispose()

    assert VERSION_TABLE not in tables(empty_url)
    assert scalar_rows(empty_url, "SELECT version_num FROM alembic_version") == [
        (LAST_IN_SHARED_TABLE,)
    ]
