"""Ports: what the use cases need from storage and the broker. Adapters and fakes subclass these.

The outbox has one port per client: the unit of work appends to it (`Outbox`), the relay moves
events to the broker (`RelayQueue`), a delivery applies them (`DeliveryLedger`), an operator
watches it and revives dead events (`OutboxMonitor`), verify and rebuild sum it and read the
checkpoint (`ProjectionLog`), and a prune folds and deletes its finished events (`Retention`).

An adapter that moves events between states does so by the domain's rule (`domain.outbox`'s
transitions): an event in a state the rule does not allow raises IllegalTransitionError, never
silently matches nothing. The unit of work is then to be rolled back."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from types import TracebackType
from typing import Self

from domain.bar import Bar
from domain.errors import FooNotFoundError
from domain.events import FooEvent
from domain.foo import Foo
from domain.outbox import Checkpoint, OutboxHealth, OutboxStats, StoredEvent


class FooRepository(ABC):
    def __init__(self) -> None:
        self.seen: list[Foo] = []

    def add(self, foo: Foo) -> None:
        self._add(foo)
        self.seen.append(foo)

    def get(self, foo_id: int) -> Foo:
        foo = self._get(foo_id)
        if foo is None:
            raise FooNotFoundError(foo_id)
        self.seen.append(foo)
        return foo

    @abstractmethod
    def _add(self, foo: Foo) -> None: ...

    @abstractmethod
    def _get(self, foo_id: int) -> Foo | None: ...

    @abstractmethod
    def completed_total(self) -> int:
        """`sum(amount for completed foos)`: what every bar is weighted by once drained."""


class BarRepository(ABC):
    """Bars, and the running total of every delta applied to them (the projection's position)."""

    @abstractmethod
    def add(self, bar: Bar) -> None: ...

    @abstractmethod
    def lock_applied_total(self) -> int:
        """The sum of every delta applied so far, locked until commit.

        Holding the lock keeps event application out while a bar is created, so a new bar
        starts from exactly the deltas that the bars around it already carry."""

    @abstractmethod
    def apply_delta(self, delta: int, events: int = 1) -> int:
        """The heavy step: add `delta * weight` to every bar and `delta` to the applied total,
        on behalf of `events` events (their deltas summed). Returns how many bars changed."""

    @abstractmethod
    def reset_all(self, total: int, events: int) -> int:
        """Set every bar to `weight * total`, the applied total to `total` (from `events`)."""

    @abstractmethod
    def mismatched(self, total: int, limit: int) -> list[Bar]:
        """Bars whose value is not `weight * total`, at most `limit` of them."""

    @abstractmethod
    def count(self) -> int: ...


class Outbox(ABC):
    """Where a unit of work writes its events, in its own transaction."""

    @abstractmethod
    def append(self, event: FooEvent) -> None: ...


class RelayQueue(ABC):
    """The outbox as the relay sees it: events due for dispatch, and the messages out."""

    @abstractmethod
    def try_lock(self) -> bool:
        """Take the relay lock for this transaction; False if another poller holds it."""

    @abstractmethod
    def count_in_flight(self) -> int:
        """Dispatched events whose message has not come back, applied or not, lease expired or
        not: what bounds the messages the broker holds."""

    @abstractmethod
    def claim_expired(self, limit: int) -> list[StoredEvent]:
        """Lock up to `limit` dispatched events whose lease has expired, skipping locked ones."""

    @abstractmethod
    def claim_pending(self, limit: int) -> list[StoredEvent]:
        """Lock up to `limit` pending events that are due, oldest first, skipping locked ones."""

    @abstractmethod
    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        """Lease the events, counting a dispatch each: due again unless processed in time.
        IllegalTransitionError if one is finished or dead (DISPATCH)."""

    @abstractmethod
    def record_batch(self, dispatched: int, leases_expired: int) -> None:
        """Note that a relay batch was committed, when (by the database's clock) and what it
        moved: what tells an operator, from any host, that the relay is alive."""


class DeliveryLedger(ABC):
    """The outbox as a delivery sees it: which events a pass applies, and what failed."""

    @abstractmethod
    def lock(self, event_id: int) -> StoredEvent:
        """Load and lock the delivered event; EventNotFoundError if there is none."""

    @abstractmethod
    def lock_waiting(self, limit: int, exclude_id: int) -> list[StoredEvent]:
        """Lock up to `limit` unfinished events that are not applied and never failed, oldest
        due first, skipping locked ones: what a pass may apply besides its own event."""

    @abstractmethod
    def record_applied(self, event_ids: Sequence[int]) -> list[int]:
        """Enter the events in the applied guard; returns those that were not in it already
        (a unique key decides): only their deltas may be applied."""

    @abstractmethod
    def finish_pass(self, applied_ids: Sequence[int], delivered_id: int) -> None:
        """After the bars took their deltas: stamp `applied_ids` applied, and make processed
        each of them, and the delivered event, whose message is no longer out. Another
        dispatched event stays dispatched until its own message comes back.
        IllegalTransitionError if one of `applied_ids` is finished, dead or applied (APPLY);
        the delivered event in any other state is left as it is."""

    @abstractmethod
    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        """Count a failure, on the event and in the failure counters; make the event due
        again after `retry_in_s`, or dead if None. IllegalTransitionError if the event is
        finished, dead or applied (FAIL): nothing failed that a retry could fix."""


class OutboxMonitor(ABC):
    """The outbox as an operator sees it: how it is doing, and its dead events."""

    @abstractmethod
    def stats(self) -> OutboxStats:
        """Events by state; `processed` counts every event ever processed, pruned ones
        included. Unfinished events and the counters only: never a scan of the finished ones."""

    @abstractmethod
    def health(self) -> OutboxHealth:
        """Unfinished events and the counters: never a scan of the finished ones."""

    @abstractmethod
    def dead_events(self) -> list[StoredEvent]: ...

    @abstractmethod
    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        """Make dead events due again (all of them when `event_ids` is None); returns those it
        revived: an id that is not a dead event's is left out."""


class ProjectionLog(ABC):
    """The log as the projection sees it: what verify and rebuild sum, and what pruning has
    folded (which a delivery reads to tell a pruned event from one never held)."""

    @abstractmethod
    def applied_sum(self) -> tuple[int, int]:
        """The sum of the applied events' deltas, and how many there are: the whole log as
        the projection sees it, computed where the log is (one aggregate in SQL)."""

    @abstractmethod
    def checkpoint(self) -> Checkpoint:
        """What pruning has folded so far."""

    @abstractmethod
    def lock_checkpoint(self) -> Checkpoint:
        """The checkpoint, locked to the end of the transaction: no prune folds events into it
        (and deletes them from the log) meanwhile."""


class Retention(ABC):
    """The log as a prune sees it: the finished events old enough to go, folded and deleted."""

    @abstractmethod
    def first_recent_id(self, older_than_s: float) -> int | None:
        """The lowest id of an event that occurred less than `older_than_s` ago, if any. Ids
        rise with time, so the events old enough to prune lie below it (but for a straggler
        whose transaction committed late: the next prune takes it)."""

    @abstractmethod
    def lock_prunable(
        self, older_than_s: float, limit: int, after_id: int = 0, below_id: int | None = None
    ) -> list[StoredEvent]:
        """Lock up to `limit` processed events that occurred at least `older_than_s` ago, with
        ids above `after_id` and below `below_id`, lowest first, skipping locked ones.
        Pending, in-flight and dead events never are."""

    @abstractmethod
    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        """Add the events (their deltas summing to `total`) to the checkpoint, then delete
        their rows from every table. IllegalTransitionError if one is not processed (PRUNE)."""


class Dispatcher(ABC):
    """Publishes recalculation messages to the broker."""

    @abstractmethod
    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        """Return only once the broker has taken a message for every id; else DispatchError.

        Each message expires after `expires_in_s`, before its event's lease does: a message
        nobody took is gone from the broker when the event is dispatched again."""


class UnitOfWork(ABC):
    """One transaction. Rolls back unless `commit()` is called; commit also writes the events
    that the foos it touched have emitted into the outbox, in the same transaction."""

    foos: FooRepository
    bars: BarRepository
    outbox: Outbox
    relay_queue: RelayQueue
    deliveries: DeliveryLedger
    monitor: OutboxMonitor
    projection_log: ProjectionLog
    retention: Retention

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.rollback()

    def commit(self) -> None:
        written = 0
        for foo in self.foos.seen:
            while foo.events:
                self.outbox.append(foo.events.pop(0))
                written += 1
        self._commit()
        if written:
            self.events_committed()

    @abstractmethod
    def _commit(self) -> None: ...

    def events_committed(self) -> None:  # noqa: B027 - optional hook, nothing by default
        """Called after a commit that wrote events: a chance to wake the relay at once."""

    @abstractmethod
    def rollback(self) -> None: ...
