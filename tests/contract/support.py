"""What every port's contract shares: the adapters it runs on, each a mixin that provides the
fixtures (in memory, SQLite, PostgreSQL), and the steps its tests take through the ports.

A contract is a class of tests whose name does not start with `Test`; each contract file
subclasses it once per adapter, as `class TestFooRepositoryInMemory(InMemory, Contract)`."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from sqlalchemy import insert, select

from domain.bar import Bar
from domain.events import FooCompleted, FooEvent
from domain.foo import Foo
from domain.outbox import StoredEvent
from domain.parts import Part
from domain.ports import UnitOfWork
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork, OutboxRow
from infrastructure.settings import Settings
from infrastructure.sql.schema import bars, outbox_events

UowFactory = Callable[[], UnitOfWork]
BarValues = Callable[[list[int]], list[int]]  # committed bars' values, by id, in that order
RawEvent = Callable[[str, Any], int]  # commit an outbox row as given (type, payload): its id
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
        return lambda ids: [database.data.bars[bar_id].bar.value for bar_id in ids]

    @pytest.fixture
    def raw_event(self, database: InMemoryDatabase) -> RawEvent:
        def store(event_type: str, payload: Any) -> int:
            event_id = database.data.next_id("events")
            now = database.clock()
            database.data.events[event_id] = OutboxRow(event_id, event_type, payload, now, now)
            return event_id

        return store


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

    @pytest.fixture
    def raw_event(self, sql_container: Container) -> RawEvent:
        def store(event_type: str, payload: Any) -> int:
            with sql_container.engine.begin() as connection:
                return int(
                    connection.execute(
                        insert(outbox_events)
                        .values(event_type=event_type, payload=payload)
                        .returning(outbox_events.c.id)
                    ).scalar_one()
                )

        return store


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


def add_bars(
    uow_factory: UowFactory, *weights: int, value: int = 0, part_size: int = 1_000
) -> list[int]:
    """Bars of these weights, each starting at `value`, in the parts they join (as
    create_bars does, but with the values given)."""
    ids: list[int] = []
    with uow_factory() as uow:
        for weight in weights:
            part = uow.parts.lock_open(part_size)
            bar = Bar(weight, value=value)
            uow.bars.add(bar, part)
            uow.parts.added_bars(part.id, 1)
            assert bar.id is not None
            ids.append(bar.id)
        uow.commit()
    return ids


def part_of(uow_factory: UowFactory, bar_id: int) -> Part:
    """The part that holds the bar."""
    with uow_factory() as uow:
        for part in uow.parts.parts():
            if bar_id in [each.bar.id for each in uow.bars.of_part(part.id)]:
                return part
    raise AssertionError(f"bar {bar_id} is in no part")


def pending_events(uow_factory: UowFactory) -> list[StoredEvent]:
    with uow_factory() as uow:
        return uow.relay_queue.claim_unsequenced(10_000)


def claimed_ids(uow: UnitOfWork, limit: int = 10) -> tuple[list[int], list[int]]:
    """The ids the relay would claim now: (expired leases, due pending events, sequenced or
    not yet)."""
    expired = [event.id for event in uow.relay_queue.claim_expired(limit)]
    pending = [event.id for event in uow.relay_queue.claim_pending(limit)]
    pending += [event.id for event in uow.relay_queue.claim_unsequenced(limit)]
    return expired, sorted(pending)[:limit]


def append(uow_factory: UowFactory, *events: FooEvent) -> list[int]:
    """Commit events to the outbox; return their ids."""
    with uow_factory() as uow:
        for event in events:
            uow.outbox.append(event)
        uow.commit()
    return [event.id for event in pending_events(uow_factory)][-len(events) :]


def sequence(uow: UnitOfWork, *event_ids: int) -> list[int]:
    """Give the events their positions, as the relay does, in the order given; their positions."""
    events = [uow.deliveries.lock(event_id) for event_id in event_ids]
    uow.relay_queue.sequence([(event.id, event.event().delta) for event in events])
    return [position_of(uow, event_id) for event_id in event_ids]


def position_of(uow: UnitOfWork, event_id: int) -> int:
    position = uow.deliveries.lock(event_id).position
    assert position is not None, f"event {event_id} is not sequenced"
    return position


def process(uow: UnitOfWork, event_id: int) -> bool:
    """What a delivery's settling does once every part has passed its event: the event
    sequenced if it is not yet, applied through its position, and its message back. False if
    it was applied already."""
    event = uow.deliveries.lock(event_id)
    if event.position is None:
        sequence(uow, event_id)
    uow.deliveries.apply_through(position_of(uow, event_id))
    uow.deliveries.message_back(event_id)
    return not event.applied


def stored(uow_factory: UowFactory, event_id: int) -> StoredEvent:
    with uow_factory() as uow:
        return uow.deliveries.lock(event_id)


def completed(foo_id: int, delta: int) -> FooCompleted:
    return FooCompleted(foo_id=foo_id, delta=delta, amount=max(delta, 0), state="completed")


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
