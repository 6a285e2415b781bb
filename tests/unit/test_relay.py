"""The relay: bounded batches, a bound on messages in flight, leases, and no lost events."""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from domain.backoff import DispatchBackoff, RetryPolicy
from domain.delivery import Outcome, handle_delivery
from domain.errors import DispatchError
from domain.events import FooCompleted
from domain.outbox import EventState, OutboxHealth, RelayLimits
from domain.ports import UnitOfWork
from domain.relay import RelayReport, relay_once, relay_until_idle
from domain.use_cases import create_bars
from infrastructure.memory import InMemoryDatabase, InMemoryDispatcher, ManualClock
from tests.unit.support import (
    DIGEST_STEP,
    STEP,
    append_raw_event,
    bar_values,
    chained,
    computed_with,
    event_rows,
    event_states,
)


def append_events(uow: UnitOfWork, count: int) -> list[int]:
    with uow:
        for n in range(count):
            uow.outbox.append(FooCompleted(foo_id=n + 1, delta=1))
        uow.commit()
        return [event.id for event in uow.relay_queue.claim_unsequenced(count + 1000)][-count:]


@pytest.fixture
def event_ids(uow_factory: Callable[[], UnitOfWork]) -> list[int]:
    # A bar, so that a part waits for the events: with none, an event is applied once it is
    # sequenced, and the relay processes it without a message.
    create_bars(uow_factory(), weight=1)
    return append_events(uow_factory(), 10)


def test_a_relay_pass_dispatches_due_events_oldest_first_and_leases_them(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    report = relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=4, sequence_batch=4, lease_seconds=30)
    )

    assert report == RelayReport(dispatched=4, in_flight=4, room=996)
    assert dispatcher.batches == [event_ids[:4]]
    assert dispatcher.expiries == [pytest.approx(27.0)]  # 0.9 of the lease
    rows = event_rows(database)
    assert [(r.state, r.dispatches, r.failures) for r in rows[:4]] == [
        (EventState.DISPATCHED, 1, 0)
    ] * 4
    assert {r.available_at for r in rows[:4]} == {clock() + 30}
    assert [(r.state, r.dispatches, r.failures) for r in rows[4:]] == [
        (EventState.PENDING, 0, 0)
    ] * 6


def test_a_relay_pass_never_takes_more_than_its_batch_size(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=1000)

    reports = [relay_once(uow_factory(), dispatcher, limits) for _ in range(5)]

    assert [r.dispatched for r in reports] == [3, 3, 3, 1, 0]
    assert [len(batch) for batch in dispatcher.batches] == [3, 3, 3, 1]
    assert dispatcher.dispatched == event_ids


def test_the_relay_never_has_more_than_max_in_flight_events_out(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=5, lease_seconds=30)

    reports = [relay_once(uow_factory(), dispatcher, limits) for _ in range(4)]

    assert [(r.dispatched, r.in_flight) for r in reports] == [(3, 3), (2, 5), (0, 5), (0, 5)]
    assert dispatcher.dispatched == event_ids[:5]
    assert list(event_states(database).values()).count(EventState.DISPATCHED) == 5


def test_processed_events_make_room_for_more_in_flight(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    # A pass sequences a batch's worth: the events after the first 4 have no position yet
    # when those are applied, so they are still to be dispatched.
    limits = RelayLimits(batch_size=4, sequence_batch=4, max_in_flight=4)
    relay_once(uow_factory(), dispatcher, limits)
    for event_id in dispatcher.dispatched[:3]:
        handle_delivery(uow_factory, event_id, STEP)

    report = relay_once(uow_factory(), dispatcher, limits)

    assert (report.dispatched, report.in_flight) == (3, 4)
    assert dispatcher.dispatched == event_ids[:7]


def test_events_the_broker_refused_stay_pending_with_their_attempts_unchanged(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    dispatcher.fail_with = DispatchError("broker unreachable")

    with pytest.raises(DispatchError):
        relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=5, sequence_batch=5))

    assert [(r.state, r.dispatches) for r in event_rows(database)] == [(EventState.PENDING, 0)] * 10
    dispatcher.fail_with = None
    assert (
        relay_once(
            uow_factory(), dispatcher, RelayLimits(batch_size=5, sequence_batch=5)
        ).dispatched
        == 5
    )
    assert dispatcher.dispatched == event_ids[:5]


def test_an_event_whose_lease_expired_is_dispatched_again(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
) -> None:
    [event_id] = append_events(uow_factory(), 1)
    limits = RelayLimits(batch_size=10, sequence_batch=10, max_in_flight=1, lease_seconds=30)
    relay_once(uow_factory(), dispatcher, limits)

    clock.advance(29.9)
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(0, 1)
    clock.advance(0.1)
    # Re-dispatched in its own place: the in-flight count does not grow.
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(1, 1, leases_expired=1)

    assert dispatcher.dispatched == [event_id, event_id]
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.DISPATCHED, 2, 0)
    assert row.available_at == clock() + 30


def test_processed_and_dead_events_are_never_dispatched(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=2, sequence_batch=2, lease_seconds=1)
    )
    handle_delivery(uow_factory, event_ids[0], STEP)
    database.data.events[event_ids[1]].state = EventState.DEAD
    clock.advance(60)

    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=100, sequence_batch=100))

    assert dispatcher.batches[1] == event_ids[2:]


def test_relaying_until_idle_takes_batch_after_batch_until_one_comes_back_short(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    report = relay_until_idle(
        uow_factory, dispatcher, RelayLimits(batch_size=4, sequence_batch=4), 10.0
    )

    assert report == RelayReport(dispatched=10, in_flight=10, room=990)
    assert [len(batch) for batch in dispatcher.batches] == [4, 4, 2]


def test_relaying_until_idle_stops_at_the_max_in_flight_bound(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=6)

    report = relay_until_idle(uow_factory, dispatcher, limits, 10.0)

    assert report == RelayReport(dispatched=6, in_flight=6)


def test_with_the_bound_full_relaying_until_idle_sequences_the_events_waiting_for_room(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    """So that the passes of the messages out apply them: a position is not a message."""
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=2)

    report = relay_until_idle(uow_factory, dispatcher, limits, 10.0)

    assert report == RelayReport(dispatched=2, in_flight=2)
    assert dispatcher.batches == [event_ids[:2]]
    assert [positions(database)[e] for e in event_ids] == list(range(1, 11))
    assert list(event_states(database).values()).count(EventState.PENDING) == 8


def test_sequencing_ahead_stops_when_the_time_budget_is_spent(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    ticks = iter([0.0, 0.5, 1.0])  # start, before the first batch ahead, before the second
    backoff = DispatchBackoff(clock=lambda: 0.0)  # reads its own clock, not the budget's
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=2)

    relay_until_idle(uow_factory, dispatcher, limits, 1.0, backoff, clock=lambda: next(ticks))

    assert [positions(database)[e] for e in event_ids] == [*range(1, 7), *[None] * 4]


def test_relaying_until_idle_stops_when_its_time_budget_is_spent(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    ticks = iter([0.0, 0.5, 1.0])  # start, after the first batch, after the second
    backoff = DispatchBackoff(clock=lambda: 0.0)  # reads its own clock, not the budget's

    report = relay_until_idle(
        uow_factory,
        dispatcher,
        RelayLimits(batch_size=2, sequence_batch=2),
        1.0,
        backoff=backoff,
        clock=lambda: next(ticks),
    )

    assert report == RelayReport(dispatched=4, in_flight=4, room=996)
    assert dispatcher.batches == [event_ids[:2], event_ids[2:4]]


def test_a_relay_pass_with_nothing_due_dispatches_nothing(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher
) -> None:
    assert relay_once(uow_factory(), dispatcher, RelayLimits()) == RelayReport(0, 0, room=1000)
    assert dispatcher.batches == []


# Sequencing: the relay gives each new event its place in the one order, in due order, in a
# transaction of its own before its batch.


def positions(database: InMemoryDatabase) -> dict[int, int | None]:
    return {row.id: row.position for row in event_rows(database)}


def test_the_relay_gives_new_events_the_next_positions_before_it_dispatches_them(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3)

    relay_once(uow_factory(), dispatcher, limits)
    relay_once(uow_factory(), dispatcher, limits)

    assert dispatcher.batches == [event_ids[:3], event_ids[3:6]]
    assert positions(database) == {
        **dict.fromkeys(event_ids, None),
        **{event_id: n for n, event_id in enumerate(event_ids[:6], start=1)},
    }
    assert (database.data.head, database.data.head_total) == (6, 6)  # each delta is 1


def test_the_relay_sequences_a_batch_ahead_of_the_bound_and_dispatches_only_into_room(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=3)

    reports = [relay_once(uow_factory(), dispatcher, limits) for _ in range(2)]

    assert [(r.dispatched, r.in_flight) for r in reports] == [(3, 3), (0, 3)]
    assert dispatcher.batches == [event_ids[:3]]
    assert [positions(database)[e] for e in event_ids] == [*range(1, 7), *[None] * 4]
    assert list(event_states(database).values()).count(EventState.DISPATCHED) == 3


def test_events_sequenced_ahead_and_applied_by_passes_meanwhile_need_no_message(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    """Under load the bound is full: the passes that the messages out drive apply the events
    waiting behind them, which the relay then processes without publishing them."""
    limits = RelayLimits(batch_size=4, sequence_batch=4, max_in_flight=2)
    relay_once(uow_factory(), dispatcher, limits)  # 1-2 out, 1-4 sequenced
    relay_once(uow_factory(), dispatcher, limits)  # no room: 5-8 sequenced

    # One delivery's pass applies every sequenced event, its own and the seven behind it.
    assert handle_delivery(uow_factory, event_ids[0], STEP) is Outcome.APPLIED
    assert handle_delivery(uow_factory, event_ids[1], STEP) is Outcome.ALREADY_APPLIED
    report = relay_once(uow_factory(), dispatcher, limits)

    assert dispatcher.dispatched == [*event_ids[:2], *event_ids[8:]]
    assert report.dispatched == 2
    states = event_states(database)
    assert [states[e] for e in event_ids] == [EventState.PROCESSED] * 8 + [
        EventState.DISPATCHED
    ] * 2
    assert bar_values(database) == {1: 8}


def test_a_message_whose_event_is_applied_lends_one_pass_to_the_events_behind_it(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    step = replace(STEP, events_per_pass=2)
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=2)
    relay_once(uow_factory(), dispatcher, limits)  # 1-2 out, 1-3 sequenced
    # The second event's delivery passes the part through it, two events at a time.
    assert handle_delivery(uow_factory, event_ids[1], step) is Outcome.APPLIED
    assert positions(database)[event_ids[2]] == 3
    assert event_states(database)[event_ids[2]] is EventState.PENDING

    # The first event's message finds it applied, and passes the third, which waits for room.
    assert handle_delivery(uow_factory, event_ids[0], step) is Outcome.ALREADY_APPLIED

    assert event_states(database)[event_ids[2]] is EventState.PROCESSED
    assert bar_values(database) == {1: 3}
    assert relay_once(uow_factory(), dispatcher, limits).dispatched == 2  # the fourth and fifth
    assert dispatcher.dispatched == [*event_ids[:2], *event_ids[3:5]]


def test_an_event_dispatched_again_keeps_its_position_and_new_ones_go_after_the_head(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    create_bars(uow_factory(), weight=1)
    limits = RelayLimits(batch_size=2, sequence_batch=2, lease_seconds=30)
    relay_once(uow_factory(), dispatcher, limits)
    waiting = replace(STEP, budget_s=0.0)  # its part is busy: the event is pending again
    assert handle_delivery(uow_factory, event_ids[0], waiting) is Outcome.WAITING
    clock.advance(30)  # the second's lease ends

    relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=10, sequence_batch=10, lease_seconds=30)
    )

    # The expired lease first, then the pending events by when they are due: the waiting
    # one is due a little later than the new ones.
    assert dispatcher.batches == [event_ids[:2], [event_ids[1], *event_ids[2:], event_ids[0]]]
    assert [positions(database)[e] for e in event_ids] == list(range(1, 11))
    assert database.data.head == 10


def test_positions_follow_the_order_events_fall_due_not_their_ids(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
) -> None:
    # A transaction that took its id early and committed late: due after the later ones.
    straggler = append_raw_event(database, "FooCompleted", {"foo_id": 1, "delta": 5})
    database.data.events[straggler].available_at = clock() + 5
    later = append_events(uow_factory(), 2)

    relay_once(uow_factory(), dispatcher, RelayLimits())
    clock.advance(5)
    relay_once(uow_factory(), dispatcher, RelayLimits())

    assert positions(database) == {later[0]: 1, later[1]: 2, straggler: 3}
    assert (database.data.head, database.data.head_total) == (3, 1 + 1 + 5)
    with uow_factory() as uow:
        assert [e.id for e in uow.parts.events_after(0, 10)] == [*later, straggler]


def test_a_batch_the_broker_refused_dispatches_nothing_and_its_events_stay_pending_sequenced(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    event_ids: list[int],
) -> None:
    dispatcher.fail_with = DispatchError("broker unreachable")

    with pytest.raises(DispatchError):
        relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=4, sequence_batch=4))

    # Sequenced in a transaction of its own, before the batch: the positions stay.
    assert dispatcher.dispatched == []
    assert [positions(database)[e] for e in event_ids] == [1, 2, 3, 4] + [None] * 6
    assert [(r.state, r.dispatches) for r in event_rows(database)] == [(EventState.PENDING, 0)] * 10
    assert (database.data.head, database.data.head_total) == (4, 4)
    with uow_factory() as uow:
        assert uow.monitor.health().events_dispatched == 0
    dispatcher.fail_with = None
    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=4, sequence_batch=4))
    assert dispatcher.batches == [event_ids[:4]]  # the refused ones, at their positions
    assert [positions(database)[e] for e in event_ids] == [*range(1, 9), None, None]


def test_a_refused_batch_applied_by_passes_meanwhile_is_processed_without_its_messages(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
) -> None:
    [bar] = create_bars(uow_factory(), weight=1)
    [first] = append_events(uow_factory(), 1)
    relay_once(uow_factory(), dispatcher, RelayLimits())
    refused = append_events(uow_factory(), 2)
    dispatcher.fail_with = DispatchError("broker unreachable")
    with pytest.raises(DispatchError):
        relay_once(uow_factory(), dispatcher, RelayLimits())

    # The first event's delivery passes the part through the head: the refused events too.
    assert handle_delivery(uow_factory, first, STEP) is Outcome.APPLIED

    assert bar_values(database) == {bar: 3}
    assert positions(database) == {first: 1, refused[0]: 2, refused[1]: 3}
    assert set(event_states(database).values()) == {EventState.PROCESSED}
    dispatcher.fail_with = None
    assert relay_once(uow_factory(), dispatcher, RelayLimits()).dispatched == 0
    assert dispatcher.dispatched == [first]


def test_an_unreadable_event_is_dead_at_the_relay_and_the_others_are_sequenced_without_a_gap(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
) -> None:
    [first] = append_events(uow_factory(), 1)
    poison = append_raw_event(database, "FooCompleted", {"foo_id": 1, "delta": 5, "v": 9})
    [last] = append_events(uow_factory(), 1)

    report = relay_once(uow_factory(), dispatcher, RelayLimits())

    assert (report.dispatched, report.in_flight) == (2, 2)
    assert dispatcher.dispatched == [first, last]
    assert positions(database) == {first: 1, poison: None, last: 2}
    assert event_states(database)[poison] is EventState.DEAD
    assert (database.data.head, database.data.head_total) == (2, 2)
    with uow_factory() as uow:
        assert uow.monitor.health().events_dispatched == 2


# The in-flight bound counts expired leases: an expired event is re-dispatched in its own place.


def dispatched_ids(database: InMemoryDatabase) -> list[int]:
    return [row.id for row in event_rows(database) if row.state is EventState.DISPATCHED]


def test_with_every_lease_expired_the_relay_redispatches_them_and_adds_no_new_event(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=10, sequence_batch=10, max_in_flight=4, lease_seconds=30)
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(4, 4)
    clock.advance(31)

    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 4  # expired, and still counted
    report = relay_once(uow_factory(), dispatcher, limits)

    assert report == RelayReport(dispatched=4, in_flight=4, leases_expired=4)
    assert dispatcher.batches == [event_ids[:4], event_ids[:4]]
    rows = event_rows(database)
    assert [(r.state, r.dispatches) for r in rows[:4]] == [(EventState.DISPATCHED, 2)] * 4
    assert {r.available_at for r in rows[:4]} == {clock() + 30}
    assert [(r.state, r.dispatches) for r in rows[4:]] == [(EventState.PENDING, 0)] * 6
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(0, 4)  # leased again


def test_expired_leases_beyond_one_batch_are_redispatched_over_several_passes_without_new_events(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=4, lease_seconds=30)
    first = [relay_once(uow_factory(), dispatcher, limits) for _ in range(3)]
    assert first == [RelayReport(3, 3, room=1), RelayReport(1, 4), RelayReport(0, 4)]
    clock.advance(30)

    again = [relay_once(uow_factory(), dispatcher, limits) for _ in range(3)]

    assert again == [
        RelayReport(3, 4, leases_expired=3),
        RelayReport(1, 4, leases_expired=1),
        RelayReport(0, 4),
    ]
    assert dispatcher.batches == [event_ids[:3], event_ids[3:4], event_ids[:3], event_ids[3:4]]
    assert dispatched_ids(database) == event_ids[:4]


def test_relaying_until_idle_redispatches_every_expired_lease_and_stops_at_the_bound(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=4, lease_seconds=30)
    assert relay_until_idle(uow_factory, dispatcher, limits, 10.0) == RelayReport(4, 4)
    clock.advance(30)

    report = relay_until_idle(uow_factory, dispatcher, limits, 10.0)

    assert report == RelayReport(dispatched=4, in_flight=4, leases_expired=4)
    assert sorted(dispatcher.dispatched[4:]) == event_ids[:4]
    assert dispatched_ids(database) == event_ids[:4]


def test_expired_leases_go_first_and_new_events_only_fill_the_rest_of_the_batch(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=3, sequence_batch=3, lease_seconds=30)
    )
    clock.advance(30)
    limits = RelayLimits(batch_size=5, sequence_batch=5, max_in_flight=100, lease_seconds=30)

    report = relay_once(uow_factory(), dispatcher, limits)

    assert report == RelayReport(dispatched=5, in_flight=5, leases_expired=3, room=95)
    assert dispatcher.batches[1] == event_ids[:3] + event_ids[3:5]


def test_a_batch_full_of_expired_leases_takes_no_new_event_even_with_room_to_spare(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=3, sequence_batch=3, lease_seconds=30)
    )
    clock.advance(30)
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=100, lease_seconds=30)

    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(
        3, 3, leases_expired=3, room=97
    )
    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(3, 6, room=94)
    assert dispatcher.batches == [event_ids[:3], event_ids[:3], event_ids[3:6]]


def test_an_event_back_to_pending_while_its_parts_catch_up_frees_its_place(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    create_bars(uow_factory(), weight=1)
    limits = RelayLimits(batch_size=10, sequence_batch=10, max_in_flight=2, lease_seconds=30)
    relay_once(uow_factory(), dispatcher, limits)
    database.pass_errors.append(RuntimeError("connection reset"))
    slow = replace(STEP, retry=RetryPolicy(base_delay_s=100.0))

    assert handle_delivery(uow_factory, event_ids[0], slow) is Outcome.WAITING

    assert relay_once(uow_factory(), dispatcher, limits) == RelayReport(1, 2)
    assert dispatcher.batches == [event_ids[:2], event_ids[2:3]]


class ExpiringBroker(InMemoryDispatcher):
    """A queue whose messages are gone once their expiry has passed, as RabbitMQ's TTL does."""

    def __init__(self, clock: ManualClock) -> None:
        super().__init__()
        self.clock = clock
        self.queue: list[tuple[int, float]] = []  # (event id, when its message expires)

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        super().dispatch(event_ids, expires_in_s)
        self.queue += [(event_id, self.clock() + expires_in_s) for event_id in event_ids]

    def live(self) -> list[int]:
        now = self.clock()
        self.queue = [(event_id, until) for event_id, until in self.queue if until > now]
        return [event_id for event_id, _ in self.queue]

    def take(self) -> int | None:
        return self.queue.pop(0)[0] if self.live() else None


def add_events(uow: UnitOfWork, count: int) -> None:
    with uow:
        for n in range(count):
            uow.outbox.append(FooCompleted(foo_id=n + 1, delta=1))
        uow.commit()


@pytest.mark.parametrize("seed", range(3))
def test_dispatched_and_unprocessed_events_never_exceed_max_in_flight_over_many_rounds(
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    seed: int,
) -> None:
    """A producer faster than the workers; workers that lose messages (their leases run out)
    or fail; a clock that keeps passing leases. The bound holds in the outbox and in the
    broker after every step, and each event is applied exactly once in the end."""
    rng = random.Random(seed)
    limits = RelayLimits(batch_size=4, sequence_batch=4, max_in_flight=6, lease_seconds=10)
    policy = RetryPolicy(max_attempts=1000, base_delay_s=1.0, max_delay_s=4.0, rng=rng)
    heavy = replace(DIGEST_STEP, retry=policy)
    uow_factory = computed_with(heavy.name, uow_factory)
    [bar] = create_bars(uow_factory(), weight=1)  # one part, whose passes fail now and then
    broker = ExpiringBroker(clock)
    produced = lost = failed = 0
    peaks = [0]

    def check_bound() -> None:
        dispatched = dispatched_ids(database)
        live = broker.live()
        peaks.append(len(dispatched))
        assert len(dispatched) <= limits.max_in_flight
        assert len(live) <= limits.max_in_flight
        # One live message per event at most, and only for an event still dispatched: an
        # expired lease's old message is gone from the broker before the new one is sent.
        assert len(set(live)) == len(live)
        assert set(live) <= set(dispatched)

    for step in range(150):
        if step < 100:
            count = rng.randint(0, 2)
            add_events(uow_factory(), count)
            produced += count
        report = relay_once(uow_factory(), broker, limits)
        assert report.in_flight == len(dispatched_ids(database))
        check_bound()
        for _ in range(rng.randint(0, 2)):
            event_id = broker.take()
            if event_id is None:
                break
            roll = rng.random()
            if roll < 0.3:
                lost += 1  # the worker died holding it: only the lease brings it back
                continue
            if roll < 0.4:
                database.pass_errors.append(RuntimeError("transient"))
            handle_delivery(uow_factory, event_id, heavy)
            # Raised only if the delivery ran a pass: none if passes had applied its event
            # before its message came (they apply sequenced events whether out or not), or
            # its part backed off.
            failed += roll < 0.4 and not database.pass_errors
            database.pass_errors.clear()
            check_bound()
        clock.advance(rng.uniform(0.0, limits.lease_seconds / 2))
        check_bound()

    for _ in range(1000):  # drain: no more losses, no more failures
        with uow_factory() as uow:
            if uow.monitor.stats().drained:
                break
        relay_once(uow_factory(), broker, limits)
        check_bound()
        while (event_id := broker.take()) is not None:
            handle_delivery(uow_factory, event_id, heavy)
        clock.advance(limits.lease_seconds)
    rows = event_rows(database)
    assert len(rows) == produced
    assert {row.state for row in rows} == {EventState.PROCESSED}
    assert database.data.events_applied == database.data.head == produced
    # Each event reached the bar once, in the one order: the digest of them all, by position.
    in_order = sorted(rows, key=lambda row: row.position or 0)
    assert [row.position for row in in_order] == list(range(1, produced + 1))
    assert bar_values(database) == {bar: chained(0, [row.id for row in in_order])}
    assert {row.failures for row in rows} == {0}  # a pass failed, not an event
    # The run did what it claims: it reached the bound, lost messages and failed some passes.
    assert max(peaks) == limits.max_in_flight
    assert lost > 0
    assert failed > 0
    with uow_factory() as uow:
        assert uow.monitor.health().part_failures == failed  # each a pass that raised
    # Each lost message was sent again once its lease ran out. (An event may never have been
    # sent: passes applied it, sequenced, before the bound let its message out.)
    sent = [row.dispatches for row in rows if row.dispatches]
    assert sum(sent) >= len(sent) + lost


# Message expiry: a message is gone from the broker before its event's lease ends.


@pytest.mark.parametrize("lease", [0.5, 1.0, 30.0, 600.0])
def test_each_message_expires_before_its_events_lease_ends(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
    lease: float,
) -> None:
    limits = RelayLimits(batch_size=3, sequence_batch=3, max_in_flight=3, lease_seconds=lease)
    sent_at = clock()
    relay_once(uow_factory(), dispatcher, limits)
    leased_until = {row.available_at for row in event_rows(database)[:3]}
    clock.advance(lease)
    relay_once(uow_factory(), dispatcher, limits)  # the expired leases, sent again

    assert dispatcher.batches == [event_ids[:3], event_ids[:3]]
    assert dispatcher.expiries == [pytest.approx(0.9 * lease)] * 2
    for expiry in dispatcher.expiries:
        assert 0 < expiry < lease
    assert leased_until == {sent_at + lease}  # so each message was gone before its lease


# Backing off while the broker refuses messages.


def test_the_dispatch_backoff_doubles_from_its_base_up_to_its_cap(clock: ManualClock) -> None:
    backoff = DispatchBackoff(base_s=1.0, max_s=10.0, clock=clock)
    assert backoff.ready()

    delays = [backoff.failed() for _ in range(7)]

    assert delays == [1.0, 2.0, 4.0, 8.0, 10.0, 10.0, 10.0]
    assert backoff.failures == 7
    assert backoff.resume_at == clock() + 10.0
    assert not backoff.ready()
    clock.now = backoff.resume_at - 0.001
    assert not backoff.ready()
    clock.now = backoff.resume_at
    assert backoff.ready()


def test_the_dispatch_backoff_stays_capped_after_very_many_failures(clock: ManualClock) -> None:
    backoff = DispatchBackoff(base_s=0.5, max_s=30.0, clock=clock)

    delays = [backoff.failed() for _ in range(500)]

    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert set(delays[7:]) == {30.0}
    assert backoff.resume_at == clock() + 30.0


def test_the_dispatch_backoff_resets_on_success(clock: ManualClock) -> None:
    backoff = DispatchBackoff(base_s=2.0, max_s=60.0, clock=clock)
    backoff.failed()
    backoff.failed()
    assert not backoff.ready()

    backoff.succeeded()

    assert (backoff.failures, backoff.resume_at) == (0, 0.0)
    assert backoff.ready()
    assert backoff.failed() == 2.0  # from the base again, not from where it was


class CountingFactory:
    def __init__(self, uow_factory: Callable[[], UnitOfWork]) -> None:
        self.uow_factory = uow_factory
        self.calls = 0

    def __call__(self) -> UnitOfWork:
        self.calls += 1
        return self.uow_factory()


def test_relaying_until_idle_reports_a_dispatch_error_logs_it_and_backs_off(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    backoff = DispatchBackoff(base_s=1.0, max_s=30.0, clock=clock)
    dispatcher.fail_with = DispatchError("broker unreachable")

    with caplog.at_level("WARNING", logger="domain.relay"):
        report = relay_until_idle(
            uow_factory, dispatcher, RelayLimits(batch_size=4, sequence_batch=4), 10.0, backoff
        )

    assert report == RelayReport(
        dispatched=0, in_flight=0, skipped=True, broker_error="broker unreachable"
    )
    assert [record.getMessage() for record in caplog.records] == [
        "relay: broker unreachable; events stay due, next try in 1 s"
    ]
    assert (backoff.failures, backoff.resume_at) == (1, clock() + 1.0)
    assert [(r.state, r.dispatches) for r in event_rows(database)] == [(EventState.PENDING, 0)] * 10
    assert dispatcher.batches == []


def test_relaying_until_idle_is_skipped_while_backed_off_and_resumes_after(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    backoff = DispatchBackoff(base_s=1.0, max_s=30.0, clock=clock)
    limits = RelayLimits(batch_size=4, sequence_batch=4)
    factory = CountingFactory(uow_factory)
    dispatcher.fail_with = DispatchError("broker unreachable")
    assert relay_until_idle(factory, dispatcher, limits, 10.0, backoff).broker_error
    dispatcher.fail_with = None  # the broker is back, but the relay does not know yet
    calls = factory.calls

    clock.advance(0.999)
    skipped = relay_until_idle(factory, dispatcher, limits, 10.0, backoff)

    assert skipped == RelayReport(dispatched=0, in_flight=0, skipped=True)
    assert factory.calls == calls  # not even a transaction was opened
    assert dispatcher.batches == []
    assert set(event_states(database).values()) == {EventState.PENDING}

    clock.advance(0.001)
    report = relay_until_idle(factory, dispatcher, limits, 10.0, backoff)

    assert report == RelayReport(dispatched=10, in_flight=10, room=990)
    assert dispatcher.dispatched == event_ids
    assert (backoff.failures, backoff.resume_at) == (0, 0.0)


def test_consecutive_dispatch_errors_back_off_longer_until_a_success_resets_the_wait(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    backoff = DispatchBackoff(base_s=1.0, max_s=30.0, clock=clock)
    limits = RelayLimits(batch_size=2, sequence_batch=2)
    waits = []

    def relay(fail: bool) -> None:
        dispatcher.fail_with = DispatchError("refused") if fail else None
        if relay_until_idle(uow_factory, dispatcher, limits, 0.0, backoff).broker_error:
            waits.append(backoff.resume_at - clock())
            clock.now = backoff.resume_at

    for fail in (True, True, True, False, True):
        relay(fail)

    assert waits == [1.0, 2.0, 4.0, 1.0]
    assert dispatcher.batches == [event_ids[:2]]


class FailingOnCall(InMemoryDispatcher):
    """Takes messages until its `fail_on`-th call, which the broker refuses."""

    def __init__(self, fail_on: int) -> None:
        super().__init__()
        self.fail_on = fail_on
        self.calls = 0

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        self.calls += 1
        if self.calls == self.fail_on:
            raise DispatchError("connection lost mid-tick")
        super().dispatch(event_ids, expires_in_s)


def test_a_dispatch_error_mid_tick_keeps_the_batches_already_dispatched(
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    event_ids: list[int],
) -> None:
    backoff = DispatchBackoff(base_s=1.0, clock=clock)
    dispatcher = FailingOnCall(fail_on=2)

    report = relay_until_idle(
        uow_factory, dispatcher, RelayLimits(batch_size=3, sequence_batch=3), 10.0, backoff
    )

    assert (report.dispatched, report.broker_error) == (3, "connection lost mid-tick")
    assert dispatcher.batches == [event_ids[:3]]
    states = event_states(database)
    assert [states[i] for i in event_ids] == [EventState.DISPATCHED] * 3 + [EventState.PENDING] * 7
    assert (backoff.failures, backoff.resume_at) == (1, clock() + 1.0)


def test_a_lease_that_ends_unapplied_is_dispatched_again_with_a_warning_naming_the_events(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    clock: ManualClock,
    event_ids: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    relay_once(
        uow_factory(), dispatcher, RelayLimits(batch_size=2, sequence_batch=2, lease_seconds=30)
    )
    clock.advance(30)

    with caplog.at_level("WARNING", logger="domain.relay"):
        relay_once(
            uow_factory(), dispatcher, RelayLimits(batch_size=2, sequence_batch=2, lease_seconds=30)
        )

    assert [record.getMessage() for record in caplog.records] == [
        "relay: 2 leases ended before their messages came back (expired unconsumed or lost); "
        f"dispatching again: events {event_ids[0]}, {event_ids[1]}"
    ]


# What the relay tells an operator: every committed batch is recorded, and a tick that moved
# something says so in one INFO line.


def health(uow_factory: Callable[[], UnitOfWork]) -> OutboxHealth:
    with uow_factory() as uow:
        return uow.monitor.health()


def test_every_completed_relay_pass_is_recorded_with_what_it_moved_even_an_idle_one(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, clock: ManualClock
) -> None:
    limits = RelayLimits(batch_size=10, sequence_batch=10, lease_seconds=30)
    relay_once(uow_factory(), dispatcher, limits)
    assert (health(uow_factory).relay_passes, health(uow_factory).last_relay_pass_age_s) == (1, 0)
    [first, second] = append_events(uow_factory(), 2)
    relay_once(uow_factory(), dispatcher, limits)
    clock.advance(31)  # both leases end unapplied
    handle_delivery(uow_factory, first, STEP)

    relay_once(uow_factory(), dispatcher, limits)
    clock.advance(5)

    seen = health(uow_factory)
    assert (seen.relay_passes, seen.events_dispatched, seen.leases_expired) == (3, 3, 1)
    assert seen.last_relay_pass_age_s == 5
    assert dispatcher.batches == [[first, second], [second]]


def test_a_relay_pass_the_broker_refused_is_not_recorded(
    uow_factory: Callable[[], UnitOfWork], dispatcher: InMemoryDispatcher, event_ids: list[int]
) -> None:
    dispatcher.fail_with = DispatchError("broker unreachable")

    report = relay_until_idle(uow_factory, dispatcher, RelayLimits(), 10.0)

    assert report.broker_error == "broker unreachable"
    assert (health(uow_factory).relay_passes, health(uow_factory).last_relay_pass_age_s) == (
        0,
        None,
    )


def test_a_relay_pass_that_moved_events_logs_one_info_line_and_an_idle_pass_none(
    uow_factory: Callable[[], UnitOfWork],
    dispatcher: InMemoryDispatcher,
    clock: ManualClock,
    event_ids: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    limits = RelayLimits(batch_size=4, sequence_batch=4, max_in_flight=6, lease_seconds=30)
    with caplog.at_level("INFO", logger="domain.relay"):
        relay_until_idle(uow_factory, dispatcher, limits, 10.0)
        relay_until_idle(uow_factory, dispatcher, limits, 10.0)  # at the bound: moves nothing
        clock.advance(30)
        relay_until_idle(uow_factory, dispatcher, limits, 10.0)

    infos = [r.getMessage() for r in caplog.records if r.levelname == "INFO"]
    assert infos == [
        "relay: dispatched 6 events; 6 in flight, room for 0",
        "relay: dispatched 6 events (6 again after an expired lease); 6 in flight, room for 0",
    ]
