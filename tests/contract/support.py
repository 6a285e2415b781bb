"""What every port's contract shares: the adapters it runs on, each a mixin that provides the
fixtures (in memory, SQLite, PostgreSQL), and the steps its tests take through the ports.

A contract is a class of tests whose name does not start with `Test`; each contract file
subclasses it once per adapter, as `class TestFooRepositoryInMemory(InMemory, Contract)`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy import select

from domain.bar import Bar
from domain.events import FooCompleted, FooEvent
from domain.foo import Foo
from domain.outbox import StoredEvent
from domain.ports import UnitOfWork
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork
from infrastructure.settings import Settings
from infrastructure.sql.schema import bars

UowFactory = Callable[[], UnitOfWork]
BarValues = Callable[[list[int]], list[int]]  # committed bars' values, by id, in that order
LONG_LEASE = 600.0


class InMemory:
    @pytest.fixture
    def database(self) -> InMemoryDatabase:
        return InMemoryDatabase(clock=time.monotonic)

    @pytest.fixture
    def uow_factory(self, database: InMemoryDatabase) -> UowFactory:
        return lambda: InMemoryUnitOfWork(database)

    @pytest.fixture
    def bar_values(self, database: InMemoryDatabase) -> BarValues:
        return lambda ids: [database.data.bars[bar_id].value for bar_id in ids]


class _Sql:
    url_fixture: str

    @pytest.fixture
    def sql_container(self, request: pytest.FixtureRequest) -> Iterator[Container]:
        container = Container(Settings(database_url=request.getfixturevalue(self.url_fixture)))
        yield container
        container.close()

    @pytest.fixture
    def uow_factory(self, sql_container: Container) -> UowFactory:
        return sql_container.uow

    @pytest.fixture
    def bar_values(self, sql_container: Container) -> BarValues:
        def read(ids: list[int]) -> list[int]:
            with sql_container.engine.connect() as connection:
                rows = connection.execute(select(bars.c.id, bars.c.value)).all()
            values = {int(row.id): int(row.value) for row in rows}
            return [values[bar_id] for bar_id in ids]

        return read


class Sqlite(_Sql):
    url_fixture = "sqlite_url"


@pytest.mark.postgres
class Postgres(_Sql):
    url_fixture = "pg_url"


def add_foo(uow_factory: UowFactory, amount: int = 10, complete: bool = False) -> int:
    with uow_factory() as uow:
        foo = Foo(amount)
        uow.foos.add(foo)
        assert foo.id is not None
        if complete:
            foo.complete()
        uow.commit()
        return foo.id


def add_bars(uow_factory: UowFactory, *weights: int, value: int = 0) -> list[int]:
    with uow_factory() as uow:
        new = [Bar(weight, value=value) for weight in weights]
        for bar in new:
            uow.bars.add(bar)
        uow.commit()
        return [bar.id for bar in new if bar.id is not None]


def pending_events(uow_factory: UowFactory) -> list[StoredEvent]:
    with uow_factory() as uow:
        return uow.relay_queue.claim_pending(10_000)


def claimed_ids(uow: UnitOfWork, limit: int = 10) -> tuple[list[int], list[int]]:
    """The ids the relay would claim now: (expired leases, due pending events)."""
    expired = [event.id for event in uow.relay_queue.claim_expired(limit)]
    pending = [event.id for event in uow.relay_queue.claim_pending(limit)]
    return expired, pending


def append(uow_factory: UowFactory, *events: FooEvent) -> list[int]:
    """Commit events to the outbox; return their ids."""
    with uow_factory() as uow:
        for event in events:
            uow.outbox.append(event)
        uow.commit()
    return [event.id for event in pending_events(uow_factory)][-len(events) :]


def process(uow: UnitOfWork, event_id: int) -> bool:
    """What a delivery's pass does for its own event; False if it was applied already."""
    recorded = uow.deliveries.record_applied([event_id])
    if recorded:
        uow.bars.apply_delta(0, events=len(recorded))  # the delta does not matter here
    uow.deliveries.finish_pass(recorded, delivered_id=event_id)
    return recorded == [event_id]


def stored(uow_factory: UowFactory, event_id: int) -> StoredEvent:
    with uow_factory() as uow:
        return uow.deliveries.lock(event_id)


def completed(foo_id: int, delta: int) -> FooCompleted:
    return FooCompleted(foo_id=foo_id, delta=delta)


def three_applied_two_pruned(uow_factory: UowFactory) -> list[int]:
    """Three events of deltas 10, 20, 30, applied; the first two pruned (and the last kept
    back by its id): the log holds one, the checkpoint the other two. Their ids."""
    ids = append(uow_factory, *(completed(n, 10 * n) for n in range(1, 4)))
    with uow_factory() as uow:
        for event_id in ids:
            process(uow, event_id)
        uow.commit()
    with uow_factory() as uow:
        pruned = uow.retention.lock_prunable(0, 10, below_id=ids[2])
        uow.retention.fold_and_delete(pruned, sum(e.event().delta for e in pruned))
        uow.commit()
    return ids
