"""In-memory fakes of the ports in domain/ports.py, with the SQL adapters' semantics.

A FakeDatabase is the committed state. Each `with uow:` works on a deep copy of it (the
transaction); `commit()` makes that copy the committed state, anything else discards it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

from domain.bar import Bar
from domain.errors import ConcurrentUpdateError, DispatchError, EventNotFoundError
from domain.events import FooEvent
from domain.foo import Foo, FooState
from domain.outbox import (
    UNFINISHED_STATES,
    Checkpoint,
    EventState,
    OutboxHealth,
    OutboxStats,
    StoredEvent,
)
from domain.ports import (
    BarRepository,
    DeliveryLedger,
    Dispatcher,
    FooRepository,
    Outbox,
    OutboxAdmin,
    RelayQueue,
    UnitOfWork,
)


class ManualClock:
    """A clock that only moves when told to: `clock()` reads it, `advance(s)` moves it."""

    def __init__(self, now: float = 1_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class OutboxRow:
    id: int
    event_type: str
    payload: Any
    occurred_at: float
    available_at: float
    state: EventState = EventState.PENDING
    dispatches: int = 0
    last_error: str | None = None
    failures: int = 0
    applied: bool = False

    def stored(self) -> StoredEvent:
        return StoredEvent(
            self.id,
            self.event_type,
            copy.deepcopy(self.payload),
            self.state,
            self.dispatches,
            self.last_error,
            self.failures,
            self.applied,
        )


@dataclass
class FakeData:
    foos: dict[int, Foo] = field(default_factory=dict)
    bars: dict[int, Bar] = field(default_factory=dict)
    applied_total: int = 0
    events_applied: int = 0
    events: dict[int, OutboxRow] = field(default_factory=dict)
    applied: set[int] = field(default_factory=set)  # the applied guard
    # The monitoring counters, by OutboxHealth's field names, and the relay's last pass.
    counters: dict[str, int] = field(default_factory=dict)
    last_relay_pass_at: float | None = None
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    last_id: dict[str, int] = field(default_factory=lambda: {"foos": 0, "bars": 0, "events": 0})

    def next_id(self, table: str) -> int:
        self.last_id[table] += 1
        return self.last_id[table]


@dataclass
class FakeDatabase:
    data: FakeData = field(default_factory=FakeData)
    clock: Callable[[], float] = field(default_factory=ManualClock)
    # Raised, one per call, by the next calls of FakeBarRepository.apply_delta.
    apply_delta_errors: list[Exception] = field(default_factory=list)


class FakeFooRepository(FooRepository):
    def __init__(self, data: FakeData) -> None:
        super().__init__()
        self.data = data

    def _add(self, foo: Foo) -> None:
        foo.id = self.data.next_id("foos")
        foo.version = 1
        self.data.foos[foo.id] = foo

    def _get(self, foo_id: int) -> Foo | None:
        return self.data.foos.get(foo_id)

    def completed_total(self) -> int:
        return sum(f.amount for f in self.data.foos.values() if f.state is FooState.COMPLETED)


class FakeBarRepository(BarRepository):
    def __init__(self, data: FakeData, errors: list[Exception]) -> None:
        self.data = data
        self.errors = errors

    def add(self, bar: Bar) -> None:
        bar.id = self.data.next_id("bars")
        self.data.bars[bar.id] = bar

    def _get(self, bar_id: int) -> Bar | None:
        return self.data.bars.get(bar_id)

    def lock_applied_total(self) -> int:
        return self.data.applied_total

    def apply_delta(self, delta: int, events: int = 1) -> int:
        if self.errors:
            raise self.errors.pop(0)
        self.data.applied_total += delta
        self.data.events_applied += events
        if delta == 0:
            return 0
        for bar in self.data.bars.values():
            bar.value += delta * bar.weight
        return len(self.data.bars)

    def reset_all(self, total: int, events: int) -> int:
        self.data.applied_total, self.data.events_applied = total, events
        for bar in self.data.bars.values():
            bar.value = total * bar.weight
        return len(self.data.bars)

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        bars = sorted(self.data.bars.values(), key=lambda bar: bar.id or 0)
        return [bar for bar in bars if bar.value != total * bar.weight][:limit]

    def count(self) -> int:
        return len(self.data.bars)


class FakeOutboxTable:
    """The outbox rows of one transaction, shared by the fakes of its four ports."""

    def __init__(self, data: FakeData, clock: Callable[[], float]) -> None:
        self.data = data
        self.clock = clock

    def row(self, event_id: int) -> OutboxRow:
        row = self.data.events.get(event_id)
        if row is None:
            raise EventNotFoundError(event_id)
        return row

    def count(self, **increments: int) -> None:
        for name, by in increments.items():
            self.data.counters[name] = self.data.counters.get(name, 0) + by

    def rows(self, keep: Callable[[OutboxRow], bool] = lambda row: True) -> list[OutboxRow]:
        """The rows that `keep` wants, in the order of the due index."""
        rows = sorted(self.data.events.values(), key=lambda row: (row.available_at, row.id))
        return [row for row in rows if keep(row)]


class FakeOutbox(Outbox):
    def __init__(self, table: FakeOutboxTable) -> None:
        self.table = table

    def append(self, event: FooEvent) -> None:
        now, data = self.table.clock(), self.table.data
        row_id = data.next_id("events")
        data.events[row_id] = OutboxRow(row_id, event.type_name, event.payload(), now, now)


class FakeRelayQueue(RelayQueue):
    def __init__(self, table: FakeOutboxTable) -> None:
        self.table = table

    def try_lock(self) -> bool:
        return True

    def count_in_flight(self) -> int:
        return len(self.table.rows(lambda row: row.state is EventState.DISPATCHED))

    def _claim(self, state: EventState, limit: int) -> list[StoredEvent]:
        now = self.table.clock()
        due = self.table.rows(lambda row: row.state is state and row.available_at <= now)
        return [row.stored() for row in due[: max(limit, 0)]]

    def claim_expired(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.DISPATCHED, limit)

    def claim_pending(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.PENDING, limit)

    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        for row in map(self.table.row, event_ids):
            row.state, row.dispatches = EventState.DISPATCHED, row.dispatches + 1
            row.available_at = self.table.clock() + lease_seconds

    def record_pass(self, dispatched: int, leases_expired: int) -> None:
        self.table.count(
            relay_passes=1, events_dispatched=dispatched, leases_expired=leases_expired
        )
        self.table.data.last_relay_pass_at = self.table.clock()


class FakeDeliveryLedger(DeliveryLedger):
    def __init__(self, table: FakeOutboxTable) -> None:
        self.table = table

    def lock(self, event_id: int) -> StoredEvent:
        return self.table.row(event_id).stored()

    def lock_waiting(self, limit: int, exclude_id: int) -> list[StoredEvent]:
        waiting = self.table.rows(
            lambda r: (
                r.state in UNFINISHED_STATES and not (r.failures or r.applied or r.id == exclude_id)
            )
        )
        return [row.stored() for row in waiting[: max(limit, 0)]]

    def record_applied(self, event_ids: Sequence[int]) -> list[int]:
        guard = self.table.data.applied
        rows = [self.table.row(event_id) for event_id in sorted(set(event_ids))]
        recorded = [row.id for row in rows if row.id not in guard]
        guard.update(recorded)
        return recorded

    def finish_pass(self, applied_ids: Sequence[int], delivered_id: int) -> None:
        delivered = self.table.row(delivered_id)
        if delivered.state is EventState.DISPATCHED and delivered.applied:
            delivered.state = EventState.PROCESSED
        for row in map(self.table.row, applied_ids):
            row.last_error, row.applied = None, True
            if row.state is not EventState.DISPATCHED or row is delivered:
                row.state = EventState.PROCESSED

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        row = self.table.row(event_id)
        if row.state not in UNFINISHED_STATES:
            return
        row.last_error, row.failures = error[:4000], row.failures + 1
        self.table.count(event_failures=1, events_dead=int(retry_in_s is None))
        if retry_in_s is None:
            row.state = EventState.DEAD
        else:
            row.state, row.available_at = EventState.PENDING, self.table.clock() + retry_in_s


class FakeOutboxAdmin(OutboxAdmin):
    def __init__(self, table: FakeOutboxTable) -> None:
        self.table = table

    def stats(self) -> OutboxStats:
        rows = self.table.rows()

        def count(state: EventState) -> int:
            return sum(1 for row in rows if row.state is state)

        unfinished = [row.occurred_at for row in rows if row.state in UNFINISHED_STATES]
        oldest = max(self.table.clock() - min(unfinished), 0.0) if unfinished else None
        return OutboxStats(
            pending=count(EventState.PENDING),
            in_flight=count(EventState.DISPATCHED),
            processed=count(EventState.PROCESSED),
            dead=count(EventState.DEAD),
            oldest_pending_age_s=oldest,
        )

    def health(self) -> OutboxHealth:
        stats, data = self.stats(), self.table.data
        last_pass = data.last_relay_pass_at
        return OutboxHealth(
            pending=stats.pending,
            in_flight=stats.in_flight,
            dead=stats.dead,
            oldest_pending_age_s=stats.oldest_pending_age_s or 0.0,
            events_applied=data.events_applied,
            event_failures=data.counters.get("event_failures", 0),
            events_dead=data.counters.get("events_dead", 0),
            events_dispatched=data.counters.get("events_dispatched", 0),
            leases_expired=data.counters.get("leases_expired", 0),
            relay_passes=data.counters.get("relay_passes", 0),
            last_relay_pass_age_s=None if last_pass is None else self.table.clock() - last_pass,
            events_pruned=data.checkpoint.events,
        )

    def _in_id_order(self, keep: Callable[[OutboxRow], bool]) -> list[StoredEvent]:
        return [row.stored() for row in sorted(self.table.rows(keep), key=lambda row: row.id)]

    def applied_events(self) -> Iterator[StoredEvent]:
        yield from self._in_id_order(lambda row: row.applied)

    def applied_sum(self) -> tuple[int, int]:
        applied = [row.stored().event().delta for row in self.table.rows(lambda r: r.applied)]
        return sum(applied), len(applied)

    def dead_events(self) -> list[StoredEvent]:
        return self._in_id_order(lambda row: row.state is EventState.DEAD)

    def checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def lock_checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def first_recent_id(self, older_than_s: float) -> int | None:
        cutoff = self.table.clock() - older_than_s
        recent = self._in_id_order(lambda row: row.occurred_at > cutoff)
        return recent[0].id if recent else None

    def lock_prunable(
        self, older_than_s: float, limit: int, after_id: int = 0, below_id: int | None = None
    ) -> list[StoredEvent]:
        cutoff = self.table.clock() - older_than_s
        old = self._in_id_order(
            lambda row: (
                row.state is EventState.PROCESSED
                and row.occurred_at <= cutoff
                and after_id < row.id < (row.id + 1 if below_id is None else below_id)
            )
        )
        return old[: max(limit, 0)]

    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        data, was = self.table.data, self.table.data.checkpoint
        data.checkpoint = Checkpoint(
            was.total + total,
            was.events + len(events),
            max([was.last_pruned_id, *(event.id for event in events)]),
        )
        for event in events:
            data.applied.discard(event.id)
            del data.events[event.id]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        wanted = set(self.table.data.events) if event_ids is None else set(event_ids)
        dead = self.table.rows(lambda row: row.state is EventState.DEAD and row.id in wanted)
        for row in dead:
            row.state, row.failures, row.available_at = (
                EventState.PENDING,
                0,
                self.table.clock(),
            )
        return sorted(row.id for row in dead)


class FakeUnitOfWork(UnitOfWork):
    """`with uow:` starts a transaction on a copy of the committed data; commit publishes it.

    Like the SQL adapter, a foo changed by someone else since it was read (its version moved
    on) makes the commit fail with ConcurrentUpdateError; a committed change bumps the version.
    """

    def __init__(self, database: FakeDatabase | None = None) -> None:
        self.database = database if database is not None else FakeDatabase()
        self.committed = False

    def __enter__(self) -> Self:
        self.committed = False
        self._begin()
        return super().__enter__()

    def _begin(self) -> None:
        self.data = copy.deepcopy(self.database.data)
        self.foos = FakeFooRepository(self.data)
        self.bars = FakeBarRepository(self.data, self.database.apply_delta_errors)
        table = FakeOutboxTable(self.data, self.database.clock)
        self.outbox = FakeOutbox(table)
        self.relay_queue = FakeRelayQueue(table)
        self.deliveries = FakeDeliveryLedger(table)
        self.admin = FakeOutboxAdmin(table)

    def _commit(self) -> None:
        before = self.database.data.foos
        for foo_id, foo in self.data.foos.items():
            old = before.get(foo_id)
            if old is None or (old.amount, old.state) == (foo.amount, foo.state):
                continue
            if old.version != foo.version:
                raise ConcurrentUpdateError()
            foo.version += 1
        self.database.data = copy.deepcopy(self.data)
        self.committed = True

    def rollback(self) -> None:
        self._begin()


class FakeDispatcher(Dispatcher):
    """Records every id it publishes; `fail_with` makes the next calls raise DispatchError."""

    def __init__(self) -> None:
        self.dispatched: list[int] = []
        self.batches: list[list[int]] = []
        self.fail_with: DispatchError | None = None
        self.expiries: list[float] = []

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.expiries.append(expires_in_s)
        self.batches.append(list(event_ids))
        self.dispatched.extend(event_ids)
