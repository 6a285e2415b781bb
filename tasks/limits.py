"""How long each task may run: past the soft limit it raises inside the task and is recorded
as a failure; past the hard limit Celery replaces the worker process."""

from __future__ import annotations

from infrastructure.settings import Settings


def poll_time_limit_s(settings: Settings) -> float:
    """A tick longer than this is stuck: its budget, one bounded publish and one
    bounded statement."""
    return settings.poll_interval_s + settings.broker_timeout_s + settings.statement_timeout_s


def recalc_time_limit_s(settings: Settings) -> float:
    """A delivery starts passes for half a lease (HeavyStep.budget_s); the last one started
    may then take one part's time: time limits follow a part's work, not the lease."""
    return settings.lease_seconds / 2 + settings.part_time_limit_s


PRUNE_BUDGET_S = 60.0  # a prune with more to do sends itself again: bounded tasks


def prune_time_limit_s(settings: Settings) -> float:
    """A prune stops starting chunks after its budget; past this, one chunk is stuck."""
    return PRUNE_BUDGET_S + 2 * settings.statement_timeout_s
