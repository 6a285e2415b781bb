"""`poll_outbox`: one tick (from beat or an application's nudge): relay batches while they
come back full, within the poll interval."""

from __future__ import annotations

from domain.relay import relay_until_idle
from infrastructure.broker.names import POLL_TASK
from tasks.app import app, container, settings
from tasks.limits import poll_time_limit_s

LIMIT_S = poll_time_limit_s(settings)


@app.task(name=POLL_TASK, acks_late=False, soft_time_limit=LIMIT_S, time_limit=LIMIT_S + 10)
def poll_outbox() -> int:
    """Relay due events to postsave.recalc, never more than the in-flight bound."""
    return relay_until_idle(
        container.uow,
        container.dispatcher,
        settings.relay_limits,
        time_budget_s=settings.poll_interval_s,
        backoff=container.dispatch_backoff,
    ).dispatched
