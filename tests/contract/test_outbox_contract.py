"""The Outbox port's contract (what a unit of work appends), held by every adapter: in memory,
SQLite, PostgreSQL."""

from __future__ import annotations

from domain.events import FooCancelled, FooCompleted, FooRevised
from domain.outbox import EventState
from tests.contract.support import (
    InMemory,
    Postgres,
    RawEvent,
    Sqlite,
    UowFactory,
    add_foo,
    completed,
    pending_events,
    sequence,
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
        assert (event.event_type, event.payload) == (
            "FooCompleted",
            {"v": 2, "foo_id": foo_id, "delta": 5, "amount": 5, "state": "completed"},
        )
        assert (event.state, event.dispatches, event.failures, event.last_error) == (
            EventState.PENDING,
            0,
            0,
            None,
        )
        assert (event.applied, event.position) == (False, None)  # the relay sequences it
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
            FooCompleted(foo_id=first, delta=10, amount=10, state="completed"),
            FooRevised(foo_id=first, delta=5, amount=15, state="completed"),
            FooCompleted(foo_id=second, delta=20, amount=20, state="completed"),
            FooCancelled(foo_id=first, delta=-15, amount=15, state="cancelled"),
        ]
        assert [event.id for event in events] == sorted(event.id for event in events)

    def test_an_event_stored_by_payload_version_1_is_read_as_version_2(
        self, uow_factory: UowFactory, raw_event: RawEvent
    ) -> None:
        # Version 1 stored {foo_id, delta}: the amount and state follow from the delta where
        # they can (a completion, a cancellation); a revision's new amount was never stored.
        completion = raw_event("FooCompleted", {"foo_id": 1, "delta": 40})
        revision = raw_event("FooRevised", {"foo_id": 1, "delta": -15})
        cancellation = raw_event("FooCancelled", {"foo_id": 1, "delta": -25})
        current = raw_event("FooCompleted", completed(2, 7).payload())

        events = {event.id: event for event in pending_events(uow_factory)}

        assert events[completion].event() == FooCompleted(1, 40, amount=40, state="completed")
        assert events[revision].event() == FooRevised(1, -15, amount=None, state="completed")
        assert events[cancellation].event() == FooCancelled(1, -25, amount=25, state="cancelled")
        assert events[current].event() == completed(2, 7)
        # Stored as it was: the log is read up, never rewritten.
        assert events[completion].payload == {"foo_id": 1, "delta": 40}
        with uow_factory() as uow:
            sequence(uow, completion, cancellation)
            assert [(e.id, e.event().amount) for e in uow.parts.events_after(0, 10)] == [
                (completion, 40),
                (cancellation, 25),
            ]


class TestOutboxInMemory(InMemory, OutboxContract):
    pass


class TestOutboxSqlite(Sqlite, OutboxContract):
    pass


class TestOutboxPostgres(Postgres, OutboxContract):
    pass
