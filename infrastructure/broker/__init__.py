"""The broker adapters: the Celery app made from settings, the relay's dispatcher, the post-commit
nudge, the recalculation message format and the embedded broker's housekeeping."""
