"""The heavy post-save step, made idempotent: apply one event's delta to every bar, once."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum

from domain.errors import EventNotFoundError, InvalidEventError
from domain.outbox import EventState, RetryPolicy
from domain.ports import UnitOfWork


class Outcome(StrEnum):
    APPLIED = "applied"
    ALREADY_PROCESSED = "already_processed"
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    UNKNOWN_EVENT = "unknown_event"


def apply_event(uow: UnitOfWork, event_id: int) -> Outcome:
    """Apply the event and record it as processed in one transaction.

    A second delivery of the same event finds it processed and changes nothing."""
    with uow:
        stored = uow.outbox.lock_for_processing(event_id)
        if stored.state is EventState.PROCESSED:
            return Outcome.ALREADY_PROCESSED
        if stored.state is EventState.DEAD:
            return Outcome.DEAD  # parked until `postsave dead retry`; a stale message waits too
        event = stored.event()
        if not uow.outbox.record_processed(event_id):
            return Outcome.ALREADY_PROCESSED
        uow.bars.apply_delta(event.delta)
        uow.commit()
        return Outcome.APPLIED


def recalculate_bars(
    uow_factory: Callable[[], UnitOfWork], event_id: int, retry: RetryPolicy
) -> Outcome:
    """Handle one delivery. A failure is recorded on the event, never raised to the broker:
    the outbox, not the broker, holds retries, so a poison event cannot block the queue."""
    try:
        return apply_event(uow_factory(), event_id)
    except EventNotFoundError:
        return Outcome.UNKNOWN_EVENT
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the event
        return record_failure(uow_factory(), event_id, error, retry)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def record_failure(
    uow: UnitOfWork, event_id: int, error: BaseException, retry: RetryPolicy
) -> Outcome:
    with uow:
        stored = uow.outbox.lock_for_processing(event_id)
        if stored.state is EventState.PROCESSED:
            return Outcome.ALREADY_PROCESSED
        # An event this version cannot read will not become readable by retrying it.
        permanent = isinstance(error, InvalidEventError)
        failures = stored.failures + 1
        if permanent or retry.is_exhausted(failures):
            uow.outbox.record_failure(event_id, describe(error), retry_in_s=None)
            outcome = Outcome.DEAD
        else:
            delay = retry.delay_s(failures)
            uow.outbox.record_failure(event_id, describe(error), retry_in_s=delay)
            outcome = Outcome.RETRY_SCHEDULED
        uow.commit()
        return outcome
