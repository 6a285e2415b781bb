"""A delivery of an event's message: it drives the parts on, then settles its event, applied
once every part has passed it; duplicates change nothing; the parts, not the event, hold
failures; what Celery is told."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from dataclasses import replace

import pytest

from domain import delivery
from domain.delivery import RECHECK_BUSY_S, RECHECK_STOPPED_S, Outcome, handle_delivery
from domain.operations import retry_dead_parts
from domain.outbox import EventState, RelayLimits
from domain.parts import PartState
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
    DIGEST_STEP,
    POLICY,
    STEP,
    append_raw_event,
    bar_values,
    complete_new_foos,
    dispatch_all,
    event_rows,
    event_states,
    parts,
)


@pytest.fixture
def bars(uow: InMemoryUnitOfWork) -> list[int]:
    return create_bars(uow, weight=1) + create_bars(uow, weight=2) + create_bars(uow, weight=0)


def small_parts(database: InMemoryDatabase, size: int) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        uow = InMemoryUnitOfWork(database)
        uow.part_size = size
        return uow

    return make


def test_an_event_is_applied_to_every_bar_and_recorded_as_processed(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)

    outcome = handle_delivery(uow_factory, event_id, STEP)

    assert outcome is Outcome.APPLIED
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}
    assert event_states(database) == {event_id: EventState.PROCESSED}
    assert database.data.events[event_id].applied
    assert (database.data.applied_position, database.data.events_applied) == (1, 1)
    assert [(p.position, p.applied_total) for p in parts(database)] == [(1, 10)]


def test_a_second_delivery_of_an_event_is_already_applied_and_changes_nothing(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    handle_delivery(uow_factory, event_id, STEP)
    before = (bar_values(database), parts(database), database.data.events_applied)

    outcome = handle_delivery(uow_factory, event_id, STEP)

    assert outcome is Outcome.ALREADY_APPLIED
    assert (bar_values(database), parts(database), database.data.events_applied) == before
    assert event_states(database) == {event_id: EventState.PROCESSED}


def test_one_delivery_applies_every_event_sequenced_before_it_and_their_messages_settle(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    events = complete_new_foos(uow, 1, 2, 3, 4)
    dispatch_all(uow_factory)

    assert handle_delivery(uow_factory, events[2], STEP) is Outcome.APPLIED

    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}
    states = event_states(database)
    # Applied, each: those whose messages are still out stay in flight until they are back.
    assert [states[e] for e in events] == [EventState.DISPATCHED] * 2 + [
        EventState.PROCESSED,
        EventState.DISPATCHED,
    ]
    assert all(database.data.events[e].applied for e in events)
    assert database.data.events_applied == 4
    for event_id in events:  # their own deliveries find nothing left to do
        assert handle_delivery(uow_factory, event_id, STEP) is Outcome.ALREADY_APPLIED
    assert set(event_states(database).values()) == {EventState.PROCESSED}
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}
    assert database.data.events_applied == 4


def test_a_delivery_passes_the_parts_only_through_its_own_event_and_then_settles_it(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    """Events keep arriving under load: a delivery that drove every part to the head before
    settling would leave its own event unstamped for as long as its budget lasts."""
    uow_factory = small_parts(database, 2)
    create_bars(uow_factory(), weight=1, count=4)  # two parts
    events = complete_new_foos(uow, 1, 2, 3, 4)
    dispatch_all(uow_factory)
    one_at_a_time = replace(STEP, events_per_pass=1)

    assert handle_delivery(uow_factory, events[0], one_at_a_time) is Outcome.APPLIED

    assert [p.position for p in parts(database)] == [1, 1]  # not 4: its event was through
    assert [database.data.events[e].applied for e in events] == [True, False, False, False]
    assert handle_delivery(uow_factory, events[3], one_at_a_time) is Outcome.APPLIED
    assert [p.position for p in parts(database)] == [4, 4]


def test_a_delivery_waits_while_a_part_is_behind_and_its_event_is_pending_again(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    no_time = replace(STEP, budget_s=0.0)  # another worker's pass has the part, say

    assert handle_delivery(uow_factory, event_id, no_time) is Outcome.WAITING

    [row] = event_rows(database)
    assert (row.state, row.applied, row.failures, row.dispatches) == (
        EventState.PENDING,
        False,
        0,
        1,
    )
    assert row.available_at == clock() + RECHECK_BUSY_S
    assert row.position == 1  # kept: it is not sequenced again
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert dispatch_all(uow_factory) == []
    clock.advance(RECHECK_BUSY_S)
    assert dispatch_all(uow_factory) == [event_id]
    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.APPLIED
    assert database.data.events[event_id].position == 1
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_an_event_is_applied_once_every_part_has_passed_it(
    database: InMemoryDatabase, clock: ManualClock
) -> None:
    uow_factory = small_parts(database, 1)
    first, second = create_bars(uow_factory(), weight=1, count=2)
    [event_id] = complete_new_foos(InMemoryUnitOfWork(database), 10)
    dispatch_all(uow_factory)
    database.pass_errors.append(RuntimeError("disk full"))  # the first part's pass

    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.WAITING

    assert bar_values(database) == {first: 0, second: 10}
    assert not database.data.events[event_id].applied
    assert database.data.applied_position == 0
    clock.advance(RECHECK_BUSY_S)  # the part's backoff after one failure is over by then
    assert dispatch_all(uow_factory) == [event_id]

    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.APPLIED

    assert bar_values(database) == {first: 10, second: 10}
    assert (database.data.applied_position, database.data.events_applied) == (1, 1)
    assert event_states(database) == {event_id: EventState.PROCESSED}
    assert database.data.events[event_id].dispatches == 2


def test_a_redelivery_after_the_event_is_applied_changes_nothing(
    database: InMemoryDatabase,
) -> None:
    uow_factory = small_parts(database, 1)
    bars = create_bars(uow_factory(), weight=3, count=2)
    [event_id] = complete_new_foos(InMemoryUnitOfWork(database), 5)
    dispatch_all(uow_factory)
    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.APPLIED
    before = (bar_values(database), parts(database), event_rows(database))

    # A duplicate of its message, or one sent again after its lease: nothing to do.
    for _ in range(3):
        assert handle_delivery(uow_factory, event_id, STEP) is Outcome.ALREADY_APPLIED

    assert (bar_values(database), parts(database), event_rows(database)) == before
    assert bar_values(database) == dict.fromkeys(bars, 15)


def test_a_delivery_of_an_event_applied_meanwhile_by_other_passes_is_already_applied(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    first, second = complete_new_foos(uow, 3, 4)
    dispatch_all(uow_factory)
    handle_delivery(uow_factory, first, STEP)  # applies both
    assert event_states(database) == {first: EventState.PROCESSED, second: EventState.DISPATCHED}

    assert handle_delivery(uow_factory, second, STEP) is Outcome.ALREADY_APPLIED

    assert event_states(database) == {first: EventState.PROCESSED, second: EventState.PROCESSED}
    assert bar_values(database) == {bars[0]: 7, bars[1]: 14, bars[2]: 0}
    assert database.data.events_applied == 2


def test_an_event_waiting_on_a_dead_part_is_looked_at_again_late_and_revived_with_it(
    database: InMemoryDatabase, clock: ManualClock
) -> None:
    uow_factory = small_parts(database, 1)
    dead, other = create_bars(uow_factory(), weight=1, count=2)
    [event_id] = complete_new_foos(InMemoryUnitOfWork(database), 10)
    step = replace(STEP, retry=replace(POLICY, max_attempts=1))
    dispatch_all(uow_factory)
    database.pass_errors.append(RuntimeError("disk full"))

    assert handle_delivery(uow_factory, event_id, step) is Outcome.WAITING

    assert [p.state for p in parts(database)] == [PartState.DEAD, PartState.READY]
    assert database.data.events[event_id].available_at == clock() + RECHECK_STOPPED_S
    assert retry_dead_parts(uow_factory()) == [parts(database)[0].id]
    assert dispatch_all(uow_factory) == [event_id]  # woken with its part
    assert handle_delivery(uow_factory, event_id, step) is Outcome.APPLIED
    assert bar_values(database) == {dead: 10, other: 10}


def test_a_delivery_under_another_recalculation_is_refused_and_applies_nothing(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(delivery, "_refusals_logged", set())
    first, second = complete_new_foos(uow, 10, 20)
    dispatch_all(uow_factory)

    with caplog.at_level("DEBUG", logger="domain.delivery"):
        outcomes = [handle_delivery(uow_factory, e, DIGEST_STEP) for e in (first, second)]

    assert outcomes == [Outcome.REFUSED] * 2
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert {row.state for row in event_rows(database)} == {EventState.PENDING}
    assert {row.available_at for row in event_rows(database)} == {clock() + RECHECK_STOPPED_S}
    assert {row.failures for row in event_rows(database)} == {0}
    # One ERROR per process for the pair of recalculations, not one per message.
    assert [(r.levelname, r.event_id) for r in caplog.records] == [
        ("ERROR", first),
        ("DEBUG", second),
    ]
    assert "`postsave rebuild`" in caplog.records[0].getMessage()
    clock.advance(RECHECK_STOPPED_S)
    dispatch_all(uow_factory)
    assert handle_delivery(uow_factory, first, STEP) is Outcome.APPLIED
    assert bar_values(database) == {bars[0]: 30, bars[1]: 60, bars[2]: 0}


def test_a_message_for_an_event_not_yet_sequenced_leaves_it_to_the_relay(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)  # a stray message: the relay never sent it

    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.WAITING

    [row] = event_rows(database)
    assert (row.state, row.position, row.applied, row.dispatches) == (
        EventState.PENDING,
        None,
        False,
        0,
    )
    assert dispatch_all(uow_factory) == [event_id]


def test_an_unknown_event_id_is_reported_and_changes_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, bars: list[int]
) -> None:
    assert handle_delivery(uow_factory, 12345, STEP) is Outcome.NO_SUCH_EVENT
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert database.data.events == {}


@pytest.mark.parametrize(
    ("event_type", "payload", "error"),
    [
        ("FooExploded", {"foo_id": 1, "delta": 5}, "UnknownEventTypeError: unknown event type"),
        ("FooCompleted", {"foo_id": 1, "delta": "5"}, "InvalidEventError: event payload field"),
        ("FooCompleted", [1, 5], "InvalidEventError: FooCompleted payload must be an object"),
        (
            "FooCompleted",
            {"v": 3, "foo_id": 1, "delta": 5},
            "InvalidEventError: FooCompleted payload version 3",
        ),
    ],
    ids=["unknown-type", "bad-field", "not-an-object", "newer-version"],
)
def test_an_unreadable_event_is_dead_at_the_relay_and_does_not_block_the_others(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
    event_type: str,
    payload: object,
    error: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [before] = complete_new_foos(uow, 3)
    poison = append_raw_event(database, event_type, payload)
    [after] = complete_new_foos(uow, 4)

    with caplog.at_level("ERROR", logger="domain.relay"):
        assert dispatch_all(uow_factory) == [before, after]

    dead = database.data.events[poison]
    assert (dead.state, dead.failures, dead.dispatches, dead.position) == (
        EventState.DEAD,
        1,
        0,
        None,  # no place in the order: no part waits for it
    )
    assert dead.last_error is not None
    assert dead.last_error.startswith(error)
    assert [database.data.events[e].position for e in (before, after)] == [1, 2]
    [line] = caplog.records
    assert (line.levelname, line.event_id, line.event_type) == ("ERROR", poison, event_type)
    assert line.getMessage().startswith(f"event {poison} ({event_type}) is dead: {error}")
    assert line.getMessage().endswith(
        f"; `postsave dead retry {poison}` once a version that reads it runs"
    )
    outcomes = [handle_delivery(uow_factory, i, STEP) for i in (before, poison, after)]
    # The first applies both: the other's delivery finds it applied.
    assert outcomes == [Outcome.APPLIED, Outcome.DEAD, Outcome.ALREADY_APPLIED]
    assert bar_values(database) == {bars[0]: 7, bars[1]: 14, bars[2]: 0}
    assert database.data.counters["event_failures"] == database.data.counters["events_dead"] == 1


def test_a_late_message_for_a_dead_event_leaves_it_parked_and_changes_no_bar(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    poison = append_raw_event(database, "FooCompleted", {"foo_id": 1})
    dispatch_all(uow_factory)

    for _ in range(2):
        assert handle_delivery(uow_factory, poison, STEP) is Outcome.DEAD
    assert event_states(database) == {poison: EventState.DEAD}
    assert bar_values(database) == dict.fromkeys(bars, 0)


def test_duplicate_deliveries_of_many_events_keep_the_invariant(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    bars: list[int],
) -> None:
    event_ids = complete_new_foos(uow, 5, 6, 7)
    dispatch_all(uow_factory)

    for event_id in event_ids + event_ids[::-1] + event_ids:
        handle_delivery(uow_factory, event_id, STEP)

    assert bar_values(database) == {bars[0]: 18, bars[1]: 36, bars[2]: 0}
    assert database.data.events_applied == 3
    assert set(event_states(database).values()) == {EventState.PROCESSED}


# Dispatches (attempts) are counted apart from failures, which are the parts' own now.

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
    assert (row.state, row.dispatches, row.failures, row.position) == (
        EventState.DISPATCHED,
        expiries,
        0,
        1,  # sequenced once, before its first dispatch
    )
    assert dispatcher.dispatched == [event_id] * expiries
    assert database.data.head == 1

    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.APPLIED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (EventState.PROCESSED, expiries, 0)
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_a_pass_failing_after_many_lease_expiries_backs_off_as_a_first_failure(
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
    database.pass_errors.append(RuntimeError("connection reset"))

    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.WAITING

    [part] = parts(database)
    assert (part.state, part.failures) == (PartState.READY, 1)
    # The backoff of a first failure (base 1 s, jittered to [0.5, 1]), whatever the dispatches.
    assert clock() + 0.5 <= database.data.parts[part.id].available_at <= clock() + 1.0
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures) == (
        EventState.PENDING,
        POLICY.max_attempts + 3,
        0,
    )


def test_a_dead_part_revived_has_its_full_retries_again_and_then_applies_once(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    bars: list[int],
) -> None:
    [event_id] = complete_new_foos(uow, 10)
    outcomes, failures = [], []
    for failure in range(1, POLICY.max_attempts + 1):
        dispatch_all(uow_factory)
        database.pass_errors.append(RuntimeError(f"failure {failure}"))
        outcomes.append(handle_delivery(uow_factory, event_id, STEP))
        failures.append(parts(database)[0].failures)
        clock.advance(POLICY.max_delay_s)

    assert outcomes == [Outcome.WAITING] * POLICY.max_attempts
    assert failures == [1, 2, 3]
    [part] = parts(database)
    assert (part.state, part.last_error) == (PartState.DEAD, "RuntimeError: failure 3")
    assert dispatch_all(uow_factory) == []  # it waits for its part, parked
    assert event_rows(database)[0].failures == 0

    assert retry_dead_parts(uow_factory(), [part.id]) == [part.id]
    assert (parts(database)[0].state, parts(database)[0].failures) == (PartState.READY, 0)

    # Revived, it has its full retries again: one more failure is not its death.
    dispatch_all(uow_factory)
    database.pass_errors.append(RuntimeError("once more"))
    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.WAITING
    assert (parts(database)[0].state, parts(database)[0].failures) == (PartState.READY, 1)

    clock.advance(POLICY.max_delay_s)
    dispatch_all(uow_factory)
    assert handle_delivery(uow_factory, event_id, STEP) is Outcome.APPLIED
    [row] = event_rows(database)
    assert (row.state, row.dispatches, row.failures, row.last_error) == (
        EventState.PROCESSED,
        5,
        0,
        None,
    )
    assert bar_values(database) == {bars[0]: 10, bars[1]: 20, bars[2]: 0}


def test_a_message_for_an_unknown_event_is_an_error_naming_the_id(
    uow_factory: Callable[[], UnitOfWork], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("ERROR", logger="domain.delivery"):
        handle_delivery(uow_factory, 404, STEP)

    [line] = caplog.records
    assert (line.levelname, line.event_id) == ("ERROR", 404)
    assert line.getMessage().startswith("event 404: dropped a message")


# What Celery is told: a delivery that cannot apply its event is a task FAILURE, logged by
# Celery at INFO without a traceback (the domain logged the failure), its message acknowledged.
# A delivery whose event waits for its parts is a success: nothing failed.


@pytest.mark.parametrize("outcome", [Outcome.REFUSED, Outcome.DEAD, Outcome.NO_SUCH_EVENT], ids=str)
def test_celery_sees_an_event_that_cannot_be_applied_as_an_expected_failure_of_the_task(
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


@pytest.mark.parametrize(
    "outcome", [Outcome.APPLIED, Outcome.ALREADY_APPLIED, Outcome.WAITING], ids=str
)
def test_celery_sees_an_event_applied_or_on_its_way_as_a_success(
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
