"""The relay: move due events from the outbox to the broker without ever flooding it."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.backoff import DispatchBackoff
from domain.errors import DispatchError, InvalidEventError
from domain.outbox import RelayLimits, StoredEvent
from domain.passes import describe, in_one_line
from domain.ports import Dispatcher, UnitOfWork

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RelayReport:
    dispatched: int
    in_flight: int  # after the batch
    skipped: bool = False  # another poller held the relay lock, or the broker is backed off
    broker_error: str | None = None  # the broker refused a batch; those events stay due
    leases_expired: int = 0  # of `dispatched`: again, their own message not back by the lease's end
    room: int = 0  # how many more the in-flight bound lets out


def relay_once(uow: UnitOfWork, dispatcher: Dispatcher, limits: RelayLimits) -> RelayReport:
    """One batch: claim due events, publish one message each, and lease them, all in one
    transaction.

    Nothing is marked dispatched unless the broker took it. A crash after publishing and before
    commit leaves the events due, and the idempotent handler absorbs the second message.

    The broker holds at most `max_in_flight` recalculation messages: new events are dispatched
    only into free room, and an expired lease is re-dispatched in its own place, because its
    previous message expired in the broker when the lease did."""
    with uow:
        # The lock also makes the relay the one sequencer: positions are given in order, and
        # commit in order, so a pass never finds a gap that a later commit fills.
        if not uow.relay_queue.try_lock():
            return RelayReport(dispatched=0, in_flight=0, skipped=True)
        # In a transaction of its own, before any publishing: it holds the head's row, which
        # every settling delivery needs, for milliseconds, never for a publish.
        _stamp_and_sequence(uow, limits.sequence_batch)
        uow.commit()
        if not uow.relay_queue.try_lock():
            return RelayReport(dispatched=0, in_flight=0, skipped=True)
        in_flight = uow.relay_queue.count_in_flight()
        expired = uow.relay_queue.claim_expired(limits.batch_size)
        room = min(limits.batch_size - len(expired), limits.max_in_flight - in_flight)
        fresh = uow.relay_queue.claim_pending(room) if room > 0 else []
        claimed = expired + fresh
        if not claimed:
            uow.relay_queue.record_batch(dispatched=0, leases_expired=0)
            uow.commit()
            return RelayReport(0, in_flight, room=max(limits.max_in_flight - in_flight, 0))
        ids = [event.id for event in claimed]
        if expired:
            logger.warning(
                "relay: %d leases ended before their messages came back (expired unconsumed or "
                "lost); dispatching again: events %s",
                len(expired),
                _some([event.id for event in expired]),
            )
        # The message must be gone before the lease ends; a tenth of the lease is the margin.
        dispatcher.dispatch(ids, expires_in_s=limits.lease_seconds * 0.9)
        uow.relay_queue.mark_dispatched(ids, limits.lease_seconds)
        uow.relay_queue.record_batch(dispatched=len(ids), leases_expired=len(expired))
        uow.commit()
        in_flight += len(fresh)
        return RelayReport(
            len(ids),
            in_flight,
            leases_expired=len(expired),
            room=max(limits.max_in_flight - in_flight, 0),
        )


def _stamp_and_sequence(uow: UnitOfWork, batch_size: int) -> int:
    """Process the events every part has passed, without a message of their own (coalesced),
    then give up to `batch_size` new events their positions, whatever the bound: a sequenced
    event waits in the table for room like any other, and meanwhile the passes that the
    messages out drive apply it with the events before it. Returns how many were claimed."""
    uow.deliveries.apply_through(uow.parts.lowest_position())
    fresh = uow.relay_queue.claim_unsequenced(batch_size)
    _sequence(uow, fresh)
    return len(fresh)


def sequence_ahead(
    uow_factory: Callable[[], UnitOfWork], batch_size: int, until: float, clock: Callable[[], float]
) -> int:
    """While the bound has no room: sequence the events waiting for it, a batch per
    transaction, until none is left or `until`. Returns how many were claimed."""
    claimed = 0
    while clock() < until:
        with uow_factory() as uow:
            if not uow.relay_queue.try_lock():
                break
            batch = _stamp_and_sequence(uow, batch_size)
            uow.commit()
        claimed += batch
        if batch < batch_size:
            break
    return claimed


def _sequence(uow: UnitOfWork, fresh: list[StoredEvent]) -> None:
    """Give the new events their place in the one order every bar sees, in the order they
    were claimed. An event this version cannot read is dead instead: no part could apply
    it, and none must wait for it."""
    readable: list[tuple[int, int]] = []
    for stored in fresh:
        try:
            readable.append((stored.id, stored.event().delta))
        except InvalidEventError as error:
            uow.deliveries.record_failure(stored.id, describe(error), retry_in_s=None)
            logger.error(
                "event %s (%s) is dead: %s; `postsave dead retry %s` once a version that "
                "reads it runs",
                stored.id,
                stored.event_type,
                in_one_line(error),
                stored.id,
                extra={"event_id": stored.id, "event_type": stored.event_type},
            )
    uow.relay_queue.sequence(readable)


def relay_until_idle(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: Dispatcher,
    limits: RelayLimits,
    time_budget_s: float,
    backoff: DispatchBackoff | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RelayReport:
    """One tick: relay batch after batch while claims come back full, within its time budget.

    When the broker refuses a batch, its events stay due; the backoff then skips ticks for a
    while, and the report says what went wrong."""
    backoff = backoff or DispatchBackoff(clock=clock)
    if not backoff.ready():
        return RelayReport(dispatched=0, in_flight=0, skipped=True)
    started = clock()
    dispatched = expired = 0
    while True:
        try:
            report = relay_once(uow_factory(), dispatcher, limits)
        except DispatchError as error:
            delay = backoff.failed()
            logger.warning("relay: %s; events stay due, next try in %.0f s", error, delay)
            _log_moved(dispatched, expired, report=None)
            return RelayReport(
                dispatched, 0, skipped=True, broker_error=str(error), leases_expired=expired
            )
        backoff.succeeded()
        dispatched += report.dispatched
        expired += report.leases_expired
        if report.dispatched < limits.batch_size or clock() - started >= time_budget_s:
            if report.room == 0 and not report.skipped:
                sequence_ahead(uow_factory, limits.sequence_batch, started + time_budget_s, clock)
            _log_moved(dispatched, expired, report)
            return RelayReport(
                dispatched,
                report.in_flight,
                report.skipped,
                leases_expired=expired,
                room=report.room,
            )


def _log_moved(dispatched: int, expired: int, report: RelayReport | None) -> None:
    """One INFO line for a tick that moved something; an idle tick says nothing."""
    if not dispatched:
        return
    again = f" ({expired} again after an expired lease)" if expired else ""
    state = "" if report is None else f"; {report.in_flight} in flight, room for {report.room}"
    logger.info("relay: dispatched %d events%s%s", dispatched, again, state)


def _some(ids: list[int], shown: int = 10) -> str:
    more = f" and {len(ids) - shown} more" if len(ids) > shown else ""
    return ", ".join(map(str, ids[:shown])) + more
