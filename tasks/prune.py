"""`prune_outbox`: retention's periodic prune, scheduled by beat when POSTSAVE_RETENTION is set."""

from __future__ import annotations

import logging
from typing import Any

from domain.retention import prune_on_schedule
from infrastructure.broker.messages import shown
from infrastructure.broker.names import PRUNE_TASK
from infrastructure.broker.publishing import expiry
from tasks.app import app, container, settings
from tasks.limits import PRUNE_BUDGET_S, prune_time_limit_s

logger = logging.getLogger(__name__)
LIMIT_S = prune_time_limit_s(settings)


# Each chunk commits on its own, so a prune cut short by a crash or a limit loses nothing.
# Any arguments are accepted, so that a garbage message is logged and dropped by us.
@app.task(
    name=PRUNE_TASK,
    acks_late=False,
    typing=False,
    soft_time_limit=LIMIT_S,
    time_limit=LIMIT_S + 30,
)
def prune_outbox(*args: Any, **kwargs: Any) -> int:
    """Fold finished events older than POSTSAVE_RETENTION into the checkpoint, delete them."""
    if args or kwargs:
        logger.error(
            "prune: dropped a message with arguments, %s; it takes none", shown(args, kwargs)
        )
        return 0
    if settings.retention_s is None:
        logger.warning("prune: POSTSAVE_RETENTION is not set on this worker; nothing pruned")
        return 0
    report = prune_on_schedule(container.uow, settings.retention_s, PRUNE_BUDGET_S)
    if not report.finished:  # the rest in a task of its own, behind the waiting deliveries
        prune_outbox.apply_async(**expiry(app, settings.prune_interval_s))
    return report.pruned
