"""What an operator does with the outbox: read its stats, list and retry dead events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.errors import DomainError
from domain.events import FooCompleted
from domain.operations import dead_events, outbox_stats, retry_dead_events
from domain.outbox import EventState, OutboxStats
from domain.ports import UnitOfWork
from infrastructure.memory import InMemoryDatabase, ManualClock
from tests.unit.support import append_raw_event, event_rows, event_states


@pytest.fixture
def dead(database: InMemoryDatabase) -> list[int]:
    """Events 1, 3 and 4 are dead after 5 failures in 7 dispatches; event 2 is pending."""
    ids = [append_raw_event(database, "FooCompleted", {"foo_id": n, "delta": 1}) for n in (1, 2)]
    ids += [append_raw_event(database, "FooCompleted", {"foo_id": n, "delta": 1}) for n in (3, 4)]
    for row in event_rows(database):
        if row.id != ids[1]:
            row.state, row.last_error = EventState.DEAD, "RuntimeError: boom"
            row.failures, row.dispatches = 5, 7
    return [ids[0], ids[2], ids[3]]


def test_retrying_dead_events_by_id_makes_them_due_again_with_no_failures(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead: list[int]
) -> None:
    revived = retry_dead_events(uow_factory(), [dead[2], dead[0], dead[2]])

    assert revived == [dead[0], dead[2]]
    rows = {row.id: row for row in event_rows(database)}
    # Failures start over, so the event gets its full retries again; dispatches stay counted.
    for revived_id in (dead[0], dead[2]):
        row = rows[revived_id]
        assert (row.state, row.failures, row.dispatches) == (EventState.PENDING, 0, 7)
        assert row.last_error == "RuntimeError: boom"
    assert (rows[dead[1]].state, rows[dead[1]].failures, rows[dead[1]].dispatches) == (
        EventState.DEAD,
        5,
        7,
    )
    with uow_factory() as uow:
        assert [event.id for event in uow.relay_queue.claim_unsequenced(10)] == [
            dead[0],
            2,
            dead[2],
        ]


def test_retrying_all_dead_events_revives_every_one_of_them(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead: list[int]
) -> None:
    assert retry_dead_events(uow_factory()) == dead
    assert set(event_states(database).values()) == {EventState.PENDING}


def test_retrying_with_an_id_that_is_not_dead_retries_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead: list[int]
) -> None:
    before = event_states(database)

    with pytest.raises(DomainError, match=r"event\(s\) 2, 99 are not dead; nothing was retried"):
        retry_dead_events(uow_factory(), [dead[0], 2, 99, dead[1]])

    assert event_states(database) == before


def test_retrying_when_nothing_is_dead_revives_nothing(
    uow_factory: Callable[[], UnitOfWork],
) -> None:
    assert retry_dead_events(uow_factory()) == []
    assert retry_dead_events(uow_factory(), []) == []


def test_dead_events_are_listed_in_id_order_with_their_last_error(
    uow_factory: Callable[[], UnitOfWork], dead: list[int]
) -> None:
    listed = dead_events(uow_factory())

    assert [(e.id, e.failures, e.dispatches, e.last_error) for e in listed] == [
        (event_id, 5, 7, "RuntimeError: boom") for event_id in dead
    ]


def test_outbox_stats_count_events_by_state_and_age_the_oldest_unfinished(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    assert outbox_stats(uow_factory()) == OutboxStats(0, 0, 0, 0, None)
    with uow_factory() as uow:
        for n in range(3):
            uow.outbox.append(FooCompleted(foo_id=n + 1, delta=n))
        uow.commit()
    with uow_factory() as uow:
        uow.relay_queue.mark_dispatched([1], lease_seconds=30)
        uow.relay_queue.sequence([(2, 1)])
        uow.deliveries.apply_through(1)  # as a delivery settles what every part has passed
        uow.commit()
    clock.advance(7.5)

    stats = outbox_stats(uow_factory())

    assert stats == OutboxStats(
        pending=1,
        in_flight=1,
        processed=1,
        dead=0,
        oldest_pending_age_s=7.5,
        projection_lag_s=7.5,  # two are not applied yet
    )
    assert not stats.drained
