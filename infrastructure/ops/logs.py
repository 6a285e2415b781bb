"""Log lines for operators: `POSTSAVE_LOG_FORMAT=json` writes one JSON object per line, every
line of a delivery carries its event's id, and beat's idle ticks stay out of INFO."""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import Any

from celery import current_task
from pythonjsonlogger.core import RESERVED_ATTRS
from pythonjsonlogger.json import JsonFormatter

from infrastructure.broker.names import POLL_TASK
from infrastructure.settings import SettingsError, log_format_from_env

# The event whose delivery this thread (or pool process) is running, if any.
_event_id: ContextVar[int | None] = ContextVar("postsave_event_id", default=None)

logger = logging.getLogger(__name__)

# Where Celery logs a tick: beat sends it, the worker receives it, runs it and reports it done.
TICK_LOGGERS = frozenset({"celery.beat", "celery.worker.strategy", "celery.app.trace"})

JSON_FIELDS = {
    "asctime": "time",
    "levelname": "level",
    "name": "logger",
    "message": "message",
    "processName": "process_name",
    "process": "pid",
}


def set_event_id(event_id: int | None) -> None:
    """Tag the lines logged from now on in this context with `event_id` (None: no longer)."""
    _event_id.set(event_id)


class DeliveryFields(logging.Filter):
    """Adds `event_id` during a delivery, and Celery's `task_name` and `task_id` in a task:
    the lines of Celery, SQLAlchemy and kombu then say which delivery they belong to."""

    def filter(self, record: logging.LogRecord) -> bool:
        event_id = _event_id.get()
        if event_id is not None and not hasattr(record, "event_id"):
            record.event_id = event_id
        if not hasattr(record, "task_id"):
            record.__dict__.update(_task_fields(record))
        return True


def _task_fields(record: logging.LogRecord) -> dict[str, Any]:
    if current_task:  # a proxy: false outside a task
        return {"task_name": current_task.name, "task_id": current_task.request.id}
    data = getattr(record, "data", None)  # Celery's context of a task line in the main process
    if isinstance(data, Mapping) and "id" in data and "name" in data:
        return {"task_name": data["name"], "task_id": data["id"]}
    return {}


class QuietIdleTicks(logging.Filter):
    """Drops the INFO lines of every poll tick (sent, received, succeeded): about 3 a second
    from an idle deployment. The relay's own line says when a tick moved something, and
    warnings and errors about the tick pass."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (
            record.levelno == logging.INFO
            and record.name in TICK_LOGGERS
            and _task_name(record) == POLL_TASK
        )


def _task_name(record: logging.LogRecord) -> object:
    args = record.args
    if isinstance(args, Mapping):  # the worker: Task %(name)s[%(id)s] ...
        return args.get("name")
    if isinstance(args, tuple) and len(args) == 2:  # beat: Sending due task %s (%s)
        return args[1]
    return None


class JsonLines(JsonFormatter):
    """One JSON object per line: time (ISO 8601, UTC), level, logger, message, process_name,
    pid, then the record's extra fields (event_id, task_name, task_id, ...) and exc_info."""

    def __init__(self) -> None:
        super().__init__(
            list(JSON_FIELDS),
            rename_fields={k: v for k, v in JSON_FIELDS.items() if k != v},
            # Celery's `data` repeats the message's arguments; its task fields are lifted.
            reserved_attrs=[*RESERVED_ATTRS, "data"],
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")


def configure_handlers(logger: logging.Logger, loglevel: int, log_format: str) -> None:
    """Adapt the handlers Celery made for `logger`, so that --loglevel and --logfile still
    apply: delivery fields on every line, idle ticks quiet unless at DEBUG, JSON if asked."""
    for handler in logger.handlers:
        _adapt(handler, quiet_ticks=loglevel > logging.DEBUG, log_format=log_format)


def configure_command_line(env: Mapping[str, str] | None = None) -> None:
    """In JSON mode, warnings and errors go to stderr as JSON lines; text mode keeps Python's
    bare last-resort lines. The command's own one-line errors are printed, never logged."""
    try:
        log_format = log_format_from_env(os.environ if env is None else env)
    except SettingsError:
        return  # the command reads its settings next and reports this as its error line
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h.formatter, JsonLines)]:
        root.removeHandler(old)  # main() may run more than once in a process
    if log_format == "json":
        handler = logging.StreamHandler(sys.stderr)
        handler.setLevel(logging.WARNING)
        _adapt(handler, quiet_ticks=False, log_format=log_format)
        root.addHandler(handler)


def _adapt(handler: logging.Handler, *, quiet_ticks: bool, log_format: str) -> None:
    handler.addFilter(DeliveryFields())
    if quiet_ticks:
        handler.addFilter(QuietIdleTicks())
    if log_format == "json":
        handler.setFormatter(JsonLines())


def report_expired(task_name: str, task_id: str, args: str | None) -> None:
    """A message a worker dropped because it expired (the embedded broker: RabbitMQ drops
    expired messages itself). A stale tick is routine, replaced by the next one; an expired
    recalculation means its event waited out its lease, and is dispatched again."""
    level = logging.DEBUG if task_name == POLL_TASK else logging.WARNING
    logger.log(
        level,
        "discarded %s[%s] args=%s: it expired before a worker could run it",
        task_name,
        task_id,
        args,
    )
