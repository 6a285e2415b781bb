"""The ceiling: bare Celery no-op tasks with postsave's worker settings.

`celery -A bench.ceiling_app worker --pool=prefork --concurrency=2 -Q bench.ceiling`"""

from __future__ import annotations

from celery import Celery

from bench.celery_common import config

QUEUE = "bench.ceiling"

app = Celery("bench-ceiling")
app.config_from_object(config(QUEUE, acks_late=True))


@app.task(name="noop")
def noop() -> None:
    """Nothing: what is left is Celery's and RabbitMQ's own cost per message."""
