"""The heavy post-save step, made idempotent: a delivery applies events' deltas to every bar,
each event exactly once, however often its message arrives."""

from __future__ import annotations

import logging
from collections.abc import Callable
from enum import StrEnum

from domain.backoff import RetryPolicy
from domain.errors import EventNotFoundError, InvalidEventError
from domain.outbox import FAIL, EventState, StoredEvent
from domain.ports import UnitOfWork

logger = logging.getLogger(__name__)


class Outcome(StrEnum):
    APPLIED = "applied"  # the delivered event's delta is on the bars now
    ALREADY_APPLIED = "already_applied"  # a redelivery, or another pass took it on
    RETRY_SCHEDULED = "retry_scheduled"
    DEAD = "dead"
    NO_SUCH_EVENT = "no_such_event"  # the message names an id the outbox does not hold


def handle_delivery(
    uow_factory: Callable[[], UnitOfWork], event_id: int, retry: RetryPolicy, coalesce: int = 0
) -> Outcome:
    """Handle one message for `event_id`. A failure is recorded on the event, never raised to
    the broker: the outbox, not the broker, holds retries, so a poison event cannot block the
    queue. With `coalesce`, the pass also takes on up to that many waiting events."""
    try:
        if coalesce:
            try:
                return apply_pass(uow_factory(), event_id, coalesce)
            except EventNotFoundError:
                raise
            except Exception as error:  # noqa: BLE001 - another event of the pass may be at fault
                logger.warning(
                    "event %s: a pass with up to %s waiting events failed (%s); "
                    "applying the event alone",
                    event_id,
                    coalesce,
                    in_one_line(error),
                    extra=_fields(event_id),
                )
        return apply_pass(uow_factory(), event_id)
    except EventNotFoundError:
        return _dropped(uow_factory(), event_id)
    except Exception as error:  # noqa: BLE001 - every failure is recorded on the event
        return record_failure(uow_factory(), event_id, error, retry)


def _dropped(uow: UnitOfWork, event_id: int) -> Outcome:
    """A message for an event the outbox does not hold: pruned after it was applied (ids are
    removed by pruning only, up to the checkpoint's last), or never one of ours."""
    with uow:
        pruned = event_id <= uow.projection_log.checkpoint().last_pruned_id
    if pruned:
        logger.info(
            "event %s: dropped a message for an event applied and then pruned",
            event_id,
            extra=_fields(event_id),
        )
        return Outcome.ALREADY_APPLIED
    logger.error(
        "event %s: dropped a message for an event the outbox does not hold",
        event_id,
        extra=_fields(event_id),
    )
    return Outcome.NO_SUCH_EVENT


def apply_pass(uow: UnitOfWork, event_id: int, coalesce: int = 0) -> Outcome:
    """In one transaction: apply the delivered event, unless applied already, and up to
    `coalesce` waiting events, as one set-based update of the bars; the applied guard lets
    each event's delta in once. A delivery never waits behind messages with nothing to do."""
    with uow:
        delivered = uow.deliveries.lock(event_id)
        if delivered.state is EventState.DEAD:
            return Outcome.DEAD  # parked until `postsave dead retry`; a stale message waits too
        waiting = uow.deliveries.lock_waiting(coalesce, exclude_id=event_id) if coalesce else []
        deltas = _deltas([] if delivered.applied else [delivered], waiting)
        applied = uow.deliveries.record_applied(sorted(deltas))
        if applied:
            uow.bars.apply_delta(sum(deltas[i] for i in applied), events=len(applied))
        uow.deliveries.finish_pass(applied, delivered_id=event_id)
        uow.commit()
        return Outcome.APPLIED if event_id in applied else Outcome.ALREADY_APPLIED


def _deltas(own: list[StoredEvent], waiting: list[StoredEvent]) -> dict[int, int]:
    """Each event's delta. The delivered event's unreadable payload fails the pass; a waiting
    one's is left out, for its own delivery to record."""
    deltas = {stored.id: stored.event().delta for stored in own}
    for stored in waiting:
        try:
            deltas[stored.id] = stored.event().delta
        except InvalidEventError:
            continue
    return deltas


def describe(error: BaseException) -> str:
    """The error as the event records it, whole (a database error's SQL included)."""
    return f"{type(error).__name__}: {error}"


def in_one_line(error: BaseException) -> str:
    """The error as a log line names it: its first line."""
    return (describe(error).splitlines() or [type(error).__name__])[0]


def _fields(event_id: int, **more: object) -> dict[str, object]:
    """Structured fields of a delivery's log line, for JSON logs; the text names them too."""
    return {"event_id": event_id, **more}


def record_failure(
    uow: UnitOfWork, event_id: int, error: BaseException, retry: RetryPolicy
) -> Outcome:
    with uow:
        stored = uow.deliveries.lock(event_id)
        if stored.applied:  # another pass applied it meanwhile: nothing failed for it
            uow.deliveries.finish_pass([], delivered_id=event_id)
            uow.commit()
            return Outcome.ALREADY_APPLIED
        if not FAIL.allows(stored.state, stored.applied):  # dead meanwhile, by another pass
            return Outcome.DEAD
        # An event this version cannot read will not become readable by retrying it.
        permanent = isinstance(error, InvalidEventError)
        failures = stored.failures + 1
        if permanent or retry.is_exhausted(failures):
            uow.deliveries.record_failure(event_id, describe(error), retry_in_s=None)
            uow.commit()
            logger.error(
                "event %s (%s) is dead after %s failure(s): %s; "
                "`postsave dead retry %s` once the cause is fixed",
                event_id,
                stored.event_type,
                failures,
                in_one_line(error),
                event_id,
                extra=_fields(event_id, event_type=stored.event_type, failures=failures),
            )
            return Outcome.DEAD
        delay = retry.delay_s(failures)
        uow.deliveries.record_failure(event_id, describe(error), retry_in_s=delay)
        uow.commit()
        logger.warning(
            "event %s (%s) failed (failure %s of %s), next try in %.1f s: %s",
            event_id,
            stored.event_type,
            failures,
            retry.max_attempts,
            delay,
            in_one_line(error),
            extra=_fields(
                event_id,
                event_type=stored.event_type,
                failures=failures,
                max_attempts=retry.max_attempts,
                retry_in_s=round(delay, 1),
            ),
        )
        return Outcome.RETRY_SCHEDULED
