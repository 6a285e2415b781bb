"""Time from the database clock, so that every process compares leases against one clock.

SQLite stores SQLAlchemy DateTime values as 'YYYY-MM-DD HH:MM:SS.ffffff' text; these
expressions produce exactly that shape there, so comparisons stay lexicographically right."""

from __future__ import annotations

from typing import Any

from sqlalchemy import DateTime, Float, literal
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.expression import ColumnElement, FunctionElement

_SQLITE_FORMAT = "'%Y-%m-%d %H:%M:%f000'"


class db_now(FunctionElement[Any]):
    """The database's current time (not the transaction's start)."""

    type = DateTime(timezone=True)
    inherit_cache = True


class db_now_plus(FunctionElement[Any]):
    """The database's current time plus a number of seconds (a bound parameter or column)."""

    type = DateTime(timezone=True)
    inherit_cache = True


class seconds_since(FunctionElement[Any]):
    """Seconds from a timestamp column to the database's current time."""

    type = Float()
    inherit_cache = True


@compiles(db_now)
def _now_default(element: db_now, compiler: Any, **kw: Any) -> str:
    return "clock_timestamp()"


@compiles(db_now, "sqlite")
def _now_sqlite(element: db_now, compiler: Any, **kw: Any) -> str:
    return f"strftime({_SQLITE_FORMAT}, 'now')"


@compiles(db_now_plus)
def _now_plus_default(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    return f"clock_timestamp() + make_interval(secs => {compiler.process(seconds, **kw)})"


@compiles(db_now_plus, "sqlite")
def _now_plus_sqlite(element: db_now_plus, compiler: Any, **kw: Any) -> str:
    (seconds,) = element.clauses
    offset = f"printf('%+.3f seconds', {compiler.process(seconds, **kw)})"
    return f"strftime({_SQLITE_FORMAT}, 'now', {offset})"


@compiles(seconds_since)
def _since_default(element: seconds_since, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"extract(epoch from (clock_timestamp() - {compiler.process(column, **kw)}))"


@compiles(seconds_since, "sqlite")
def _since_sqlite(element: seconds_since, compiler: Any, **kw: Any) -> str:
    (column,) = element.clauses
    return f"((julianday('now') - julianday({compiler.process(column, **kw)})) * 86400.0)"


def seconds(value: float | ColumnElement[Any]) -> Any:
    """A bound float, typed so PostgreSQL accepts it as make_interval's `secs`."""
    return value if isinstance(value, ColumnElement) else literal(float(value), Float())
