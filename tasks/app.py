"""The worker's and beat's Celery app, made by the composition root from the environment's
settings, and beat's schedule. Engines and broker connections open lazily, per process."""

from __future__ import annotations

from typing import Any

from celery.signals import worker_process_init

from infrastructure.bootstrap import Container
from infrastructure.broker.celery_app import poll_expiry_s
from infrastructure.broker.names import POLL_TASK

container = Container()
settings = container.settings
app = container.celery_app
app.conf.beat_schedule = {
    "poll-outbox": {
        "task": POLL_TASK,
        "schedule": settings.poll_interval_s,
        # A tick nobody ran within its expiry is stale: the next one replaces it.
        "options": {"expires": poll_expiry_s(settings)},
    }
}


@worker_process_init.connect
def _own_connections_after_fork(**_: Any) -> None:
    container.after_fork()
