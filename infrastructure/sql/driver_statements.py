"""Statements sent straight through the driver, psycopg 3 or psycopg2: those that every save
sends on PostgreSQL.

SQLAlchemy's execution path (execution context, parameter processing, result object) costs
about 70 us a statement, where a round trip to a local server is about 100 us: a third of a
foo's save. These statements are still written in Core and compiled once, by SQLAlchemy's own
psycopg dialect, so their SQL is what `Connection.execute` would send; both drivers take its
`%(name)s` parameters and its casts. They run on the connection's driver connection, in
whatever transaction it is in; an error comes out as SQLAlchemy's, and a lost connection is
invalidated, as `Connection.execute` would do."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import Connection
from sqlalchemy.dialects.postgresql.psycopg import dialect as psycopg_dialect
from sqlalchemy.exc import DBAPIError, StatementError
from sqlalchemy.sql import ClauseElement, Executable
from sqlalchemy.sql.compiler import SQLCompiler

_DIALECT = psycopg_dialect()
_CURSOR = "postsave_cursor"  # in the pool's info for a driver connection: dropped with it


class DriverStatement:
    def __init__(self, statement: Executable) -> None:
        self.statement = statement  # for `Connection.execute`, on other databases
        compiled = cast(SQLCompiler, cast(ClauseElement, statement).compile(dialect=_DIALECT))
        self.sql = str(compiled)
        # The values Core binds by itself (the 1 of `version + 1`): sent with every call.
        self.fixed = {
            name: value
            for name, value in compiled.params.items()
            if not compiled.binds[name].required
        }

    def rows(self, connection: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        """Run it with `params` (values the driver adapts: a JSON value as its text); its rows."""
        pooled = connection.connection
        cursor = pooled.info.get(_CURSOR)
        if cursor is None:  # one per driver connection, kept for its life: a new one costs 10 us
            cursor = pooled.info[_CURSOR] = pooled.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            # Two calls, not a chain: psycopg2's `execute` returns None, psycopg 3's the cursor.
            cursor.execute(self.sql, {**self.fixed, **params})
            return cast(list[tuple[Any, ...]], cursor.fetchall())
        except connection.dialect.loaded_dbapi.Error as error:
            raise _as_sqlalchemy_error(connection, error, self.sql, params) from error


def _as_sqlalchemy_error(
    connection: Connection, error: Exception, sql: str, params: dict[str, Any]
) -> StatementError:
    dialect = connection.dialect
    lost = dialect.is_disconnect(cast(Any, error), connection.connection.dbapi_connection, None)
    wrapped = DBAPIError.instance(
        sql,
        params,
        error,
        dialect.loaded_dbapi.Error,
        hide_parameters=connection.engine.hide_parameters,
        connection_invalidated=lost,
        dialect=dialect,
    )
    if lost:
        connection.invalidate(error)  # the pool opens a new one; this one is gone
    return wrapped
