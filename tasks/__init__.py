"""Celery entry point: `celery -A tasks worker` and `celery -A tasks beat`."""

from tasks.app import app
from tasks.poll import poll_outbox
from tasks.prune import prune_outbox
from tasks.recalculation import recalculate_bars

__all__ = ["app", "poll_outbox", "prune_outbox", "recalculate_bars"]
