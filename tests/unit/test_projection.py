"""Bars are a projection of the event log: verify them, and rebuild them from the log."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.outbox import StoredEvent
from domain.ports import UnitOfWork
from domain.projection import rebuild, verify
from domain.use_cases import cancel_foo, complete_foos, create_bars, create_foos, revise_foo
from infrastructure.memory import InMemoryDatabase
from infrastructure.memory.monitor import InMemoryOutboxMonitor
from infrastructure.memory.outbox import InMemoryDeliveryLedger, InMemoryRelayQueue
from infrastructure.memory.projection_log import InMemoryProjectionLog
from infrastructure.memory.retention import InMemoryRetention
from tests.unit.support import bar_values, drain


def history(uow_factory: Callable[[], UnitOfWork]) -> list[int]:
    """Foos of 10, 20, 30 completed; 20 revised to 25; 30 cancelled: completed total 35."""
    bars = create_bars(uow_factory(), weight=2) + create_bars(uow_factory(), weight=3)
    foo_ids = create_foos(uow_factory(), 10) + create_foos(uow_factory(), 20)
    foo_ids += create_foos(uow_factory(), 30)
    complete_foos(uow_factory(), foo_ids)
    revise_foo(uow_factory(), foo_ids[1], 25)
    cancel_foo(uow_factory(), foo_ids[2])
    create_foos(uow_factory(), 1000)  # pending: never counts
    return bars


def test_verify_holds_once_the_outbox_is_drained(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)

    result = verify(uow_factory())

    assert (result.holds, result.outbox_drained) == (True, True)
    assert (result.bars, result.completed_total, result.mismatched) == (2, 35, [])
    assert bar_values(database) == {bars[0]: 70, bars[1]: 105}


def test_verify_reports_the_bars_that_miss_the_invariant_while_events_are_in_flight(
    uow_factory: Callable[[], UnitOfWork],
) -> None:
    bars = history(uow_factory)

    result = verify(uow_factory())

    assert (result.holds, result.outbox_drained) == (False, False)
    assert [bar.id for bar in result.mismatched] == bars


def test_verify_shows_at_most_the_requested_number_of_mismatched_bars(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    create_bars(uow_factory(), weight=1, count=5)
    complete_foos(uow_factory(), create_foos(uow_factory(), 4))

    result = verify(uow_factory(), show=2)

    assert [bar.id for bar in result.mismatched] == [1, 2]
    assert result.bars == 5


def test_rebuild_restores_bars_that_were_tampered_with(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)
    for bar in database.data.bars.values():
        bar.value = -1
    database.data.applied_total = 12345

    events, rewritten = rebuild(uow_factory())

    assert (events, rewritten) == (5, 2)
    assert bar_values(database) == {bars[0]: 70, bars[1]: 105}
    assert (database.data.applied_total, database.data.events_applied) == (35, 5)
    assert verify(uow_factory()).holds


def test_rebuild_leaves_unprocessed_events_to_the_workers(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = create_bars(uow_factory(), weight=2)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10))
    drain(uow_factory)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5))  # in the outbox, not applied

    assert rebuild(uow_factory()) == (1, 1)
    assert bar_values(database) == {bars[0]: 20}

    drain(uow_factory)
    assert bar_values(database) == {bars[0]: 30}
    assert verify(uow_factory()).holds


def test_rebuild_of_an_empty_log_sets_every_bar_to_zero(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    create_bars(uow_factory(), weight=4, count=2)
    for bar in database.data.bars.values():
        bar.value = 8

    assert rebuild(uow_factory()) == (0, 2)
    assert set(bar_values(database).values()) == {0}


def test_rebuild_asks_the_log_for_its_sum_and_reads_no_event_one_by_one(
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)

    def one_by_one(*args: object, **kwargs: object) -> list[StoredEvent]:
        raise AssertionError("rebuild read the events one by one")

    # Every method that hands out stored events; the log's sum is one aggregate in SQL.
    for port, method in [
        (InMemoryDeliveryLedger, "lock"),
        (InMemoryDeliveryLedger, "lock_waiting"),
        (InMemoryRelayQueue, "claim_pending"),
        (InMemoryRelayQueue, "claim_expired"),
        (InMemoryRetention, "lock_prunable"),
        (InMemoryOutboxMonitor, "dead_events"),
    ]:
        monkeypatch.setattr(port, method, one_by_one)
    sums: list[tuple[int, int]] = []
    summed = InMemoryProjectionLog.applied_sum

    def applied_sum(self: InMemoryProjectionLog) -> tuple[int, int]:
        sums.append(summed(self))
        return sums[-1]

    monkeypatch.setattr(InMemoryProjectionLog, "applied_sum", applied_sum)

    assert rebuild(uow_factory()) == (5, 2)  # 3 completions, a revision, a cancellation
    assert sums == [(35, 5)]  # the whole log, asked for once
    assert bar_values(database) == {bars[0]: 70, bars[1]: 105}
