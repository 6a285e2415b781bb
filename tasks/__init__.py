"""Celery entry point: `celery -A tasks worker` and `celery -A tasks beat`."""

from tasks.app import app
from tasks.outbox_tasks import poll_outbox, recalculate_bars

__all__ = ["app", "poll_outbox", "recalculate_bars"]
