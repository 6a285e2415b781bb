"""What the relay and the workers would do for some events, in process: for tests that need
events applied without running a relay and workers."""

from __future__ import annotations

from collections.abc import Sequence

from domain.delivery import Outcome, handle_delivery
from domain.outbox import UNFINISHED_STATES
from domain.passes import HeavyStep
from infrastructure.bootstrap import Container


def dispatch(container: Container, event_ids: Sequence[int]) -> None:
    """Sequence the events (in the order given, those not yet) and lease them, as the relay
    does once the broker has taken their messages."""
    with container.uow() as uow:
        fresh = [uow.deliveries.lock(event_id) for event_id in event_ids]
        uow.relay_queue.sequence(
            [(event.id, event.event().delta) for event in fresh if event.position is None]
        )
        uow.relay_queue.mark_dispatched(list(event_ids), lease_seconds=60.0)
        uow.commit()


def unfinished(container: Container, event_ids: Sequence[int]) -> list[int]:
    with container.uow() as uow:
        events = [uow.deliveries.lock(event_id) for event_id in event_ids]
    return [event.id for event in events if event.state in UNFINISHED_STATES]


def apply_events(
    container: Container, event_ids: Sequence[int], step: HeavyStep | None = None
) -> list[Outcome]:
    """Sequence the events (in the order given) and dispatch them as the relay does, then
    deliver each once: every part passes them, and they are processed. Finished events are
    left as they are."""
    event_ids = unfinished(container, event_ids)
    dispatch(container, event_ids)
    step = step or container.heavy_step
    return [handle_delivery(container.uow, event_id, step) for event_id in event_ids]
