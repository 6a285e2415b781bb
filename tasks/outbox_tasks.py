"""The two tasks. Their bodies only call the domain."""

from __future__ import annotations

import logging
from typing import Any

from domain.errors import DispatchError
from domain.recalculation import Outcome
from domain.recalculation import recalculate_bars as handle_delivery
from domain.relay import DispatchBackoff, relay_until_idle
from infrastructure.embedded_broker import prune_consumed_messages
from tasks.app import app, container, settings
from tasks.config import POLL_TASK, RECALC_TASK
from tasks.dispatch import CeleryDispatcher

logger = logging.getLogger(__name__)
_backoff = DispatchBackoff()  # per worker process: the broker's health as this process saw it
_dispatcher = CeleryDispatcher(app)  # per worker process: its connection opens on first use


@app.task(name=POLL_TASK, acks_late=False)
def poll_outbox() -> int:
    """Relay due events to postsave.recalc, never more than the in-flight bound."""
    try:
        report = relay_until_idle(
            container().uow,
            _dispatcher,
            settings.relay_limits,
            settings.poll_interval_s,
            _backoff,
        )
    except DispatchError as error:
        logger.warning(
            "poll_outbox: %s; events stay due, next try in %.0fs",
            error,
            _backoff.resume_at - _backoff.clock(),
        )
        return 0
    if settings.uses_embedded_broker:
        prune_consumed_messages(settings.broker_url)
    return report.dispatched


def event_id_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> int | None:
    """The one positive integer a well-formed message carries, or None."""
    values = list(args) + list(kwargs.values())
    if len(values) != 1 or set(kwargs) - {"event_id"}:
        return None
    (value,) = values
    if isinstance(value, int) and not isinstance(value, bool) and 0 < value < 2**63:
        return value
    return None


# Any arguments are accepted, so that a malformed message is logged and dropped by us rather
# than failing inside Celery's call machinery.
@app.task(name=RECALC_TASK, acks_late=True, reject_on_worker_lost=True, typing=False)
def recalculate_bars(*args: Any, **kwargs: Any) -> str:
    """Apply one outbox event to every bar, at most once whatever the deliveries."""
    event_id = event_id_of(args, kwargs)
    if event_id is None:
        logger.error(
            "recalculate_bars: dropped a malformed message args=%r kwargs=%r", args, kwargs
        )
        return "malformed"
    outcome = handle_delivery(
        container().uow, event_id, settings.retry_policy, settings.coalesce_limit
    )
    if outcome is Outcome.UNKNOWN_EVENT:
        logger.error("recalculate_bars: dropped a message for unknown event %s", event_id)
    return outcome.value
