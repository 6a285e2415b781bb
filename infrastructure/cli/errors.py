"""One line for what went wrong and what to do, never with a password in it."""

from __future__ import annotations

import re

from alembic.util import CommandError
from sqlalchemy.exc import SQLAlchemyError

from infrastructure.settings import Settings
from infrastructure.urls import redact_url

# PostgreSQL refuses the connection: FATAL:  database "x" does not exist (or role "x").
_MISSING_DATABASE_OR_ROLE = re.compile(r'\b(?:database|role) "[^"]*" does not exist')
_UNDEFINED_TABLE, _UNDEFINED_COLUMN = "42P01", "42703"


def explain(error: Exception, settings: Settings) -> str:
    if isinstance(error, SQLAlchemyError):
        return _explain_database_error(error, settings.database_url)
    if isinstance(error, CommandError):
        return f"migration failed: {error}"
    return str(error)


def _explain_database_error(error: SQLAlchemyError, url: str) -> str:
    cause = getattr(error, "orig", None)
    detail = (str(cause or error).strip().splitlines() or [type(error).__name__])[0]
    where = f"(database: {redact_url(url)})"
    missing = _MISSING_DATABASE_OR_ROLE.search(detail)
    if missing:
        return f"{missing.group(0)} {where}; create it or fix POSTSAVE_DATABASE_URL"
    sqlstate = getattr(cause, "sqlstate", None)
    if sqlstate == _UNDEFINED_TABLE or "no such table" in detail:
        return (
            f"the database has no postsave tables ({detail}); "
            "run `postsave migrate` (or `alembic upgrade head`) first"
        )
    if sqlstate == _UNDEFINED_COLUMN or "no such column" in detail:
        return (
            f"the database's postsave tables are older than this postsave ({detail}); "
            "run `postsave migrate` (or `alembic upgrade head`) first"
        )
    if detail.startswith("connection failed"):
        return f"database error: {detail} {where}; check that it is up and POSTSAVE_DATABASE_URL"
    return f"database error: {detail} {where}"
