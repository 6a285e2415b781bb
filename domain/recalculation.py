"""The heavy post-save step, made idempotent: apply events' deltas to every bar, each once."""

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


def apply_event(uow: UnitOfWork, event_id: int, coalesce: int = 0) -> Outcome:
    """Apply the event and record it as processed in one transaction.

    With `coalesce` > 0, up to that many other waiting events are applied in the same pass:
    their deltas are summed into one set-based update, and each is recorded once, so their
    own deliveries find nothing left to do. A delivery whose event is already applied still
    takes on whatever waits: an event never queues behind messages that have nothing to do.
    Events that ever failed are left out, so a poison event only ever fails its own delivery.

    A second delivery of the same event changes nothing."""
    with uow:
        stored = uow.outbox.lock_for_processing(event_id)
        if stored.state is EventState.DEAD:
            return Outcome.DEAD  # parked until `postsave dead retry`; a stale message waits too
        deltas: dict[int, int] = {}
        if not stored.applied:
            deltas[event_id] = stored.event().delta
        elif stored.state is EventState.DISPATCHED:
            uow.outbox.settle(event_id)  # applied by another pass; its message is back now
        for other in (
            uow.outbox.lock_for_coalescing(coalesce, exclude_id=event_id) if coalesce else []
        ):
            try:
                deltas[other.id] = other.event().delta
            except InvalidEventError:
                continue  # its own delivery records why
        recorded = uow.outbox.record_applied(sorted(deltas))
        if recorded:
            uow.bars.apply_delta(sum(deltas[i] for i in recorded), events=len(recorded))
            uow.outbox.mark_applied(recorded, delivered_id=event_id)  # stamped after the pass
        uow.commit()
        return Outcome.APPLIED if event_id in recorded else Outcome.ALREADY_PROCESSED


def recalculate_bars(
    uow_factory: Callable[[], UnitOfWork], event_id: int, retry: RetryPolicy, coalesce: int = 0
) -> Outcome:
    """Handle one delivery. A failure is recorded on the event, never raised to the broker:
    the outbox, not the broker, holds retries, so a poison event cannot block the queue."""
    try:
        return _apply_coalesced_or_alone(uow_factory, event_id, coalesce)
    except EventNotFoundError:
        return Outcome.UNKNOWN_EVENT
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the event
        return record_failure(uow_factory(), event_id, error, retry)


def _apply_coalesced_or_alone(
    uow_factory: Callable[[], UnitOfWork], event_id: int, coalesce: int
) -> Outcome:
    if coalesce:
        try:
            return apply_event(uow_factory(), event_id, coalesce)
        except EventNotFoundError:
            raise
        except Exception:  # noqa: BLE001 - another event of the pass may be at fault
            pass  # so the event is tried alone, and only its own failure is recorded
    return apply_event(uow_factory(), event_id)


def describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def record_failure(
    uow: UnitOfWork, event_id: int, error: BaseException, retry: RetryPolicy
) -> Outcome:
    with uow:
        stored = uow.outbox.lock_for_processing(event_id)
        if stored.applied:  # another pass applied it meanwhile: nothing failed for it
            if stored.state is EventState.DISPATCHED:
                uow.outbox.settle(event_id)
                uow.commit()
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
