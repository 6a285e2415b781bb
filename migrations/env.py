"""Alembic environment: the same settings and metadata as the application.

Where it migrates, first match wins: a connection handed in as
`config.attributes["connection"]` (Alembic's recipe for running migrations from a program; the
caller owns it and its transaction), a URL handed in as `config.attributes["database_url"]`
(`postsave migrate`, the demo, the tests), else `POSTSAVE_DATABASE_URL` or its default."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from infrastructure.settings import Settings
from infrastructure.sql.engines import make_engine
from infrastructure.sql.schema import metadata

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logging", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = metadata


def database_url() -> str:
    return config.attributes.get("database_url") or Settings.from_env().database_url


def run_migrations_offline() -> None:
    context.configure(
        url=database_url(),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def migrate(connection: Connection) -> None:
    sqlite = connection.dialect.name == "sqlite"
    if sqlite and not connection.in_transaction():
        # Batch migrations rebuild tables; SQLite's foreign-key checks would refuse to drop a
        # table that others refer to. The pragma only works outside a transaction, so it goes
        # to the driver before SQLAlchemy begins one.
        connection.connection.driver_connection.execute("PRAGMA foreign_keys=OFF")  # type: ignore[union-attr]
    context.configure(
        connection=connection, target_metadata=target_metadata, render_as_batch=sqlite
    )
    with context.begin_transaction():
        context.run_migrations()
        if sqlite:
            broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
            if broken:
                raise RuntimeError(f"migration left broken foreign keys: {broken[:5]}")


def run_migrations_online() -> None:
    handed_in = config.attributes.get("connection")
    if handed_in is not None:
        migrate(handed_in)  # the caller's connection: neither committed nor closed here
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
