"""Log lines: idle ticks quiet at INFO, a delivery's event id on its lines, JSON when asked."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from celery.app.trace import LOG_RECEIVED, LOG_SUCCESS
from celery.utils.log import ColorFormatter

from infrastructure.broker.names import POLL_TASK, RECALC_TASK
from infrastructure.ops import logs


def record(name: str, level: int, msg: str, args: Any = None, **extra: Any) -> logging.LogRecord:
    # A single mapping argument becomes `record.args` itself, as in Celery's calls.
    made = logging.LogRecord(name, level, __file__, 1, msg, args, None)
    made.__dict__.update(extra)
    return made


def task_line(fmt: str, task: str, level: int = logging.INFO) -> logging.LogRecord:
    context = {"name": task, "id": "t-1", "runtime": 0.01, "return_value": "0"}
    return record("celery.app.trace", level, fmt, (context,), data=context)


def beat_tick(task: str = POLL_TASK) -> logging.LogRecord:
    return record("celery.beat", logging.INFO, "Scheduler: Sending due task %s (%s)", ("e", task))


def emitted(handler: logging.Handler, *records: logging.LogRecord) -> list[str]:
    stream = io.StringIO()
    handler.setStream(stream)  # type: ignore[attr-defined]
    for each in records:
        handler.handle(each)  # filters, then formats
    return stream.getvalue().splitlines()


@pytest.fixture
def celery_logger() -> Iterator[logging.Logger]:
    """A logger with a handler as Celery makes one: a stream with Celery's formatter."""
    logger = logging.getLogger("postsave.test.celery")
    handler = logging.StreamHandler(io.StringIO())
    handler.setFormatter(ColorFormatter("[%(levelname)s/%(processName)s] %(message)s"))
    logger.addHandler(handler)
    yield logger
    logger.removeHandler(handler)


@pytest.fixture(autouse=True)
def _no_delivery() -> Iterator[None]:
    yield
    logs.set_event_id(None)


# Idle ticks


@pytest.mark.parametrize(
    "tick",
    [
        beat_tick(),
        record("celery.worker.strategy", logging.INFO, LOG_RECEIVED, ({"name": POLL_TASK},)),
        task_line(LOG_SUCCESS, POLL_TASK),
    ],
    ids=["beat-sends", "worker-receives", "worker-ran"],
)
def test_the_info_lines_of_a_poll_tick_are_dropped(tick: logging.LogRecord) -> None:
    assert not logs.QuietIdleTicks().filter(tick)


@pytest.mark.parametrize(
    "line",
    [
        task_line(LOG_SUCCESS, RECALC_TASK),
        beat_tick("another_task"),
        task_line("Task %(name)s[%(id)s] raised unexpected: boom", POLL_TASK, logging.ERROR),
        record("celery.beat", logging.WARNING, "Scheduler: Sending due task %s (%s)", ("e", "x")),
        record("domain.relay", logging.INFO, "relay: dispatched %d events", (3,)),
        record("celery.app.trace", logging.INFO, "no arguments"),
    ],
    ids=["recalculation", "other-task", "poll-error", "beat-warning", "relay", "plain"],
)
def test_every_other_line_passes(line: logging.LogRecord) -> None:
    assert logs.QuietIdleTicks().filter(line)


def test_ticks_are_quiet_at_info_and_shown_at_debug(celery_logger: logging.Logger) -> None:
    [handler] = celery_logger.handlers
    logs.configure_handlers(celery_logger, logging.INFO, "text")
    assert emitted(handler, beat_tick(), task_line(LOG_SUCCESS, RECALC_TASK)) == [
        f"[INFO/MainProcess] Task {RECALC_TASK}[t-1] succeeded in 0.01s: 0"
    ]

    handler.filters.clear()
    logs.configure_handlers(celery_logger, logging.DEBUG, "text")
    assert emitted(handler, beat_tick()) == [
        f"[INFO/MainProcess] Scheduler: Sending due task e ({POLL_TASK})"
    ]


# A delivery's fields


def test_the_lines_of_a_delivery_carry_its_event_id_and_keep_one_given_explicitly() -> None:
    fields = logs.DeliveryFields()
    outside = record("sqlalchemy.engine", logging.WARNING, "before")
    logs.set_event_id(42)
    during = record("sqlalchemy.engine", logging.WARNING, "during")
    explicit = record("domain.delivery", logging.WARNING, "x", event_id=7)
    assert fields.filter(during) and fields.filter(explicit)
    logs.set_event_id(None)
    after = record("celery.app.trace", logging.INFO, "after")
    assert fields.filter(outside) and fields.filter(after)

    assert (during.event_id, explicit.event_id) == (42, 7)  # type: ignore[attr-defined]
    assert not hasattr(outside, "event_id")
    assert not hasattr(after, "event_id")


def test_a_task_line_of_the_main_process_carries_the_task_name_and_id() -> None:
    line = task_line(LOG_RECEIVED, RECALC_TASK)
    logs.DeliveryFields().filter(line)
    assert (line.task_name, line.task_id) == (RECALC_TASK, "t-1")  # type: ignore[attr-defined]


# Formats


def test_text_keeps_celerys_formatter_and_json_replaces_it(celery_logger: logging.Logger) -> None:
    [handler] = celery_logger.handlers
    celerys = handler.formatter
    logs.configure_handlers(celery_logger, logging.INFO, "text")
    assert handler.formatter is celerys

    logs.configure_handlers(celery_logger, logging.INFO, "json")
    assert isinstance(handler.formatter, logs.JsonLines)


def test_a_json_line_is_one_object_with_the_operators_fields() -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logs.JsonLines())
    handler.addFilter(logs.DeliveryFields())
    logs.set_event_id(12)
    try:
        raise RuntimeError("disk full\nsecond line")
    except RuntimeError as error:
        failed = record("domain.delivery", logging.WARNING, "event %s failed", (12,))
        failed.exc_info = (type(error), error, error.__traceback__)
    context = {"name": RECALC_TASK, "id": "t-9", "args": "(12,)"}
    celerys = record("celery.app.trace", logging.INFO, "Task %(name)s", (context,), data=context)

    [first, second] = [json.loads(line) for line in emitted(handler, failed, celerys)]

    assert list(first)[:6] == ["time", "level", "logger", "message", "process_name", "pid"]
    assert first["time"].endswith("+00:00") and "T" in first["time"]  # ISO 8601, UTC
    assert (first["level"], first["logger"], first["message"], first["event_id"]) == (
        "WARNING",
        "domain.delivery",
        "event 12 failed",
        12,
    )
    assert "RuntimeError: disk full\nsecond line" in first["exc_info"]
    assert (second["task_name"], second["task_id"], second["event_id"]) == (RECALC_TASK, "t-9", 12)
    assert "data" not in second  # Celery's copy of the arguments stays out


# The command line


@pytest.fixture
def root_handlers() -> Iterator[list[logging.Handler]]:
    root = logging.getLogger()
    before = list(root.handlers)
    yield root.handlers
    root.handlers[:] = before


def test_the_command_line_logs_json_to_stderr_only_when_asked(
    root_handlers: list[logging.Handler], capsys: pytest.CaptureFixture[str]
) -> None:
    before = list(root_handlers)
    for value in ("text", "", "xml"):  # xml: Settings reports it as the command's error
        logs.configure_command_line({"POSTSAVE_LOG_FORMAT": value})
        assert root_handlers == before

    logs.configure_command_line({"POSTSAVE_LOG_FORMAT": "json"})
    logs.configure_command_line({"POSTSAVE_LOG_FORMAT": "json"})  # main() again: one handler
    added = [h for h in root_handlers if h not in before]
    assert len(added) == 1
    assert added[0].level == logging.WARNING
    logging.getLogger("infrastructure.test").warning("broker slow")

    [line] = capsys.readouterr().err.splitlines()
    assert json.loads(line)["message"] == "broker slow"

    logs.configure_command_line({"POSTSAVE_LOG_FORMAT": "text"})
    assert root_handlers == before


def test_an_expired_recalculation_is_a_warning_and_an_expired_tick_only_debug(
    caplog: pytest.LogCaptureFixture,
) -> None:
    from celery.app.task import Context

    from tasks.app import _report_discarded
    from tasks.poll import poll_outbox
    from tasks.recalculation import recalculate_bars

    with caplog.at_level("DEBUG", logger="infrastructure.ops.logs"):
        for task, args in ((recalculate_bars, "(7,)"), (poll_outbox, "()")):
            request = Context(id=f"{task.name}-id", argsrepr=args)  # what the worker passes
            _report_discarded(sender=task, request=request, expired=True)
        _report_discarded(sender=recalculate_bars, request=Context(id="x"), expired=False)

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "WARNING",
            "discarded recalculate_bars[recalculate_bars-id] args=(7,): "
            "it expired before a worker could run it",
        ),
        (
            "DEBUG",
            "discarded poll_outbox[poll_outbox-id] args=(): "
            "it expired before a worker could run it",
        ),
    ]
