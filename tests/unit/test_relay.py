"""The relay: bounded batches, a bound on messages in flight, leases, and no lost events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.errors import DispatchError
from domain.events import FooCompleted
from domain.outbox import EventState, RelayLimits, RetryPolicy
from domain.ports import UnitOfWork
from domain.recalculation import recalculate_bars
from domain.relay import RelayReport, relay_once, relay_until_idle
from tests.fakes import FakeDatabase, FakeDispatcher, ManualClock
from tests.unit.support import event_rows, event_states


def append_events(uow: UnitOfWork, count: int) -> list[int]:
    with uow:
        for n in range(count):
            uow.outbox.append(FooCompleted(foo_id=n + 1, delta=1))
        uow.commit()
        return [event.id for event in uow.outbox.claim_due(count + 1000)][-count:]


@pytest.fixture
def event_ids(uow_factory: Callable[[], UnitOfWork]) -> list[int]:
    return append_events(uow_factory(), 10)


def test_a_relay_pass_dispatches_due_events_oldest_first_and_leases_them(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: FakeDispatcher,
    database: FakeDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    report = relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=4, lease_seconds=30))

    assert report == RelayReport(dispatched=4, in_flight=4)
    assert dispatcher.batches == [event_ids[:4]]
    rows = event_rows(database)
    assert [(r.state, r.attempts) for r in rows[:4]] == [(EventState.DISPATCHED, 1)] * 4
    assert {r.available_at for r in rows[:4]} == {clock() + 30}
    assert [(r.state, r.attempts) for r in rows[4:]] == [(EventState.PENDING, 0)] * 6


def test_a_relay_pass_never_takes_more_than_its_batch_size(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher, event_ids: list[int]
) -> None:
    limits = RelayLimits(batch_size=3, max_in_flight=1000)

    reports = [relay_once(uow_factory(), dispatcher, limits) for _ in range(5)]

    assert [r.dispatched for r in reports] == [3, 3, 3, 1, 0]
    assert [len(batch) for batch in dispatcher.batches] == [3, 3, 3, 1]
    assert dispatcher.dispatched == event_ids


def test_the_relay_never_has_more_than_max_in_flight_events_out(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: FakeDispatcher,
    database: FakeDatabase,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, max_in_flight=5, lease_seconds=30)

    reports = [relay_once(uow_factory(), dispatcher, limits) for _ in range(4)]

    assert [(r.dispatched, r.in_flight) for r in reports] == [(3, 3), (2, 5), (0, 5), (0, 5)]
    assert dispatcher.dispatched == event_ids[:5]
    assert list(event_states(database).values()).count(EventState.DISPATCHED) == 5


def test_processed_events_make_room_for_more_in_flight(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher, event_ids: list[int]
) -> None:
    limits = RelayLimits(batch_size=10, max_in_flight=4)
    relay_once(uow_factory(), dispatcher, limits)
    for event_id in dispatcher.dispatched[:3]:
        recalculate_bars(uow_factory, event_id, RetryPolicy())

    report = relay_once(uow_factory(), dispatcher, limits)

    assert (report.dispatched, report.in_flight) == (3, 4)
    assert dispatcher.dispatched == event_ids[:7]


def test_events_the_broker_refused_stay_pending_with_their_attempts_unchanged(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: FakeDispatcher,
    database: FakeDatabase,
    event_ids: list[int],
) -> None:
    dispatcher.fail_with = DispatchError("broker unreachable")

    with pytest.raises(DispatchError):
        relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=5))

    assert [(r.state, r.attempts) for r in event_rows(database)] == [(EventState.PENDING, 0)] * 10
    dispatcher.fail_with = None
    assert relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=5)).dispatched == 5
    assert dispatcher.dispatched == event_ids[:5]


def test_an_event_whose_lease_expired_is_dispatched_again(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: FakeDispatcher,
    database: FakeDatabase,
    clock: ManualClock,
) -> None:
    [event_id] = append_events(uow_factory(), 1)
    limits = RelayLimits(batch_size=10, max_in_flight=1, lease_seconds=30)
    relay_once(uow_factory(), dispatcher, limits)

    clock.advance(29.9)
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(0, 1)
    clock.advance(0.1)
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(1, 1)

    assert dispatcher.dispatched == [event_id, event_id]
    [row] = event_rows(database)
    assert (row.state, row.attempts) == (EventState.DISPATCHED, 2)


def test_processed_and_dead_events_are_never_dispatched(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: FakeDispatcher,
    database: FakeDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=2, lease_seconds=1))
    recalculate_bars(uow_factory, event_ids[0], RetryPolicy())
    database.data.events[event_ids[1]].state = EventState.DEAD
    clock.advance(60)

    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=100))

    assert dispatcher.batches[1] == event_ids[2:]


def test_relaying_until_idle_takes_batch_after_batch_until_one_comes_back_short(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher, event_ids: list[int]
) -> None:
    report = relay_until_idle(uow_factory, dispatcher, RelayLimits(batch_size=4), 10.0)

    assert report == RelayReport(dispatched=10, in_flight=10)
    assert [len(batch) for batch in dispatcher.batches] == [4, 4, 2]


def test_relaying_until_idle_stops_at_the_max_in_flight_bound(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher, event_ids: list[int]
) -> None:
    limits = RelayLimits(batch_size=3, max_in_flight=6)

    report = relay_until_idle(uow_factory, dispatcher, limits, 10.0)

    assert report == RelayReport(dispatched=6, in_flight=6)


def test_relaying_until_idle_stops_when_its_time_budget_is_spent(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher, event_ids: list[int]
) -> None:
    ticks = iter([0.0, 0.5, 1.0, 99.0])

    report = relay_until_idle(
        uow_factory, dispatcher, RelayLimits(batch_size=2), 1.0, clock=lambda: next(ticks)
    )

    assert report.dispatched == 4
    assert len(dispatcher.batches) == 2


def test_a_relay_pass_with_nothing_due_dispatches_nothing(
    uow_factory: Callable[[], UnitOfWork], dispatcher: FakeDispatcher
) -> None:
    assert relay_once(uow_factory(), dispatcher, RelayLimits()) == RelayReport(0, 0)
    assert dispatcher.batches == []
