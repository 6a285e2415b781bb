"""The little SQL that the migration tests read and write with."""

from __future__ import annotations

from sqlalchemy import create_engine, inspect, text

from infrastructure.sql.migrate import VERSION_TABLE, upgrade


def tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return set(inspect(connection).get_table_names())
    finally:
        engine.dispose()


def scalar_rows(url: str, sql: str) -> list[tuple[object, ...]]:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            return [tuple(row) for row in connection.execute(text(sql))]
    finally:
        engine.dispose()


def execute(url: str, *statements: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def migrated_as_before_its_own_table(url: str, revision: str) -> None:
    """The database as a postsave from before `postsave_alembic_version` left it at `revision`:
    the same tables, and the revision in Alembic's default table, created as Alembic creates it."""
    upgrade(url, revision)
    execute(
        url,
        f"DROP TABLE {VERSION_TABLE}",
        "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL, "
        "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))",
        f"INSERT INTO alembic_version (version_num) VALUES ('{revision}')",
    )
