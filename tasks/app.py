"""The worker's and beat's Celery app, made by the composition root from the environment's
settings, and beat's schedule. Engines and broker connections open lazily, per process."""

from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked, worker_process_init

from infrastructure.bootstrap import Container
from infrastructure.broker.celery_app import poll_expiry_s
from infrastructure.broker.names import POLL_TASK
from infrastructure.broker.publishing import expiry

logger = logging.getLogger(__name__)

container = Container()
settings = container.settings
app = container.celery_app
app.conf.beat_schedule = {
    "poll-outbox": {
        "task": POLL_TASK,
        "schedule": settings.poll_interval_s,
        # A tick nobody ran within its expiry is stale: the next one replaces it.
        "options": expiry(app, poll_expiry_s(settings)),
    }
}


@worker_process_init.connect
def _own_connections_after_fork(**_: Any) -> None:
    container.after_fork()


@task_revoked.connect
def _warn_discarded(request: Any = None, expired: bool = False, **_: Any) -> None:
    if expired and request is not None:
        logger.warning(
            "discarded %s[%s] args=%s: it expired before a worker could run it",
            request.name,
            request.id,
            request.argsrepr,
        )
