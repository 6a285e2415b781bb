"""The worker's and beat's Celery app, made by the composition root from the environment's
settings, and beat's schedule. Engines and broker connections open lazily, per process."""

from __future__ import annotations

import logging
import os
import sys
from typing import Any

from celery.signals import (
    after_setup_logger,
    after_setup_task_logger,
    task_postrun,
    task_prerun,
    task_revoked,
    worker_init,
    worker_process_init,
)
from celery.utils.log import get_multiprocessing_logger

from infrastructure.bootstrap import Container
from infrastructure.broker.celery_app import poll_expiry_s
from infrastructure.broker.messages import event_id_of
from infrastructure.broker.names import POLL_TASK, PRUNE_TASK, RECALC_TASK
from infrastructure.broker.publishing import expiry
from infrastructure.broker.queues import (
    BrokerAccessError,
    BrokerTlsError,
    QueueMismatchError,
    check_queues,
)
from infrastructure.ops import logs

container = Container()
settings = container.settings
app = container.celery_app
# On RabbitMQ the workers declare the queues, and beat's broker user need only publish. The
# embedded broker keeps exchanges in each process's memory: there beat declares its own.
_publish_only: dict[str, Any] = {"declare": []} if settings.uses_amqp else {}
app.conf.beat_schedule = {
    "poll-outbox": {
        "task": POLL_TASK,
        "schedule": settings.poll_interval_s,
        # A tick nobody ran within its expiry is stale: the next one replaces it. The wait
        # for the broker's confirm (on quorum queues, beat.py) is bounded like every other.
        "options": {
            **expiry(app, poll_expiry_s(settings)),
            "confirm_timeout": settings.broker_timeout_s,
            **_publish_only,
        },
    }
}
if settings.retention_s is not None:
    app.conf.beat_schedule["prune-outbox"] = {
        "task": PRUNE_TASK,
        "schedule": settings.prune_interval_s,
        "options": {  # none piles up while workers are down
            **expiry(app, settings.prune_interval_s),
            "confirm_timeout": settings.broker_timeout_s,
            **_publish_only,
        },
    }


# Celery made its handlers from --loglevel and --logfile (worker and beat); postsave adapts them.
@after_setup_logger.connect
def _adapt_process_logs(logger: logging.Logger, loglevel: int, **_: Any) -> None:
    for each in (logger, get_multiprocessing_logger()):
        if each is not None:
            logs.configure_handlers(each, loglevel, settings.log_format)


@after_setup_task_logger.connect
def _adapt_task_logs(logger: logging.Logger, loglevel: int, **_: Any) -> None:
    logs.configure_handlers(logger, loglevel, settings.log_format)


# From before the delivery to after Celery's own line about its end, every line carries the
# event's id: the task's prerun and postrun run in the same process and thread as the task.
@task_prerun.connect
def _tag_delivery_logs(task: Any = None, args: Any = (), kwargs: Any = None, **_: Any) -> None:
    if task is not None and task.name == RECALC_TASK:
        logs.set_event_id(event_id_of(tuple(args or ()), dict(kwargs or {})))


@task_postrun.connect
def _untag_delivery_logs(**_: Any) -> None:
    logs.set_event_id(None)


@worker_init.connect
def _declare_queues_first(sender: Any = None, **_: Any) -> None:
    """The queues this worker consumes, declared before it starts. A queue of another type than
    POSTSAVE_QUEUE_TYPE: one line and exit 78 (EX_CONFIG); a broker user that may not declare
    them: one line and exit 77 (EX_NOPERM). The systemd units restart on neither, where
    Celery would print a traceback and retry for ever."""
    consumed = getattr(getattr(sender, "app", app).amqp.queues, "consume_from", None)
    try:
        check_queues(
            app,
            settings.broker_timeout_s,
            list((consumed or {}).values()) or None,
            getattr(sender, "hostname", None),
        )
    except (QueueMismatchError, BrokerTlsError) as error:
        print(f"postsave worker: {error}", file=sys.stderr, flush=True)
        raise SystemExit(os.EX_CONFIG) from None
    except BrokerAccessError as error:
        print(f"postsave worker: {error}", file=sys.stderr, flush=True)
        raise SystemExit(os.EX_NOPERM) from None


@worker_process_init.connect
def _own_connections_after_fork(**_: Any) -> None:
    container.after_fork()


@task_revoked.connect
def _report_discarded(
    sender: Any = None, request: Any = None, expired: bool = False, **_: Any
) -> None:
    if expired and sender is not None and request is not None:  # request: Celery's Context
        logs.report_expired(sender.name, request.id, getattr(request, "argsrepr", None))
