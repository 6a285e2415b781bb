"""What an operator does with the parts: read how they stand and the projection's lag, list
dead parts with what waits on them, and retry them, alone or with the dead events."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain import operations
from domain.backoff import RetryPolicy
from domain.delivery import Outcome, handle_delivery
from domain.errors import DomainError
from domain.outbox import EventState
from domain.parts import PartState, PartStats
from domain.passes import HeavyStep
from domain.ports import UnitOfWork
from domain.recalculation import EXAMPLE_RECALCULATION, recalculate
from domain.use_cases import create_bars
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork, ManualClock
from tests.unit.support import append_raw_event, complete_new_foos, dispatch_all

# One failure kills a part: no backoff to wait out.
STEP = HeavyStep(recalculate, EXAMPLE_RECALCULATION, retry=RetryPolicy(max_attempts=1))


@pytest.fixture
def uow_factory(database: InMemoryDatabase) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        uow = InMemoryUnitOfWork(database)
        uow.part_size = 2
        return uow

    return make


@pytest.fixture
def dead_part(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> list[int]:
    """Bars in parts 1, 2 and 3; three events dispatched; a pass over part 1 raised, and it is
    dead; parts 2 and 3 applied the events. The events' ids."""
    create_bars(uow_factory(), 3, 5)
    events = complete_new_foos(InMemoryUnitOfWork(database), 4, 5, 6)
    assert dispatch_all(uow_factory) == events
    clock.advance(12.5)
    database.pass_errors.append(RuntimeError("no room left\non the device"))

    assert handle_delivery(uow_factory, events[0], STEP) is Outcome.WAITING
    return events


def test_status_counts_the_parts_and_ages_the_oldest_event_not_applied(
    uow_factory: Callable[[], UnitOfWork], dead_part: list[int]
) -> None:
    status = operations.status(uow_factory())

    assert status.parts == PartStats(parts=3, behind=1, dead=1, rebuilding=0, lowest_position=0)
    assert status.head == 3
    assert (status.events.pending, status.events.in_flight) == (1, 2)
    assert status.events.oldest_pending_age_s == 12.5
    assert status.events.projection_lag_s == 12.5  # the dead part has applied none of them
    assert operations.health(uow_factory()).parts == status.parts


def test_dead_parts_are_listed_with_their_last_error_and_the_events_that_wait_on_them(
    uow_factory: Callable[[], UnitOfWork], dead_part: list[int]
) -> None:
    [dead] = operations.dead_parts(uow_factory())

    assert (dead.part.id, dead.part.state, dead.part.failures) == (1, PartState.DEAD, 1)
    assert dead.part.last_error == "RuntimeError: no room left\non the device"
    assert dead.waiting == 3


def test_retrying_a_dead_part_makes_it_ready_and_the_events_waiting_on_it_due(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead_part: list[int]
) -> None:
    assert operations.retry_dead_parts(uow_factory(), [1, 1]) == [1]

    assert operations.dead_parts(uow_factory()) == []
    part = database.data.parts[1]
    assert (part.state, part.failures) == (PartState.READY, 0)
    for event_id in dead_part:
        handle_delivery(uow_factory, event_id, STEP)
    status = operations.status(uow_factory())
    assert (status.parts.behind, status.parts.dead, status.events.projection_lag_s) == (0, 0, 0.0)
    assert {row.state for row in database.data.events.values()} == {EventState.PROCESSED}


def test_retrying_a_part_that_is_not_dead_retries_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead_part: list[int]
) -> None:
    with pytest.raises(DomainError, match=r"^part\(s\) 2, 99 are not dead; nothing was retried$"):
        operations.retry_dead_parts(uow_factory(), [99, 1, 2])

    assert [dead.part.id for dead in operations.dead_parts(uow_factory())] == [1]
    assert database.data.parts[1].failures == 1


def test_retrying_everything_revives_every_dead_event_and_every_dead_part_at_once(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead_part: list[int]
) -> None:
    unreadable = append_raw_event(database, "FooCompleted", {"foo_id": 9})
    dispatch_all(uow_factory)  # the relay cannot read it: dead before it is sequenced
    assert database.data.events[unreadable].state is EventState.DEAD

    revived = operations.retry_dead(uow_factory())

    assert (revived.events, revived.parts) == ([unreadable], [1])
    assert operations.dead_events(uow_factory()) == []
    assert operations.dead_parts(uow_factory()) == []
    assert operations.retry_dead(uow_factory()) == operations.Revived([], [])


def test_retrying_given_events_and_parts_is_all_or_nothing(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, dead_part: list[int]
) -> None:
    unreadable = append_raw_event(database, "FooCompleted", {"foo_id": 9})
    dispatch_all(uow_factory)

    with pytest.raises(DomainError, match=r"^part\(s\) 3 are not dead"):
        operations.retry_dead(uow_factory(), [unreadable], [1, 3])
    assert database.data.events[unreadable].state is EventState.DEAD  # rolled back with it
    assert database.data.parts[1].state is PartState.DEAD

    assert operations.retry_dead(uow_factory(), part_ids=[1]) == operations.Revived([], [1])
    assert database.data.events[unreadable].state is EventState.DEAD  # not asked for
    assert operations.retry_dead(uow_factory(), [unreadable]) == operations.Revived(
        [unreadable], []
    )


def test_a_part_whose_pass_failed_is_backing_off_until_its_backoff_is_over(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    create_bars(uow_factory(), 3, 3)
    [event_id] = complete_new_foos(InMemoryUnitOfWork(database), 4)
    dispatch_all(uow_factory)
    database.pass_errors.append(RuntimeError("deadlock detected"))
    patient = HeavyStep(recalculate, EXAMPLE_RECALCULATION, retry=RetryPolicy(max_attempts=3))

    assert handle_delivery(uow_factory, event_id, patient) is Outcome.WAITING

    status = operations.status(uow_factory())
    assert (status.parts_backing_off, status.parts.dead, status.parts.behind) == (1, 0, 1)
    assert operations.health(uow_factory()).parts_backing_off == 1
    assert operations.dead_parts(uow_factory()) == []
    with pytest.raises(DomainError, match=r"^part\(s\) 1 are not dead"):
        operations.retry_dead_parts(uow_factory(), [1])
    clock.advance(1.0)  # the longest backoff after a first failure
    assert operations.status(uow_factory()).parts_backing_off == 0
