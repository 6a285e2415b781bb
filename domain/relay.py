"""The relay: move due events from the outbox to the broker without ever flooding it."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from domain.errors import DispatchError
from domain.outbox import RelayLimits
from domain.ports import Dispatcher, UnitOfWork


@dataclass(frozen=True)
class RelayReport:
    dispatched: int
    in_flight: int
    skipped: bool = False  # another poller held the relay lock, or the broker is backed off


def relay_once(uow: UnitOfWork, dispatcher: Dispatcher, limits: RelayLimits) -> RelayReport:
    """Claim due events, publish one message each, and lease them: all in one transaction.

    Nothing is marked dispatched unless the broker took it. A crash after publishing and before
    commit leaves the events due, and the idempotent handler absorbs the second message.

    The broker holds at most `max_in_flight` recalculation messages: new events are dispatched
    only into free room, and an expired lease is re-dispatched in its own place, because its
    previous message expired in the broker when the lease did."""
    with uow:
        if not uow.outbox.try_lock_relay():
            return RelayReport(dispatched=0, in_flight=0, skipped=True)
        in_flight = uow.outbox.count_in_flight()
        expired = uow.outbox.claim_expired(limits.batch_size)
        room = min(limits.batch_size - len(expired), limits.max_in_flight - in_flight)
        fresh = uow.outbox.claim_pending(room) if room > 0 else []
        claimed = expired + fresh
        if not claimed:
            return RelayReport(dispatched=0, in_flight=in_flight)
        ids = [event.id for event in claimed]
        # The message must be gone before the lease ends; a tenth of the lease is the margin.
        dispatcher.dispatch(ids, expires_in_s=limits.lease_seconds * 0.9)
        uow.outbox.mark_dispatched(ids, limits.lease_seconds)
        uow.commit()
        return RelayReport(dispatched=len(ids), in_flight=in_flight + len(fresh))


@dataclass
class DispatchBackoff:
    """While the broker refuses messages, poll less and less often instead of spinning."""

    base_s: float = 1.0
    max_s: float = 30.0
    clock: Callable[[], float] = time.monotonic
    failures: int = 0
    resume_at: float = 0.0

    def ready(self) -> bool:
        return self.clock() >= self.resume_at

    def failed(self) -> float:
        self.failures += 1
        delay = min(self.max_s, self.base_s * 2.0 ** min(self.failures - 1, 30))
        self.resume_at = self.clock() + delay
        return delay

    def succeeded(self) -> None:
        self.failures = 0
        self.resume_at = 0.0


def relay_until_idle(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: Dispatcher,
    limits: RelayLimits,
    time_budget_s: float,
    backoff: DispatchBackoff | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> RelayReport:
    """Relay batch after batch while claims come back full, within one tick's time budget.

    A DispatchError propagates after arming the backoff: the events stay due."""
    backoff = backoff or DispatchBackoff(clock=clock)
    if not backoff.ready():
        return RelayReport(dispatched=0, in_flight=0, skipped=True)
    started = clock()
    dispatched = 0
    while True:
        try:
            report = relay_once(uow_factory(), dispatcher, limits)
        except DispatchError:
            backoff.failed()
            raise
        backoff.succeeded()
        dispatched += report.dispatched
        if report.dispatched < limits.batch_size or clock() - started >= time_budget_s:
            return RelayReport(dispatched, report.in_flight, report.skipped)
