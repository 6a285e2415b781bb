"""Engines. SQLite gets what concurrent processes need; PostgreSQL goes through psycopg 3."""

from __future__ import annotations

import math
import select
import time
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError

from infrastructure.files import (
    SQLITE_BUSY_TIMEOUT_S,
    DatabaseFileError,
    create_private_file,
    sqlite_file,
)
from infrastructure.sql.commits import bounded_commit_class

CONNECT_TIMEOUT_S = 10
IDLE_PING_S = 1.0


def _prepare_sqlite_file(url: str, create: bool) -> None:
    # sqlite3.connect would create a missing file, readable by all under the usual umask: a
    # command that only reads must not leave an empty database behind, and a new one is private.
    path = sqlite_file(url)
    if path is None or path.exists():
        return
    if not create:
        raise DatabaseFileError(
            f"database file {path} does not exist; run `postsave migrate` first "
            "(or fix POSTSAVE_DATABASE_URL)"
        )
    try:
        create_private_file(path)
    except OSError as error:
        raise DatabaseFileError(
            f"cannot create database file {path} ({error.strerror or error}); "
            "fix POSTSAVE_DATABASE_URL or the directory's permissions"
        ) from error


def _sqlite_engine(url: str, create: bool) -> Engine:
    _prepare_sqlite_file(url, create)
    engine = create_engine(url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S})

    @event.listens_for(engine, "connect")
    def _configure(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(connection: Any) -> None:
        # Take the write lock up front: a deferred transaction that reads and then writes can
        # fail at once with "database is locked" instead of waiting out the busy timeout.
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def make_engine(
    url: str,
    statement_timeout_s: float | None = None,
    *,
    create: bool = False,
    connect_timeout_s: float = CONNECT_TIMEOUT_S,
) -> Engine:
    """One engine per process (create it after a fork, never before).

    A SQLite file that does not exist raises DatabaseFileError, unless `create` (migrations):
    then it is created 0600, in directories created 0700."""
    if make_url(url).get_backend_name() == "sqlite":
        return _sqlite_engine(url, create)
    engine = create_engine(
        url,
        pool_size=5,
        max_overflow=5,
        # The connection returned last goes out first: a caller on its own keeps one warm
        # connection (and server process) instead of cycling through all those a burst opened.
        pool_use_lifo=True,
        connect_args=postgres_timeouts(statement_timeout_s, connect_timeout_s),
    )
    connection_class = bounded_commit_class(statement_timeout_s)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, _record: Any, cargs: Any, cparams: Any) -> Any:
        return connection_class.connect(*cargs, **cparams)

    ping_when_idle(engine)
    return engine


def ping_when_idle(engine: Engine, idle_s: float = IDLE_PING_S) -> None:
    """Ping a pooled connection on checkout only if it sat idle for `idle_s`, or if the server
    has said something since it was used: a ping on every checkout (`pool_pre_ping`) is a round
    trip on every save.

    A server that ends a session (a restart, `pg_terminate_backend`, an idle timeout) sends a
    last message and closes the socket, which makes it readable: checked without a round trip,
    that connection is pinged, found dead and replaced before any unit of work sees it. What
    sends nothing (a network partition) is met by the first statement, as before a ping."""

    @event.listens_for(engine, "checkin")
    def _note_idle_since(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        idle_since = record.info.get("idle_since")
        if idle_since is None:
            return  # new
        if time.monotonic() - idle_since < idle_s and not _has_news(dbapi_connection):
            return  # just used, and the server has said nothing since
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(str(error)) from error


def _has_news(dbapi_connection: Any) -> bool:
    """Whether the server sent something to an idle connection: readable without waiting."""
    try:
        readable, _, _ = select.select([dbapi_connection.fileno()], [], [], 0)
    except (OSError, ValueError):
        return True  # no usable socket: let the ping decide
    return bool(readable)


def postgres_timeouts(
    statement_timeout_s: float | None, connect_timeout_s: float = CONNECT_TIMEOUT_S
) -> dict[str, Any]:
    """Bounded waits on PostgreSQL: connecting, and every statement, lock waits included, so a
    stuck lock fails into the retry path instead of holding a worker forever. 0 or None: no
    statement limit (an operator's long rebuild, say)."""
    # libpq takes whole seconds, and treats less than 2 as 2.
    options: dict[str, Any] = {"connect_timeout": max(math.ceil(connect_timeout_s), 2)}
    if statement_timeout_s:
        options["options"] = f"-c statement_timeout={round(statement_timeout_s * 1000)}"
    return options
