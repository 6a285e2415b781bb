"""The recalculation handler: applied once, duplicates absorbed, failures kept in the outbox."""

from __future__ import annotations

import pickle
from collections.abc import Callable

import pytest

from domain.backoff import RetryPolicy
from domain.delivery import Outcome, handle_delivery, record_failure
from domain.errors import ConcurrentUpdateError, InvalidEventError
from domain.operations import retry_dead_events
from domain.outbox import EventState, RelayLimits
from domain.ports import UnitOfWork
from domain.relay import relay_once
from domain.use_cases import create_bars
from infrastructure.broker.outcomes import EventNotApplied
from infrastructure.memory import (
    InMemoryDatabase,
    InMemoryDispatcher,
    InMemoryUnitOfWork,
    ManualClock,
)
from infrastructure.ops.logs import DeliveryFields
from tasks import recalculation
from tasks.recalculation import recalculate_bars
from tests.unit.support import (
    append_raw_event,
    bar_values,
    complete_new_foos,
    dispatch_all,
    event_rows,
    event_states,
)

POLICY = RetryPolicy(max_attempts=3, base_delay_s=1.0, max_delay_s=10.0)


@pytest.fixture
def bars(uow: InMemoryUnitOfWork) -> list[int]:
    return create_bars(uow, weight=1) + create_bars(uow, weight=2) + create_bars(uow, weight=0)


def test_an_event_is_applied_to_every_bar_and_recorded_as_processed(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)

    outcome = handle_delivery(uow_factory, event_id, POLICY)

    assert outcome is Outcome.APPLIED
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}
    assert event_states(database) == {event_id: EventState.PROCESSED}
    assert database.data.applied == {event_id}
    assert database.data.applied_total == 10


def test_a_second_delivery_of_an_event_is_already_processed_and_changes_no_bar(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    handle_delivery(uow_factory, event_id, POLICY)
    before = (bar_values(database), database.data.applied_total, database.data.events_applied)

    outcome = handle_delivery(uow_factory, event_id, POLICY)

    assert outcome is Outcome.ALREADY_APPLIED
    after = (bar_values(database), database.data.applied_total, database.data.events_applied)
    assert after == before


def test_a_delivery_whose_processed_guard_already_holds_the_event_changes_no_bar(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    # The unique key, not the state column, is the last word: a stale state changes nothing.
    [event_id] = complete_new_foos(uow, 10)
    database.data.applied.add(event_id)

    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.ALREADY_APPLIED
    assert bar_values(database) == dict.fromkeys(bars, 0)


def test_an_unknown_event_id_is_reported_and_changes_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, bars: list[int]
) -> None:
    assert handle_delivery(uow_factory, 12345, POLICY) is Outcome.NO_SUCH_EVENT
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert database.data.events == {}


@pytest.mark.parametrize(
    ("event_type", "payload", "error"),
    [
        ("FooExploded", {"foo_id": 1, "delta": 5}, "UnknownEventTypeError: unknown event type"),
        ("FooCompleted", {"foo_id": 1, "delta": "5"}, "InvalidEventError: event payload field"),
        ("FooCompleted", [1, 5], "InvalidEventError: FooCompleted payload must be an object"),
    ],
    ids=["unknown-type", "bad-field", "not-an-object"],
)
def test_a_poison_event_goes_dead_with_its_error_and_does_not_block_the_others(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
    event_type: str,
    payload: object,
    error: str,
) -> None:
    [before] = complete_new_foos(uow, 3)
    poison = append_raw_event(database, event_type, payload)
    [after] = complete_new_foos(uow, 4)
    dispatch_all(uow_factory)

    outcomes = [handle_delivery(uow_factory, i, POLICY) for i in (before, poison, after)]

    assert outcomes == [Outcome.APPLIED, Outcome.DEAD, Outcome.APPLIED]
    [dead] = [row for row in event_rows(database) if row.id == poison]
    assert (dead.state, dead.failures, dead.dispatches) == (EventState.DEAD, 1, 1)
    assert dead.last_error is not None
    assert dead.last_error.startswith(error)
    assert bar_values(database) == {bars[0]: 7, bars[1]: 14, bars[2]: 0}
    assert poison not in database.data.applied


def test_a_redelivered_poison_event_stays_dead_and_changes_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, bars: list[int]
) -> None:
    poison = append_raw_event(database, "FooCompleted", {"foo_id": 1})
    handle_delivery(uow_factory, poison, POLICY)

    assert handle_delivery(uow_factory, poison, POLICY) is Outcome.DEAD
    assert event_states(database) == {poison: EventState.DEAD}
    assert bar_values(database) == dict.fromkeys(bars, 0)


def test_a_transient_failure_schedules_a_retry_and_counts_one_failure(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    database.apply_delta_errors.append(RuntimeError("connection reset"))

    outcome = handle_delivery(uow_factory, event_id, POLICY)

    assert outcome is Outcome.RETRY_SCHEDULED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PENDING, 1, 1)
    assert row.last_error == "RuntimeError: connection reset"
    assert clock() + 0.5 <= row.available_at <= clock() + 1.0  # backoff after one failure
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert database.data.applied == set()
    assert database.data.applied_total == 0


def test_an_event_retried_after_a_transient_failure_is_applied_once(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    database.apply_delta_errors.append(RuntimeError("connection reset"))
    handle_delivery(uow_factory, event_id, POLICY)

    assert dispatch_all(uow_factory) == []  # still backing off
    clock.advance(1.0)
    assert dispatch_all(uow_factory) == [event_id]
    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.APPLIED

    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures, row.last_error) == (
        EventState.PROCESSED,
        2,
        1,
        None,
    )
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_an_event_that_keeps_failing_is_dead_after_max_attempts_failures(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    [other] = complete_new_foos(uow, 1)
    outcomes = []
    for attempt in range(1, POLICY.max_attempts + 1):
        assert event_id in dispatch_all(uow_factory)
        row = event_rows(database)[0]
        assert (row.dispatches, row.failures) == (attempt, attempt - 1)
        database.apply_delta_errors.append(RuntimeError(f"failure {attempt}"))
        outcomes.append(handle_delivery(uow_factory, event_id, POLICY))
        clock.advance(POLICY.max_delay_s)

    assert outcomes == [Outcome.RETRY_SCHEDULED] * (POLICY.max_attempts - 1) + [Outcome.DEAD]
    row = event_rows(database)[0]
    assert (row.state, row.dispatches, row.failures) == (
        EventState.DEAD,
        POLICY.max_attempts,
        POLICY.max_attempts,
    )
    assert row.last_error == f"RuntimeError: failure {POLICY.max_attempts}"
    assert event_id not in dispatch_all(uow_factory)  # the dead wait for an operator
    assert handle_delivery(uow_factory, other, POLICY) is Outcome.APPLIED
    assert bar_values(database) == {bars[0]: 1, bars[1]: 2, bars[2]: 0}


def test_a_domain_error_is_permanent_and_kills_the_event_at_once(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    database.apply_delta_errors.append(InvalidEventError("cannot apply this"))

    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.DEAD
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.DEAD, 0, 1)
    assert row.last_error == "InvalidEventError: cannot apply this"


def test_a_lost_concurrency_race_while_applying_schedules_a_retry(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    database.apply_delta_errors.append(ConcurrentUpdateError())

    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.RETRY_SCHEDULED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PENDING, 1, 1)


def test_a_failure_reported_for_an_event_already_processed_leaves_it_processed(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    handle_delivery(uow_factory, event_id, POLICY)

    outcome = record_failure(uow_factory(), event_id, RuntimeError("late"), POLICY)

    assert outcome is Outcome.ALREADY_APPLIED
    [row] = event_rows(database)
    assert (row.state, row.last_error, row.failures) == (EventState.PROCESSED, None, 0)


def test_a_failure_reported_for_an_event_dead_meanwhile_leaves_it_dead_and_counts_nothing(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    with uow_factory() as killed:  # another pass gave up on it
        killed.deliveries.record_failure(event_id, "InvalidEventError: first", retry_in_s=None)
        killed.commit()

    outcome = record_failure(uow_factory(), event_id, RuntimeError("late"), POLICY)

    assert outcome is Outcome.DEAD
    [row] = event_rows(database)
    assert (row.state, row.last_error, row.failures) == (
        EventState.DEAD,
        "InvalidEventError: first",
        1,
    )
    assert database.data.counters["event_failures"] == 1


def test_duplicate_deliveries_of_many_events_keep_the_invariant(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    event_ids = complete_new_foos(uow, 5, 6, 7)

    for event_id in event_ids + event_ids[::-1] + event_ids:
        handle_delivery(uow_factory, event_id, POLICY)

    assert bar_values(database) == {bars[0]: 18, bars[1]: 36, bars[2]: 0}
    assert database.data.events_applied == 3


# Dispatches (attempts) and failures are counted apart: only failures lead to a dead letter.

LEASE = RelayLimits(batch_size=100, max_in_flight=100, lease_seconds=30)


def test_lease_expiries_alone_never_make_an_event_dead(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatcher = InMemoryDispatcher()
    expiries = POLICY.max_attempts * 4
    for _ in range(expiries):
        assert relay_once(uow_factory(), dispatcher, LEASE).dispatched == 1
        clock.advance(LEASE.lease_seconds)  # the message was lost; the lease runs out

    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.DISPATCHED, expiries, 0)
    assert dispatcher.dispatched == [event_id] * expiries

    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.APPLIED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PROCESSED, expiries, 0)
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_a_failure_after_many_lease_expiries_counts_as_the_first_failure(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    for _ in range(POLICY.max_attempts + 2):
        relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
        clock.advance(LEASE.lease_seconds)
    relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
    database.apply_delta_errors.append(RuntimeError("connection reset"))

    outcome = handle_delivery(uow_factory, event_id, POLICY)

    assert outcome is Outcome.RETRY_SCHEDULED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (
        EventState.PENDING,
        POLICY.max_attempts + 3,
        1,
    )
    # The backoff of a first failure (base 1 s, jittered to [0.5, 1]), whatever the dispatches.
    assert clock() + 0.5 <= row.available_at <= clock() + 1.0


def test_failures_and_dispatches_are_counted_apart_and_a_revival_restarts_the_failures(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    seen = []
    outcomes = []
    for failure in range(1, POLICY.max_attempts + 1):
        # Each round: dispatched, the lease runs out, dispatched again, then the apply fails.
        relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
        clock.advance(LEASE.lease_seconds)
        relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
        database.apply_delta_errors.append(RuntimeError(f"failure {failure}"))
        outcomes.append(handle_delivery(uow_factory, event_id, POLICY))
        [row] = event_rows(database)
        seen.append((row.dispatches, row.failures))
        clock.advance(POLICY.max_delay_s)

    assert outcomes == [Outcome.RETRY_SCHEDULED] * (POLICY.max_attempts - 1) + [Outcome.DEAD]
    assert seen == [(2 * n, n) for n in range(1, POLICY.max_attempts + 1)]
    [row] = event_rows(database)
    assert row.state is EventState.DEAD

    assert retry_dead_events(uow_factory(), [event_id]) == [event_id]
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PENDING, 6, 0)

    # Revived, it has its full retries again: one more failure is not its death.
    relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
    database.apply_delta_errors.append(RuntimeError("once more"))
    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.RETRY_SCHEDULED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PENDING, 7, 1)

    clock.advance(POLICY.max_delay_s)
    relay_once(uow_factory(), InMemoryDispatcher(), LEASE)
    assert handle_delivery(uow_factory, event_id, POLICY) is Outcome.APPLIED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures, row.last_error) == (
        EventState.PROCESSED,
        8,
        1,
        None,
    )
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_a_late_message_for_a_dead_event_leaves_it_parked_and_changes_no_bar(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    database.data.events[event_id].state = EventState.DEAD

    outcome = handle_delivery(uow_factory, event_id, POLICY)

    assert outcome is Outcome.DEAD
    assert bar_values(database) == {bars[0]: 0, bars[1]: 0, bars[2]: 0}
    assert event_states(database) == {event_id: EventState.DEAD}
    assert database.data.applied == set()


def test_a_retried_failure_is_a_warning_and_a_dead_event_an_error_each_naming_the_event(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    policy = RetryPolicy(max_attempts=2, base_delay_s=4.0, max_delay_s=4.0)
    database.apply_delta_errors.extend([RuntimeError("disk full"), RuntimeError("disk full")])

    with caplog.at_level("WARNING", logger="domain.delivery"):
        handle_delivery(uow_factory, event_id, policy)
        handle_delivery(uow_factory, event_id, policy)

    [retried, dead] = caplog.records
    assert retried.levelname == "WARNING"
    assert retried.getMessage().startswith(
        f"event {event_id} (FooCompleted) failed (failure 1 of 2), next try in "
    )
    assert retried.getMessage().endswith(" s: RuntimeError: disk full")
    assert (dead.levelname, dead.getMessage()) == (
        "ERROR",
        f"event {event_id} (FooCompleted) is dead after 2 failure(s): RuntimeError: disk full; "
        f"`postsave dead retry {event_id}` once the cause is fixed",
    )
    # The same as fields, for JSON logs.
    assert (retried.event_id, retried.failures, retried.max_attempts) == (event_id, 1, 2)
    assert 2.0 <= retried.retry_in_s <= 4.0
    assert (dead.event_id, dead.event_type, dead.failures) == (event_id, "FooCompleted", 2)


def test_a_message_for_an_unknown_event_is_an_error_naming_the_id(
    uow_factory: Callable[[], UnitOfWork], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="domain.delivery"):
        handle_delivery(uow_factory, 404, POLICY)

    [line] = caplog.records
    assert (line.levelname, line.event_id) == ("ERROR", 404)
    assert line.getMessage().startswith("event 404: dropped a message")


# What Celery is told: a delivery that left its event unapplied is a task FAILURE, logged by
# Celery at INFO without a traceback (the domain logged the failure), its message acknowledged.


@pytest.mark.parametrize(
    "outcome", [Outcome.RETRY_SCHEDULED, Outcome.DEAD, Outcome.NO_SUCH_EVENT], ids=str
)
def test_celery_sees_an_unapplied_event_as_an_expected_failure_of_the_task(
    outcome: Outcome, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(recalculation, "handle_delivery", lambda *_: outcome)
    caplog.handler.addFilter(DeliveryFields())

    with caplog.at_level("INFO", logger="celery.app.trace"):
        result = recalculate_bars.apply(args=(5,))

    assert result.state == "FAILURE"
    assert str(result.result) == f"event 5 not applied: {outcome}"
    [line] = [r for r in caplog.records if r.name == "celery.app.trace"]
    assert (line.levelname, line.exc_info, line.event_id) == ("INFO", None, 5)
    assert line.getMessage().endswith(
        f"raised expected: EventNotApplied('event 5 not applied: {outcome}')"
    )


@pytest.mark.parametrize("outcome", [Outcome.APPLIED, Outcome.ALREADY_APPLIED], ids=str)
def test_celery_sees_an_event_on_the_bars_as_a_success(
    outcome: Outcome, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(recalculation, "handle_delivery", lambda *_: outcome)

    result = recalculate_bars.apply(args=(5,))

    assert (result.state, result.result) == ("SUCCESS", outcome.value)


def test_a_failed_delivery_is_acknowledged_and_its_exception_crosses_processes() -> None:
    # Acked late, and on failure too: the outbox retries the event, never the broker.
    assert (recalculate_bars.acks_late, recalculate_bars.acks_on_failure) == (True, True)
    assert recalculate_bars.throws == (EventNotApplied,)
    crossed = pickle.loads(pickle.dumps(EventNotApplied(5, "dead")))  # pool to main process
    assert (str(crossed), crossed.event_id) == ("event 5 not applied: dead", 5)
