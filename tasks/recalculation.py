"""`recalculate_bars`: one delivery of an outbox event's message."""

from __future__ import annotations

from typing import Any

from domain.delivery import handle_delivery
from infrastructure.broker.messages import event_id_or_drop
from infrastructure.broker.names import RECALC_TASK
from infrastructure.broker.outcomes import MALFORMED, EventNotApplied, task_result
from tasks.app import app, container, settings
from tasks.limits import recalc_time_limit_s

# Past the soft limit, the pass under way raises, and its part records the failure.
LIMIT_S = recalc_time_limit_s(settings)


# Any arguments are accepted, so that a malformed message is logged and dropped by us rather
# than failing inside Celery's call machinery. Acked late: a delivery is idempotent. A delivery
# that leaves its event unapplied is a FAILURE to Celery, its message acknowledged all the same.
@app.task(
    name=RECALC_TASK,
    acks_late=True,
    acks_on_failure=True,
    throws=(EventNotApplied,),
    reject_on_worker_lost=True,
    typing=False,
    soft_time_limit=LIMIT_S,
    time_limit=LIMIT_S + 30,
)
def recalculate_bars(*args: Any, **kwargs: Any) -> str:
    """Drive the parts of the bars on, then settle the event: applied once every part has
    passed it, at most once whatever the deliveries."""
    event_id = event_id_or_drop(args, kwargs)
    if event_id is None:
        return MALFORMED  # logged as an ERROR; there is no event to name or to retry
    return task_result(event_id, handle_delivery(container.uow, event_id, container.heavy_step))
