"""One contract for the unit of work, the repositories and the outbox, held by every adapter:
the in-memory fakes, SQLite and PostgreSQL."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

import pytest

from domain.bar import Bar
from domain.errors import BarNotFoundError, EventNotFoundError, FooNotFoundError
from domain.events import FooCancelled, FooCompleted, FooEvent, FooRevised
from domain.foo import Foo, FooState
from domain.outbox import Checkpoint, EventState, StoredEvent
from domain.ports import UnitOfWork
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork
from infrastructure.settings import Settings

UowFactory = Callable[[], UnitOfWork]
LONG_LEASE = 600.0


@pytest.fixture(params=["fake", "sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def uow_factory(request: pytest.FixtureRequest) -> Iterator[UowFactory]:
    if request.param == "fake":
        database = InMemoryDatabase(clock=time.monotonic)
        yield lambda: InMemoryUnitOfWork(database)
        return
    url = request.getfixturevalue("sqlite_url" if request.param == "sqlite" else "pg_url")
    container = Container(Settings(database_url=url))
    yield container.uow
    container.close()


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
        bars = [Bar(weight, value=value) for weight in weights]
        for bar in bars:
            uow.bars.add(bar)
        uow.commit()
        return [bar.id for bar in bars if bar.id is not None]


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


def bar_values(uow_factory: UowFactory, ids: list[int]) -> list[int]:
    with uow_factory() as uow:
        return [uow.bars.get(bar_id).value for bar_id in ids]


def completed(foo_id: int, delta: int) -> FooCompleted:
    return FooCompleted(foo_id=foo_id, delta=delta)


# The unit of work and the repositories.


def test_a_foo_survives_its_round_trip_through_the_repository(uow_factory: UowFactory) -> None:
    foo_id = add_foo(uow_factory, amount=42)

    with uow_factory() as uow:
        foo = uow.foos.get(foo_id)
        assert (foo.id, foo.amount, foo.version, foo.events) == (foo_id, 42, 1, [])
        assert foo.state is FooState.PENDING


def test_added_foos_get_distinct_ids(uow_factory: UowFactory) -> None:
    assert len({add_foo(uow_factory) for _ in range(3)}) == 3


def test_a_bar_survives_its_round_trip_through_the_repository(uow_factory: UowFactory) -> None:
    [bar_id] = add_bars(uow_factory, 7, value=-21)

    with uow_factory() as uow:
        bar = uow.bars.get(bar_id)
        assert (bar.id, bar.weight, bar.value) == (bar_id, 7, -21)
        assert uow.bars.count() == 1


def test_an_unknown_foo_or_bar_is_not_found(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        with pytest.raises(FooNotFoundError):
            uow.foos.get(987)
        with pytest.raises(BarNotFoundError):
            uow.bars.get(987)


def test_nothing_is_persisted_when_the_unit_of_work_is_left_without_commit(
    uow_factory: UowFactory,
) -> None:
    with uow_factory() as uow:
        foo, bar = Foo(5), Bar(2)
        uow.foos.add(foo)
        uow.bars.add(bar)
        uow.outbox.append(completed(1, 5))
        foo_id, bar_id = foo.id, bar.id
    assert foo_id is not None
    assert bar_id is not None

    with uow_factory() as uow:
        with pytest.raises(FooNotFoundError):
            uow.foos.get(foo_id)
        with pytest.raises(BarNotFoundError):
            uow.bars.get(bar_id)
        assert uow.bars.count() == 0
        assert uow.admin.stats().pending == 0


def test_nothing_is_persisted_when_the_unit_of_work_fails(uow_factory: UowFactory) -> None:
    foo_id = add_foo(uow_factory, amount=5)

    with pytest.raises(RuntimeError, match="crash"), uow_factory() as uow:
        uow.foos.get(foo_id).complete()
        raise RuntimeError("crash before commit")

    with uow_factory() as uow:
        assert uow.foos.get(foo_id).state is FooState.PENDING
        assert uow.admin.stats().pending == 0


def test_an_explicit_rollback_discards_the_changes_made_so_far(uow_factory: UowFactory) -> None:
    [bar_id] = add_bars(uow_factory, 2)

    with uow_factory() as uow:
        uow.bars.apply_delta(5)
        uow.outbox.append(completed(1, 5))
        uow.rollback()
        uow.commit()

    assert bar_values(uow_factory, [bar_id]) == [0]
    assert pending_events(uow_factory) == []


def test_a_foos_events_reach_the_outbox_only_when_the_unit_of_work_commits(
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


def test_events_are_written_in_the_order_they_happened(uow_factory: UowFactory) -> None:
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


def test_a_foos_version_increments_with_every_committed_change(uow_factory: UowFactory) -> None:
    foo_id = add_foo(uow_factory, amount=5)
    changes: list[Callable[[Foo], None]] = [Foo.complete, lambda foo: foo.revise(6), Foo.cancel]
    versions = []
    for change in changes:
        with uow_factory() as uow:
            change(uow.foos.get(foo_id))
            uow.commit()
        with uow_factory() as uow:
            versions.append(uow.foos.get(foo_id).version)

    assert versions == [2, 3, 4]


def test_the_completed_total_sums_only_completed_foos(uow_factory: UowFactory) -> None:
    add_foo(uow_factory, 10, complete=True)
    add_foo(uow_factory, 32, complete=True)
    add_foo(uow_factory, 1000)
    cancelled = add_foo(uow_factory, 7, complete=True)
    with uow_factory() as uow:
        assert uow.foos.completed_total() == 49
        uow.foos.get(cancelled).cancel()
        uow.commit()

    with uow_factory() as uow:
        assert uow.foos.completed_total() == 42


def test_applying_a_delta_changes_every_bar_by_delta_times_weight_and_the_applied_total(
    uow_factory: UowFactory,
) -> None:
    ids = add_bars(uow_factory, 0, 1, 3) + add_bars(uow_factory, 10, value=5)

    with uow_factory() as uow:
        assert uow.bars.apply_delta(4) == 4
        uow.commit()
    with uow_factory() as uow:
        assert uow.bars.apply_delta(-1) == 4
        uow.commit()

    assert bar_values(uow_factory, ids) == [0, 3, 9, 35]
    with uow_factory() as uow:
        assert uow.bars.lock_applied_total() == 3


def test_a_zero_delta_changes_no_bar(uow_factory: UowFactory) -> None:
    ids = add_bars(uow_factory, 2, value=6)

    with uow_factory() as uow:
        assert uow.bars.apply_delta(0) == 0
        uow.commit()

    assert bar_values(uow_factory, ids) == [6]


def test_an_applied_delta_is_discarded_with_its_unit_of_work(uow_factory: UowFactory) -> None:
    ids = add_bars(uow_factory, 2)

    with uow_factory() as uow:
        uow.bars.apply_delta(50)

    assert bar_values(uow_factory, ids) == [0]
    with uow_factory() as uow:
        assert uow.bars.lock_applied_total() == 0


def test_a_bar_read_after_apply_delta_in_the_same_unit_of_work_has_its_new_value(
    uow_factory: UowFactory,
) -> None:
    [bar_id] = add_bars(uow_factory, 3)

    with uow_factory() as uow:
        assert uow.bars.get(bar_id).value == 0
        uow.bars.apply_delta(2)
        assert uow.bars.get(bar_id).value == 6
        assert uow.bars.mismatched(2, 10) == []
        uow.bars.reset_all(5, 1)
        assert uow.bars.get(bar_id).value == 15


def test_the_applied_total_starts_at_zero_and_can_be_locked(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        assert uow.bars.lock_applied_total() == 0
        uow.bars.apply_delta(9)
        assert uow.bars.lock_applied_total() == 9


def test_resetting_sets_every_bar_to_weight_times_total(uow_factory: UowFactory) -> None:
    ids = add_bars(uow_factory, 0, 2, 5, value=-3)

    with uow_factory() as uow:
        assert uow.bars.reset_all(7, 3) == 3
        uow.commit()

    assert bar_values(uow_factory, ids) == [0, 14, 35]
    with uow_factory() as uow:
        assert uow.bars.lock_applied_total() == 7


def test_mismatched_lists_the_bars_off_the_invariant_in_id_order_up_to_a_limit(
    uow_factory: UowFactory,
) -> None:
    ids = add_bars(uow_factory, 1, 2, 3, 4, value=6)  # right for total 6 only at weight 1

    with uow_factory() as uow:
        assert [bar.id for bar in uow.bars.mismatched(6, 10)] == ids[1:]
        assert [bar.id for bar in uow.bars.mismatched(6, 2)] == ids[1:3]
        assert [bar.id for bar in uow.bars.mismatched(3, 10)] == [ids[0], ids[2], ids[3]]
        assert uow.bars.mismatched(6, 0) == []


# The outbox.


def test_recording_an_event_as_processed_succeeds_once(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 5))

    with uow_factory() as uow:
        assert process(uow, event_id) is True
        assert process(uow, event_id) is False
        uow.commit()
    with uow_factory() as uow:
        assert process(uow, event_id) is False

    event = stored(uow_factory, event_id)
    assert (event.state, event.last_error) == (EventState.PROCESSED, None)


def test_a_processed_mark_is_discarded_with_its_unit_of_work(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 5))

    with uow_factory() as uow:
        assert process(uow, event_id) is True

    with uow_factory() as uow:
        assert process(uow, event_id) is True
    assert stored(uow_factory, event_id).state is EventState.PENDING


def test_locking_an_unknown_event_for_processing_raises_event_not_found(
    uow_factory: UowFactory,
) -> None:
    with uow_factory() as uow, pytest.raises(EventNotFoundError):
        uow.deliveries.lock(31337)


def test_pending_claims_return_due_events_oldest_first_up_to_the_limit(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))

    with uow_factory() as uow:
        assert uow.relay_queue.try_lock() is True
        assert [event.id for event in uow.relay_queue.claim_pending(3)] == ids[:3]
        assert [event.id for event in uow.relay_queue.claim_pending(10)] == ids
        assert uow.relay_queue.claim_expired(10) == []  # nothing was ever dispatched
        assert uow.relay_queue.count_in_flight() == 0


def test_dispatching_leases_events_and_counts_an_attempt(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, completed(1, 1), completed(2, 2), completed(3, 3))

    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
        uow.commit()

    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 2
        assert claimed_ids(uow) == ([], ids[2:])  # leased events are claimed by nobody
    events = [stored(uow_factory, event_id) for event_id in ids]
    assert [(event.state, event.dispatches, event.failures) for event in events] == [
        (EventState.DISPATCHED, 1, 0),
        (EventState.DISPATCHED, 1, 0),
        (EventState.PENDING, 0, 0),
    ]


def test_an_event_whose_lease_expired_is_still_in_flight_and_claimed_as_expired(
    uow_factory: UowFactory,
) -> None:
    [expired, leased] = append(uow_factory, completed(1, 1), completed(2, 2))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([expired], 0.0)
        uow.relay_queue.mark_dispatched([leased], LONG_LEASE)
        uow.commit()
    time.sleep(0.005)

    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 2  # an expired lease still holds its place
        assert claimed_ids(uow) == ([expired], [])
        uow.relay_queue.mark_dispatched([expired], LONG_LEASE)
        uow.commit()

    event = stored(uow_factory, expired)
    assert (event.state, event.dispatches, event.failures) == (EventState.DISPATCHED, 2, 0)
    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 2
        assert claimed_ids(uow) == ([], [])


def test_claims_split_expired_leases_from_due_pending_events_and_in_flight_counts_both(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 7)))
    # Leases that run out in reverse id order: the oldest lease end is claimed first.
    for event_id in (ids[3], ids[0]):
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([event_id], 0.0)
            uow.commit()
        time.sleep(0.005)
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([ids[1]], LONG_LEASE)
        process(uow, ids[5])
        uow.commit()

    with uow_factory() as uow:
        assert [event.id for event in uow.relay_queue.claim_expired(10)] == [ids[3], ids[0]]
        assert [event.id for event in uow.relay_queue.claim_expired(1)] == [ids[3]]
        assert [event.id for event in uow.relay_queue.claim_pending(10)] == [ids[2], ids[4]]
        assert [event.id for event in uow.relay_queue.claim_pending(1)] == [ids[2]]
        # Every dispatched event holds a place, its lease run out or not; others hold none.
        assert uow.relay_queue.count_in_flight() == 3
        [claimed] = uow.relay_queue.claim_expired(1)
    assert (claimed.state, claimed.dispatches, claimed.failures) == (EventState.DISPATCHED, 1, 0)


def test_an_event_leaves_the_in_flight_count_once_processed_or_back_to_pending_or_dead(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched(ids, 0.0)
        uow.commit()
    time.sleep(0.005)
    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 4

    with uow_factory() as uow:
        process(uow, ids[0])
        uow.deliveries.record_failure(ids[1], "RuntimeError: retry", retry_in_s=0.0)
        uow.deliveries.record_failure(ids[2], "RuntimeError: give up", retry_in_s=None)
        uow.commit()
    time.sleep(0.005)

    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 1
        assert claimed_ids(uow) == ([ids[3]], [ids[1]])


def test_failures_are_counted_apart_from_dispatches(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 1))

    for _ in range(3):  # three dispatches whose leases simply run out
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([event_id], 0.0)
            uow.commit()
    event = stored(uow_factory, event_id)
    assert (event.state, event.dispatches, event.failures) == (EventState.DISPATCHED, 3, 0)

    for n in range(1, 3):
        with uow_factory() as uow:
            uow.deliveries.record_failure(event_id, f"RuntimeError: {n}", retry_in_s=0.0)
            uow.commit()
        event = stored(uow_factory, event_id)
        assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 3, n)

    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([event_id], LONG_LEASE)
        uow.deliveries.record_failure(event_id, "RuntimeError: last", retry_in_s=None)
        uow.commit()
    event = stored(uow_factory, event_id)
    assert (event.state, event.dispatches, event.failures, event.last_error) == (
        EventState.DEAD,
        4,
        3,
        "RuntimeError: last",
    )

    with uow_factory() as uow:
        assert uow.admin.revive_dead([event_id]) == [event_id]
        uow.commit()
    event = stored(uow_factory, event_id)
    assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 4, 0)


def test_a_failure_count_is_discarded_with_its_unit_of_work(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 1))

    with uow_factory() as uow:
        uow.deliveries.record_failure(event_id, "RuntimeError: boom", retry_in_s=0.0)

    event = stored(uow_factory, event_id)
    assert (event.state, event.failures, event.last_error) == (EventState.PENDING, 0, None)


def test_a_dispatch_mark_is_discarded_with_its_unit_of_work(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 1))

    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([event_id], LONG_LEASE)

    event = stored(uow_factory, event_id)
    assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 0, 0)


def test_a_failure_with_a_retry_delay_makes_the_event_pending_later_and_counts_a_failure(
    uow_factory: UowFactory,
) -> None:
    [later, now] = append(uow_factory, completed(1, 1), completed(2, 2))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([later, now], LONG_LEASE)
        uow.deliveries.record_failure(later, "RuntimeError: try later", retry_in_s=LONG_LEASE)
        uow.deliveries.record_failure(now, "RuntimeError: try now", retry_in_s=0.0)
        uow.commit()
    time.sleep(0.005)

    event = stored(uow_factory, later)
    assert (event.state, event.dispatches, event.failures, event.last_error) == (
        EventState.PENDING,
        1,
        1,
        "RuntimeError: try later",
    )
    with uow_factory() as uow:
        assert claimed_ids(uow) == ([], [now])
        assert uow.relay_queue.count_in_flight() == 0


def test_a_failure_without_a_retry_makes_the_event_dead(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 1))

    with uow_factory() as uow:
        uow.deliveries.record_failure(event_id, "InvalidEventError: " + "x" * 5000, retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        [dead] = uow.admin.dead_events()
        assert claimed_ids(uow) == ([], [])
        assert uow.relay_queue.count_in_flight() == 0
    assert (dead.id, dead.state, dead.dispatches, dead.failures) == (
        event_id,
        EventState.DEAD,
        0,
        1,
    )
    assert dead.last_error is not None
    assert dead.last_error.startswith("InvalidEventError: xxx")
    assert len(dead.last_error) == 4000


def test_a_failure_reported_for_a_finished_event_changes_nothing(uow_factory: UowFactory) -> None:
    [processed, dead] = append(uow_factory, completed(1, 1), completed(2, 2))
    with uow_factory() as uow:
        process(uow, processed)
        uow.deliveries.record_failure(dead, "first", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        uow.deliveries.record_failure(processed, "late", retry_in_s=0.0)
        uow.deliveries.record_failure(dead, "second", retry_in_s=0.0)
        uow.commit()

    after = [stored(uow_factory, event_id) for event_id in (processed, dead)]
    assert [(event.state, event.failures, event.last_error) for event in after] == [
        (EventState.PROCESSED, 0, None),
        (EventState.DEAD, 1, "first"),
    ]


def test_stats_count_events_by_state(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        empty = uow.admin.stats()
    assert (empty.pending, empty.in_flight, empty.processed, empty.dead) == (0, 0, 0, 0)
    assert empty.oldest_pending_age_s is None
    assert empty.drained

    ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
        process(uow, ids[2])
        uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        stats = uow.admin.stats()
    assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (1, 2, 1, 1)
    assert stats.oldest_pending_age_s is not None
    assert 0.0 <= stats.oldest_pending_age_s < 60.0
    assert not stats.drained


def test_the_oldest_pending_age_is_gone_once_every_event_is_finished(
    uow_factory: UowFactory,
) -> None:
    [processed, dead] = append(uow_factory, completed(1, 1), completed(2, 2))
    with uow_factory() as uow:
        process(uow, processed)
        uow.deliveries.record_failure(dead, "dead", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        stats = uow.admin.stats()
    assert stats.oldest_pending_age_s is None
    assert stats.drained


def test_health_counts_unfinished_and_dead_events_and_reads_the_counters(
    uow_factory: UowFactory,
) -> None:
    with uow_factory() as uow:
        empty = uow.admin.health()
    assert (empty.pending, empty.in_flight, empty.dead, empty.oldest_pending_age_s) == (0, 0, 0, 0)
    assert (empty.events_applied, empty.event_failures, empty.events_dead) == (0, 0, 0)
    assert (empty.events_dispatched, empty.leases_expired, empty.relay_passes) == (0, 0, 0)
    assert empty.last_relay_pass_age_s is None  # no relay pass has run yet

    ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
        process(uow, ids[2])
        uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
        uow.deliveries.record_failure(ids[4], "again later", retry_in_s=LONG_LEASE)
        uow.deliveries.record_failure(ids[2], "too late: it is processed", retry_in_s=None)
        uow.relay_queue.record_pass(dispatched=2, leases_expired=1)
        uow.commit()

    with uow_factory() as uow:
        health = uow.admin.health()
    assert (health.pending, health.in_flight, health.dead) == (1, 2, 1)
    assert 0.0 <= health.oldest_pending_age_s < 60.0
    assert (health.events_applied, health.event_failures, health.events_dead) == (1, 2, 1)
    assert (health.events_dispatched, health.leases_expired, health.relay_passes) == (2, 1, 1)
    assert health.last_relay_pass_age_s is not None
    assert 0.0 <= health.last_relay_pass_age_s < 60.0


def test_counters_are_discarded_with_their_unit_of_work(uow_factory: UowFactory) -> None:
    [event_id] = append(uow_factory, completed(1, 1))
    with uow_factory() as uow:
        uow.relay_queue.record_pass(dispatched=1, leases_expired=1)
        uow.deliveries.record_failure(event_id, "dead", retry_in_s=None)

    with uow_factory() as uow:
        health = uow.admin.health()
    assert (health.relay_passes, health.events_dispatched, health.event_failures) == (0, 0, 0)
    assert health.last_relay_pass_age_s is None


def test_processed_events_are_the_log_in_id_order(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, *(completed(n, 10 * n) for n in range(1, 5)))
    with uow_factory() as uow:
        for event_id in (ids[3], ids[0], ids[2]):
            process(uow, event_id)
        uow.commit()

    with uow_factory() as uow:
        log = [(event.id, event.event().delta) for event in uow.admin.applied_events()]

    assert log == [(ids[0], 10), (ids[2], 30), (ids[3], 40)]


def test_the_applied_sum_adds_the_deltas_of_applied_events_only(uow_factory: UowFactory) -> None:
    with uow_factory() as uow:
        assert uow.admin.applied_sum() == (0, 0)
    ids = append(
        uow_factory,
        completed(1, 10),
        FooRevised(foo_id=1, delta=-4),
        completed(2, 2**62),
        FooCancelled(foo_id=3, delta=-7),
        completed(4, 1000),
    )
    with uow_factory() as uow:
        for event_id in ids[:4]:
            process(uow, event_id)
        uow.deliveries.record_failure(ids[4], "dead", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.applied_sum() == (10 - 4 + 2**62 - 7, 4)


def test_only_processed_events_old_enough_are_prunable_lowest_ids_first(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 7)))
    with uow_factory() as uow:
        for event_id in (ids[4], ids[0], ids[2]):
            process(uow, event_id)
        uow.relay_queue.mark_dispatched([ids[1]], LONG_LEASE)
        uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.lock_prunable(3_600, 10) == []  # none is an hour old
        assert [e.id for e in uow.admin.lock_prunable(0, 2)] == [ids[0], ids[2]]
        assert [e.id for e in uow.admin.lock_prunable(0, 10)] == [ids[0], ids[2], ids[4]]
        # A range of ids: above `after_id`, below `below_id`.
        assert [e.id for e in uow.admin.lock_prunable(0, 10, after_id=ids[0])] == [ids[2], ids[4]]
        assert [e.id for e in uow.admin.lock_prunable(0, 10, below_id=ids[4])] == [ids[0], ids[2]]


def test_the_first_recent_id_bounds_a_prune(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
    with uow_factory() as uow:
        assert uow.admin.first_recent_id(3_600) == ids[0]  # all of them are recent
        assert uow.admin.first_recent_id(0) is None  # none occurred after now


def test_the_checkpoint_can_be_read_locked(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, completed(1, 5))
    with uow_factory() as uow:
        process(uow, ids[0])
        uow.commit()
    with uow_factory() as uow:
        uow.admin.fold_and_delete(uow.admin.lock_prunable(0, 1), 5)
        uow.commit()
    with uow_factory() as uow:
        assert uow.admin.lock_checkpoint() == uow.admin.checkpoint() == Checkpoint(5, 1, ids[0])


def test_folding_and_deleting_moves_events_from_the_log_into_the_checkpoint(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, 10 * n) for n in range(1, 4)))
    with uow_factory() as uow:
        for event_id in ids:
            process(uow, event_id)
        uow.commit()
    with uow_factory() as uow:
        assert uow.admin.checkpoint() == Checkpoint()
        prunable = uow.admin.lock_prunable(0, 2)
        uow.admin.fold_and_delete(prunable, 30)
        # not committed: nothing happened

    with uow_factory() as uow:
        assert uow.admin.checkpoint() == Checkpoint()
        uow.admin.fold_and_delete(uow.admin.lock_prunable(0, 2), 30)
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.checkpoint() == Checkpoint(total=30, events=2, last_pruned_id=ids[1])
        assert uow.admin.health().events_pruned == 2
        assert [e.id for e in uow.admin.applied_events()] == [ids[2]]
        assert uow.admin.applied_sum() == (30, 1)
        with pytest.raises(EventNotFoundError):
            uow.deliveries.lock(ids[0])


def test_reviving_dead_events_by_id_makes_only_those_due_again_with_no_failures(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched(ids, LONG_LEASE)
        for event_id in ids[:3]:
            uow.deliveries.record_failure(event_id, "boom", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.revive_dead([ids[2], ids[0], ids[3], 999]) == [ids[0], ids[2]]
        uow.commit()

    # Failures start over; the dispatch count is history and stays.
    revived = stored(uow_factory, ids[0])
    assert (revived.state, revived.dispatches, revived.failures, revived.last_error) == (
        EventState.PENDING,
        1,
        0,
        "boom",
    )
    still_dead = stored(uow_factory, ids[1])
    assert (still_dead.state, still_dead.dispatches, still_dead.failures) == (EventState.DEAD, 1, 1)
    with uow_factory() as uow:
        assert claimed_ids(uow) == ([], [ids[0], ids[2]])
        assert [event.id for event in uow.admin.dead_events()] == [ids[1]]
        assert uow.relay_queue.count_in_flight() == 1
    assert stored(uow_factory, ids[3]).state is EventState.DISPATCHED


def test_reviving_every_dead_event(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
    with uow_factory() as uow:
        for event_id in ids[1:]:
            uow.deliveries.record_failure(event_id, "boom", retry_in_s=None)
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.revive_dead(None) == ids[1:]
        assert uow.admin.revive_dead(None) == []
        uow.commit()

    with uow_factory() as uow:
        assert uow.admin.dead_events() == []
        assert uow.admin.stats().pending == 3
    assert [stored(uow_factory, event_id).failures for event_id in ids] == [0, 0, 0]


def test_a_pass_records_only_the_events_not_yet_applied(uow_factory: UowFactory) -> None:
    ids = append(uow_factory, completed(1, 5), completed(2, 6), completed(3, 7))
    with uow_factory() as uow:
        assert process(uow, ids[1]) is True
        uow.commit()

    with uow_factory() as uow:
        assert uow.deliveries.record_applied(ids) == [ids[0], ids[2]]
        assert uow.deliveries.record_applied(ids) == []
        uow.deliveries.finish_pass([ids[0], ids[2]], delivered_id=ids[0])
        uow.commit()

    assert {stored(uow_factory, i).state for i in ids} == {EventState.PROCESSED}
    assert all(stored(uow_factory, i).applied for i in ids)


def test_an_event_applied_while_its_message_is_out_stays_in_flight_until_it_comes_back(
    uow_factory: UowFactory,
) -> None:
    delivered, out, waiting = append(uow_factory, *(completed(i, i) for i in range(1, 4)))
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([delivered, out], LONG_LEASE)
        uow.commit()

    with uow_factory() as uow:
        assert uow.deliveries.record_applied([delivered, out, waiting]) == [delivered, out, waiting]
        uow.bars.apply_delta(6, events=3)
        uow.deliveries.finish_pass([delivered, out, waiting], delivered_id=delivered)
        uow.commit()
    with uow_factory() as uow:
        assert (uow.admin.stats().processed, uow.admin.stats().in_flight) == (2, 1)

    after = {i: stored(uow_factory, i) for i in (delivered, out, waiting)}
    assert [after[i].state for i in (delivered, out, waiting)] == [
        EventState.PROCESSED,
        EventState.DISPATCHED,  # the broker still holds its message
        EventState.PROCESSED,  # never dispatched: no message to wait for
    ]
    assert all(event.applied for event in after.values())
    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 1
        assert uow.deliveries.lock_waiting(10, exclude_id=delivered) == []
        assert [e.id for e in uow.admin.applied_events()] == [delivered, out, waiting]
        uow.deliveries.finish_pass([], delivered_id=out)
        uow.commit()

    assert stored(uow_factory, out).state is EventState.PROCESSED
    with uow_factory() as uow:
        assert uow.relay_queue.count_in_flight() == 0
        uow.deliveries.finish_pass(
            [], delivered_id=waiting
        )  # settling what is not in flight changes nothing
        assert uow.admin.stats().processed == 3


def test_coalescing_locks_unfinished_events_that_never_failed_except_the_one_in_hand(
    uow_factory: UowFactory,
) -> None:
    ids = append(uow_factory, *(completed(i, i) for i in range(1, 6)))
    with uow_factory() as uow:
        process(uow, ids[0])
        uow.deliveries.record_failure(ids[1], "boom", retry_in_s=0.0)
        uow.relay_queue.mark_dispatched([ids[2]], LONG_LEASE)
        uow.commit()

    with uow_factory() as uow:
        locked = [event.id for event in uow.deliveries.lock_waiting(10, exclude_id=ids[3])]
        assert sorted(locked) == [ids[2], ids[4]]
        assert len(uow.deliveries.lock_waiting(1, exclude_id=ids[3])) == 1
