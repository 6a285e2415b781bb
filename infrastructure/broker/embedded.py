"""Housekeeping for the embedded broker (kombu's SQLAlchemy transport on SQLite)."""

from __future__ import annotations

from functools import cache

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import OperationalError

from infrastructure.database import SQLITE_BUSY_TIMEOUT_S


@cache
def _engine(broker_url: str) -> Engine:
    return create_engine(
        broker_url.removeprefix("sqla+"), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
    )


def prune_consumed_messages(broker_url: str) -> int:
    """The transport only flags consumed messages; delete them so the file stays small."""
    try:
        with _engine(broker_url).begin() as connection:
            result = connection.execute(text("DELETE FROM kombu_message WHERE visible = 0"))
            return int(result.rowcount)
    except OperationalError:
        return 0  # no table yet, or busy: the next dispatch prunes
