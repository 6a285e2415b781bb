"""Coalescing: one delivery applies every waiting event in one pass, each recorded once."""

from __future__ import annotations

from collections.abc import Callable

from domain.backoff import RetryPolicy
from domain.delivery import Outcome, apply_pass, handle_delivery, record_failure
from domain.outbox import EventState
from domain.ports import UnitOfWork
from domain.use_cases import create_bars
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork
from tests.unit.support import append_raw_event, bar_values, complete_new_foos, event_states

POLICY = RetryPolicy(max_attempts=3)


def test_one_delivery_applies_every_waiting_event_in_one_pass(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=2)
    events = complete_new_foos(uow, 1, 2, 3, 4)

    assert apply_pass(uow_factory(), events[2], coalesce=10) is Outcome.APPLIED

    assert bar_values(database) == {bar: 2 * (1 + 2 + 3 + 4)}
    assert set(event_states(database).values()) == {EventState.PROCESSED}
    assert database.data.events_applied == 4  # four events, recorded once each, one pass
    for event_id in events:  # their own deliveries find nothing left to do
        assert apply_pass(uow_factory(), event_id, coalesce=10) is Outcome.ALREADY_APPLIED
    assert bar_values(database) == {bar: 20}


def test_coalescing_takes_at_most_the_limit_of_other_events(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    events = complete_new_foos(uow, 10, 20, 30, 40)

    apply_pass(uow_factory(), events[3], coalesce=2)

    states = event_states(database)
    assert [states[e] for e in events] == [
        EventState.PROCESSED,
        EventState.PROCESSED,
        EventState.PENDING,
        EventState.PROCESSED,
    ]
    assert bar_values(database) == {bar: 10 + 20 + 40}


def test_an_unreadable_waiting_event_is_left_to_its_own_delivery(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    [good] = complete_new_foos(uow, 5)
    poison = append_raw_event(database, "FooExploded", {"foo_id": 1, "delta": 1})

    assert handle_delivery(uow_factory, good, POLICY, coalesce=10) is Outcome.APPLIED
    assert event_states(database) == {good: EventState.PROCESSED, poison: EventState.PENDING}
    assert handle_delivery(uow_factory, poison, POLICY, coalesce=10) is Outcome.DEAD
    assert bar_values(database) == {bar: 5}


def test_a_failing_coalesced_pass_falls_back_to_the_event_alone(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    events = complete_new_foos(uow, 1, 2)
    database.apply_delta_errors.append(RuntimeError("the coalesced pass broke"))

    assert handle_delivery(uow_factory, events[0], POLICY, coalesce=10) is Outcome.APPLIED

    assert event_states(database) == {
        events[0]: EventState.PROCESSED,
        events[1]: EventState.PENDING,
    }
    assert database.data.events[events[0]].failures == 0  # no failure recorded
    assert bar_values(database) == {bar: 1}


def test_events_that_failed_before_are_not_coalesced(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    events = complete_new_foos(uow, 1, 2)
    database.data.events[events[1]].failures = 1

    apply_pass(uow_factory(), events[0], coalesce=10)

    assert event_states(database)[events[1]] is EventState.PENDING
    assert bar_values(database) == {bar: 1}


def test_a_dispatched_event_applied_by_another_pass_stays_in_flight_until_its_message_is_back(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    delivered, out = complete_new_foos(uow, 3, 4)
    with uow_factory() as relay:
        relay.relay_queue.mark_dispatched([delivered, out], lease_seconds=60)
        relay.commit()

    assert apply_pass(uow_factory(), delivered, coalesce=10) is Outcome.APPLIED

    # Its message is still in the broker: it still counts against the in-flight bound.
    assert event_states(database) == {delivered: EventState.PROCESSED, out: EventState.DISPATCHED}
    assert database.data.events[out].applied
    with uow_factory() as check:
        assert check.relay_queue.count_in_flight() == 1
    assert apply_pass(uow_factory(), out, coalesce=10) is Outcome.ALREADY_APPLIED
    assert event_states(database)[out] is EventState.PROCESSED
    assert bar_values(database) == {bar: 7}
    assert database.data.events_applied == 2


def test_a_delivery_with_nothing_left_to_do_still_applies_what_waits(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    [first] = complete_new_foos(uow, 5)
    apply_pass(uow_factory(), first, coalesce=10)
    later = complete_new_foos(uow, 6)[-1]

    # A duplicate of the first message runs before the later event's own message arrives.
    assert apply_pass(uow_factory(), first, coalesce=10) is Outcome.ALREADY_APPLIED

    assert event_states(database)[later] is EventState.PROCESSED
    assert bar_values(database) == {bar: 11}
    assert apply_pass(uow_factory(), later, coalesce=10) is Outcome.ALREADY_APPLIED
    assert bar_values(database) == {bar: 11}


def test_a_failure_of_an_event_another_pass_applied_meanwhile_is_not_counted(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    create_bars(uow, weight=1)
    delivered, out = complete_new_foos(uow, 3, 4)
    with uow_factory() as relay:
        relay.relay_queue.mark_dispatched([delivered, out], lease_seconds=60)
        relay.commit()
    apply_pass(uow_factory(), delivered, coalesce=10)

    outcome = record_failure(uow_factory(), out, RuntimeError("late"), POLICY)

    assert outcome is Outcome.ALREADY_APPLIED
    assert event_states(database)[out] is EventState.PROCESSED
    assert database.data.events[out].failures == 0
