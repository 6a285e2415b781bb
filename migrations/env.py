"""Alembic environment: the same settings and metadata as the application.

Where it migrates, first match wins: a `Connection` or an `Engine` handed in as
`config.attributes["connection"]` (Alembic's recipe for running migrations from a program hands a
connection, whose transaction the caller owns; pytest-alembic hands an engine, which stays the
caller's to dispose of), a URL handed in as `config.attributes["database_url"]` (`postsave
migrate`, the demo, the tests), else `POSTSAVE_DATABASE_URL` or its default.

postsave keeps its revision in `postsave_alembic_version`, so that an application's own Alembic
history (in `alembic_version`) can share the database; an upgrade or downgrade first moves a
revision that an older postsave left in `alembic_version`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from logging.config import fileConfig

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine

from infrastructure.settings import Settings
from infrastructure.sql.engines import make_engine
from infrastructure.sql.migrate import VERSION_TABLE, move_to_own_version_table
from infrastructure.sql.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    return config.attributes.get("database_url") or Settings.from_env().database_url


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    # The tables of the application that shares the database are not postsave's to compare.
    return type_ != "table" or name in target_metadata.tables


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


@contextmanager
def foreign_keys_off(connection: Connection) -> Iterator[None]:
    """Batch migrations rebuild tables; SQLite's foreign-key checks would refuse to drop a table
    that others refer to. The pragma only works outside a transaction, so it goes to the driver
    before SQLAlchemy begins one, and is set back afterwards for a connection that goes on."""
    if connection.dialect.name != "sqlite":
        yield
        return
    driver = connection.connection.driver_connection
    was_on = driver.execute("PRAGMA foreign_keys").fetchone()[0]  # type: ignore[union-attr]
    driver.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    try:
        yield
    finally:
        if was_on:
            driver.execute("PRAGMA foreign_keys=ON")  # type: ignore[union-attr]


def writes_a_revision() -> bool:
    # upgrade, downgrade and stamp name a destination; `current` and `check` only read.
    return context.get_context().opts.get("destination_rev") is not None


def run(connection: Connection) -> None:
    """The migrations in the transaction `connection` is in."""
    sqlite = connection.dialect.name == "sqlite"
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        include_name=include_name,
        render_as_batch=sqlite,
    )
    with context.begin_transaction():
        if writes_a_revision():
            move_to_own_version_table(connection, ScriptDirectory.from_config(config))
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")


def migrate(connection: Connection) -> None:
    """A connection already in a transaction is the caller's: neither committed nor closed here.
    Otherwise the whole upgrade, the move of the revision included, is one transaction, on
    SQLite too (its engine runs DDL in SQLAlchemy's transactions)."""
    if connection.in_transaction():
        run(connection)
        return
    with foreign_keys_off(connection), connection.begin():
        run(connection)


def run_migrations_online() -> None:
    handed_in = config.attributes.get("connection")
    if isinstance(handed_in, Engine):
        with handed_in.connect() as connection:
            migrate(connection)
        return
    if handed_in is not None:
        migrate(handed_in)
        return
    engine = make_engine(database_url(), create=True)  # only migrating creates a SQLite file
    try:
        with engine.connect() as connection:
            migrate(connection)
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
