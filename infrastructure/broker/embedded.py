"""Housekeeping for the embedded broker (kombu's SQLAlchemy transport on SQLite)."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

from sqlalchemy import Engine, bindparam, create_engine, text
from sqlalchemy.exc import OperationalError

from infrastructure.files import SQLITE_BUSY_TIMEOUT_S

# The transport only flags consumed messages, and has no TTL: a message nobody took stays after
# its `expires` has passed, while the relay dispatches its event again when the lease ends.
# Before each dispatch, consumed messages go, and so do the stale messages of the events being
# dispatched again: the table then holds no more than the relay counts in flight.
_PRUNE = text(
    "DELETE FROM kombu_message WHERE visible = 0 OR ("
    " json_valid(payload)"
    " AND json_extract(payload, '$.headers.task') = :task"
    " AND json_extract(payload, '$.headers.argsrepr') IN :args)"
).bindparams(bindparam("args", expanding=True))


@cache
def _engine(broker_url: str) -> Engine:
    return create_engine(
        broker_url.removeprefix("sqla+"), connect_args={"timeout": SQLITE_BUSY_TIMEOUT_S}
    )


def prune_stale_messages(broker_url: str, task: str, event_ids: Sequence[int]) -> int:
    """Delete consumed messages and any earlier message for these events; how many went."""
    args = [repr((event_id,)) for event_id in event_ids] or ["-"]
    try:
        with _engine(broker_url).begin() as connection:
            return int(connection.execute(_PRUNE, {"task": task, "args": args}).rowcount)
    except OperationalError as error:
        if "no such table" in str(error):
            return 0  # nothing was ever published
        raise


_FORGET = text(
    "DELETE FROM kombu_message WHERE json_valid(payload)"
    " AND json_extract(payload, '$.headers.id') IN :ids"
).bindparams(bindparam("ids", expanding=True))


def forget_messages(broker_url: str, task_ids: Sequence[str]) -> None:
    """Take back the messages of a dispatch that failed part-way, as RabbitMQ's channel
    transaction would: their events stay due and are not counted in flight. Best effort: what
    stays is deleted when those events are dispatched again."""
    if not task_ids:
        return
    try:
        with _engine(broker_url).begin() as connection:
            connection.execute(_FORGET, {"ids": list(task_ids)})
    except OperationalError:
        return
