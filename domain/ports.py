"""Ports: what the use cases need from storage and the broker. Adapters and fakes subclass these.

The outbox has one port per client: the unit of work appends to it (`Outbox`), the relay moves
events to the broker and sequences them (`RelayQueue`), a delivery settles them
(`DeliveryLedger`), the passes advance the parts of the bars (`PartLedger`), an operator
watches it and revives dead events (`OutboxMonitor`), a delivery reads the checkpoint
(`ProjectionLog`), and a prune folds and deletes its finished events (`Retention`).

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
from domain.parts import DEFAULT_PART_SIZE, BarAt, Blockers, Part, PartStats, Projection
from domain.recalculation import EXAMPLE_RECALCULATION


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
    """Bars, part by part. A bar is the team's: its fields are the bars table's own columns
    (infrastructure/sql/bar_table.py), handed to `Bar(**fields)`."""

    @abstractmethod
    def add(self, bar: Bar, part: Part) -> None:
        """Insert the bar into `part`, with its state as created for its baseline, at the
        part's position: it gets exactly the events after it."""

    @abstractmethod
    def of_part(self, part_id: int) -> list[BarAt]:
        """The part's bars, by id, as stored: what a pass recalculates and saves."""

    @abstractmethod
    def baselines_of_part(self, part_id: int) -> list[BarAt]:
        """The part's bars, by id, each as its baseline holds it, at the baseline's position."""

    @abstractmethod
    def save(self, bars: Sequence[BarAt]) -> int:
        """Write back the bars' fields and positions, those changed since they were read;
        returns how many were written."""

    @abstractmethod
    def take_baselines(self, part: Part) -> int:
        """Make the part's bars as stored their baselines, at the part's position."""

    @abstractmethod
    def mismatched(self, total: int, limit: int) -> list[Bar]:
        """The example's closed form: bars whose value is not `weight * total`, at most
        `limit` of them."""

    @abstractmethod
    def count(self) -> int: ...


class PartLedger(ABC):
    """The parts: which one a pass takes, how far each has applied, and the projection's row."""

    @abstractmethod
    def projection(self) -> Projection: ...

    @abstractmethod
    def adopt(self, recalculation: str) -> bool:
        """Record `recalculation` as the bars', if no part exists yet (nothing was computed
        with the one recorded): a new deployment takes its setting without a rebuild. True
        if it is the one recorded now."""

    @abstractmethod
    def lock_open(self, part_size: int) -> Part:
        """The part a new bar joins, locked until commit (waiting for its pass, if one runs):
        the last part while it has fewer than `part_size` bars, else a new one at the head."""

    @abstractmethod
    def added_bars(self, part_id: int, count: int) -> None: ...

    @abstractmethod
    def claim(self, head: int) -> Part | None:
        """Lock a ready part that is behind `head` (or rebuilding) and due, lowest position
        first, skipping those another pass holds; None if there is none."""

    @abstractmethod
    def pass_due(self) -> bool:
        """Whether some ready, due part is behind the head (or rebuilding): a pass waits for a
        worker. Read without locking."""

    @abstractmethod
    def wait_for_passes(self, position: int) -> int:
        """Wait until no pass holds a ready, due part behind `position` (the parts are read
        again as those passes leave them), and lock those still behind: how many there are.
        0 if a wait runs into the statement timeout: the caller settles for now."""

    @abstractmethod
    def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        """Up to `limit` sequenced events after `position`, in order."""

    @abstractmethod
    def advance(self, part_id: int, position: int, delta_total: int) -> None:
        """After a pass: the part has applied through `position`, `delta_total` more; its
        failures are cleared, and so is a rebuild."""

    @abstractmethod
    def record_failure(self, part_id: int, error: str, retry_in_s: float | None) -> int:
        """Count a failed pass; the part is due again after `retry_in_s`, or dead if None.
        Returns its failures in a row."""

    @abstractmethod
    def blockers(self, position: int) -> Blockers:
        """The parts below `position`, by what they wait for."""

    @abstractmethod
    def stats(self) -> PartStats: ...

    @abstractmethod
    def lowest_position(self) -> int:
        """How far every part has applied: the lowest part's position, the head if none."""

    @abstractmethod
    def parts(self) -> list[Part]:
        """Every part, by id."""

    @abstractmethod
    def dead_parts(self) -> list[Part]: ...

    @abstractmethod
    def revive_dead(self, part_ids: Sequence[int] | None) -> list[int]:
        """Make dead parts ready and due (all when None); returns those revived."""

    @abstractmethod
    def lock(self, part_id: int) -> Part:
        """The part, locked until commit: no pass runs on it meanwhile."""

    @abstractmethod
    def set_baseline(self, part_id: int) -> None:
        """Its bars' baselines are at its position now."""

    @abstractmethod
    def start_rebuild(self, recalculation: str) -> int:
        """Every part back to its baselines' position and total, flagged to rebuild, and
        ready; the projection applied through the lowest of them, computed with
        `recalculation` from now on. Returns the lowest baseline position."""


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
        """Lock up to `limit` pending events that are due and sequenced, oldest first,
        skipping locked ones."""

    @abstractmethod
    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        """Lease the events, counting a dispatch each: due again unless processed in time.
        IllegalTransitionError if one is finished or dead (DISPATCH)."""

    @abstractmethod
    def claim_unsequenced(self, limit: int) -> list[StoredEvent]:
        """Lock the head, then up to `limit` due pending events that have no position yet,
        oldest first, skipping locked ones. The head first: a settling delivery takes the
        projection's row before the events it stamps, and so does this, so neither waits
        for the other in a cycle."""

    @abstractmethod
    def sequence(self, events: Sequence[tuple[int, int]]) -> None:
        """Give the events, as (id, delta), the next positions after the head, in the order
        given, and move the head. Called by one relay at a time (the relay lock)."""

    @abstractmethod
    def record_batch(self, dispatched: int, leases_expired: int) -> None:
        """Note that a relay batch was committed, when (by the database's clock) and what it
        moved: what tells an operator, from any host, that the relay is alive."""


class DeliveryLedger(ABC):
    """The outbox as a delivery sees it: settle what every part has applied, and the message."""

    @abstractmethod
    def lock(self, event_id: int) -> StoredEvent:
        """Load and lock the delivered event; EventNotFoundError if there is none."""

    @abstractmethod
    def apply_through(self, position: int) -> int:
        """Every part has applied the events through `position`: stamp those not yet applied,
        and make each processed unless a message of it is out. One settler at a time, in
        order; returns how many became applied."""

    @abstractmethod
    def message_back(self, event_id: int) -> bool:
        """The delivered event's message is back: processed if applied and dispatched.
        Whether it was (False: not applied yet, or not dispatched)."""

    @abstractmethod
    def wait_for_parts(self, event_id: int, retry_in_s: float) -> None:
        """The delivered event is not applied by every part yet, and its message is back: it
        is pending again, due after `retry_in_s`, so that a message drives the parts on if
        none other does. Not a failure."""

    @abstractmethod
    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        """Count a failure, on the event and in the failure counters; make the event due
        again after `retry_in_s`, or dead if None. IllegalTransitionError if the event is
        finished, dead or applied (FAIL): nothing failed that a retry could fix."""

    @abstractmethod
    def reopen_after(self, position: int) -> int:
        """A rebuild replays the events after `position`: each is unapplied again, and
        pending unless a message of it is out. Returns how many."""


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
    """What pruning has folded: a delivery reads it to tell a pruned event from one never
    held, and a rebuild keeps a prune out while it starts."""

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
        self,
        older_than_s: float,
        limit: int,
        after_id: int = 0,
        below_id: int | None = None,
        through_position: int | None = None,
    ) -> list[StoredEvent]:
        """Lock up to `limit` processed events that occurred at least `older_than_s` ago, with
        ids above `after_id` and below `below_id`, at positions up to `through_position`
        (the bars' baselines'), lowest first, skipping locked ones. Pending, in-flight and
        dead events never are."""

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
    parts: PartLedger
    outbox: Outbox
    relay_queue: RelayQueue
    deliveries: DeliveryLedger
    monitor: OutboxMonitor
    projection_log: ProjectionLog
    retention: Retention
    part_size: int = DEFAULT_PART_SIZE  # bars per part, for the bars it creates
    recalculation: str = EXAMPLE_RECALCULATION  # the one the first bars are computed with

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
