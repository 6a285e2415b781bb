"""The two tasks. Their bodies only call the domain."""

from __future__ import annotations

import logging

from domain.recalculation import Outcome
from domain.recalculation import recalculate_bars as handle_delivery
from domain.relay import relay_until_idle
from infrastructure.embedded_broker import prune_consumed_messages
from tasks.app import app, container, settings
from tasks.config import POLL_TASK, RECALC_TASK
from tasks.dispatch import CeleryDispatcher

logger = logging.getLogger(__name__)


@app.task(name=POLL_TASK, acks_late=False)
def poll_outbox() -> int:
    """Relay due events to postsave.recalc, never more than the in-flight bound."""
    report = relay_until_idle(
        container().uow, CeleryDispatcher(app), settings.relay_limits, settings.poll_interval_s
    )
    if settings.uses_embedded_broker:
        prune_consumed_messages(settings.broker_url)
    return report.dispatched


@app.task(name=RECALC_TASK, acks_late=True, reject_on_worker_lost=True)
def recalculate_bars(event_id: int) -> str:
    """Apply one outbox event to every bar, at most once whatever the deliveries."""
    if not isinstance(event_id, int) or isinstance(event_id, bool) or event_id <= 0:
        logger.error("recalculate_bars: discarded a message with a malformed id %r", event_id)
        return "malformed"
    outcome = handle_delivery(container().uow, event_id, settings.retry_policy)
    if outcome is Outcome.UNKNOWN_EVENT:
        logger.error("recalculate_bars: discarded a message for unknown event %s", event_id)
    return outcome.value
