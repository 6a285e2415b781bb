"""The relay: move due events from the outbox to the broker without ever flooding it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.outbox import RelayLimits
from domain.ports import Dispatcher, UnitOfWork


@dataclass(frozen=True)
class RelayReport:
    dispatched: int
    in_flight: int
    skipped: bool = False  # another poller held the relay lock


def relay_once(uow: UnitOfWork, dispatcher: Dispatcher, limits: RelayLimits) -> RelayReport:
    """Claim due events, publish one message each, and lease them: all in one transaction.

    Nothing is marked dispatched unless the broker took it. A crash after publishing and before
    commit leaves the events due, and the idempotent handler absorbs the second message."""
    with uow:
        if not uow.outbox.try_lock_relay():
            return RelayReport(dispatched=0, in_flight=0, skipped=True)
        in_flight = uow.outbox.count_in_flight()
        room = min(limits.batch_size, limits.max_in_flight - in_flight)
        if room <= 0:
            return RelayReport(dispatched=0, in_flight=in_flight)
        claimed = uow.outbox.claim_due(room)
        if not claimed:
            return RelayReport(dispatched=0, in_flight=in_flight)
        ids = [event.id for event in claimed]
        dispatcher.dispatch(ids)
        uow.outbox.mark_dispatched(ids, limits.lease_seconds)
        uow.commit()
        return RelayReport(dispatched=len(ids), in_flight=in_flight + len(ids))


def relay_until_idle(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: Dispatcher,
    limits: RelayLimits,
    time_budget_s: float,
    clock: Callable[[], float] = time.monotonic,
) -> RelayReport:
    """Relay batch after batch while claims come back full, within one tick's time budget."""
    started = clock()
    dispatched = 0
    while True:
        report = relay_once(uow_factory(), dispatcher, limits)
        dispatched += report.dispatched
        if report.dispatched < limits.batch_size or clock() - started >= time_budget_s:
            return RelayReport(dispatched, report.in_flight, report.skipped)
