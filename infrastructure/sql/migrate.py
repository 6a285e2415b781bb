"""Run the Alembic migrations from code (`postsave migrate`, the demo, the tests), and keep
postsave's revision where an application's own Alembic history cannot trip over it.

The migrations ship as the `migrations` package, so this works from an installed copy too;
`alembic upgrade head` in a checkout reads the same scripts through alembic.ini."""

from __future__ import annotations

from collections.abc import Collection
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, column, delete, exists, inspect, select, table

import migrations
from infrastructure.sql.schema import metadata

MIGRATIONS_DIR = Path(migrations.__file__).resolve().parent

# postsave's revision lives in a table of its own: Alembic's default, `alembic_version`, belongs
# to the application whose database postsave shares, and holds the application's revision.
VERSION_TABLE = "postsave_alembic_version"
SHARED_VERSION_TABLE = "alembic_version"

# A table that every postsave revision has.
TABLE_IN_EVERY_REVISION = "outbox_events"

# What an application's own autogenerate should leave alone (see the README).
POSTSAVE_TABLES = frozenset({*metadata.tables, VERSION_TABLE})


def alembic_config(database_url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("path_separator", "os")
    config.attributes["database_url"] = database_url
    config.attributes["configure_logging"] = False
    return config


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str = "base") -> None:
    command.downgrade(alembic_config(database_url), revision)


def current_revisions(connection: Connection) -> set[str]:
    """The revisions postsave's own version table holds (none if it has none yet)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return set(context.get_current_heads())


def revisions_in_shared_table(connection: Connection, ours: Collection[str]) -> list[str]:
    """postsave's revisions that a deployment from before its own table left in Alembic's
    default one. An application's history may use the same ids ("0001"): a revision counts as
    postsave's only where postsave's tables are, since an older postsave could not have shared
    the table with an application's history."""
    found = inspect(connection)
    if not (found.has_table(SHARED_VERSION_TABLE) and found.has_table(TABLE_IN_EVERY_REVISION)):
        return []
    shared = table(SHARED_VERSION_TABLE, column("version_num"))
    return sorted(
        revision
        for revision in connection.scalars(select(shared.c.version_num))
        if revision in ours
    )


def move_to_own_version_table(connection: Connection, script: ScriptDirectory) -> list[str]:
    """Move postsave's revision out of `alembic_version` into its own table, once: only while
    that table does not exist yet. The application's revision, if it shares the table, stays;
    the table is dropped only when postsave's was its only row. Runs in the caller's
    transaction (the upgrade's), so the move and the migrations commit or roll back together.
    Returns the revisions moved."""
    if inspect(connection).has_table(VERSION_TABLE):
        return []
    ours = {revision.revision for revision in script.walk_revisions()}
    moved = revisions_in_shared_table(connection, ours)
    if not moved:
        return []
    own = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    for revision in moved:
        own.stamp(script, revision)  # creates the table as Alembic itself would
    shared = table(SHARED_VERSION_TABLE, column("version_num"))
    connection.execute(delete(shared).where(shared.c.version_num.in_(moved)))
    if not connection.scalar(select(exists().select_from(shared))):
        connection.exec_driver_sql(f"DROP TABLE {SHARED_VERSION_TABLE}")
    return moved
