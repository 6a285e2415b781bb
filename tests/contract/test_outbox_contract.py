"""The Outbox port's contract (what a unit of work appends), held by every adapter: in memory,
SQLite, PostgreSQL."""

from __future__ import annotations

from domain.events import FooCancelled, FooCompleted, FooRevised
from domain.outbox import EventState
from tests.contract.support import (
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_foo,
    completed,
    pending_events,
)


class OutboxContract:
    """A unit of work's events, appended at its commit, in the order they happened."""

    def test_a_foos_events_reach_the_outbox_only_when_the_unit_of_work_commits(
        self,
        uow_factory: UowFactory,
    ) -> None:
        foo_id = add_foo(uow_factory, amount=5)
        with uow_factory() as uow:
            uow.foos.get(foo_id).complete()
        assert pending_events(uow_factory) == []

        with uow_factory() as uow:
            uow.foos.get(foo_id).complete()
            uow.commit()

        [event] = pending_events(uow_factory)
        assert (event.event_type, event.payload) == ("FooCompleted", {"foo_id": foo_id, "delta": 5})
        assert (event.state, event.dispatches, event.failures, event.last_error) == (
            EventState.PENDING,
            0,
            0,
            None,
        )
        assert event.event() == completed(foo_id, 5)

    def test_events_are_written_in_the_order_they_happened(self, uow_factory: UowFactory) -> None:
        first, second = add_foo(uow_factory, 10), add_foo(uow_factory, 20)
        with uow_factory() as uow:
            foo = uow.foos.get(first)
            foo.complete()
            uow.foos.get(second).complete()
            foo.revise(15)
            uow.commit()
        with uow_factory() as uow:
            uow.foos.get(first).cancel()
            uow.commit()

        events = pending_events(uow_factory)

        assert [event.event() for event in events] == [
            FooCompleted(foo_id=first, delta=10),
            FooRevised(foo_id=first, delta=5),
            FooCompleted(foo_id=second, delta=20),
            FooCancelled(foo_id=first, delta=-15),
        ]
        assert [event.id for event in events] == sorted(event.id for event in events)


class TestOutboxInMemory(InMemory, OutboxContract):
    pass


class TestOutboxSqlite(Sqlite, OutboxContract):
    pass


class TestOutboxPostgres(Postgres, OutboxContract):
    pass
