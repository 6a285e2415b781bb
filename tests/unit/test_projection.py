"""Bars are a projection of the event log: verify them against a replay of it, and rebuild
them from it, also with another recalculation."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import pytest

from domain.backoff import RetryPolicy
from domain.delivery import RECHECK_STOPPED_S, Outcome, handle_delivery
from domain.errors import DomainError
from domain.parts import PartState
from domain.ports import UnitOfWork
from domain.projection import BarMismatch, rebuild, verify
from domain.recalculation import example_closed_form
from domain.use_cases import cancel_foo, complete_foos, create_bars, create_foos, revise_foo
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork, ManualClock
from tests.unit.support import (
    DIGEST_STEP,
    STEP,
    bar_positions,
    bar_values,
    chained,
    computed_with,
    dispatch_all,
    drain,
    event_rows,
    parts,
)


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


def small_parts(database: InMemoryDatabase, size: int) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        uow = InMemoryUnitOfWork(database)
        uow.part_size = size
        return uow

    return make


def test_verify_holds_once_the_outbox_is_drained(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)

    result = verify(uow_factory, STEP, example_closed_form)

    assert (result.holds, result.outbox_drained, result.checked_closed_form) == (True, True, True)
    assert (result.bars, result.parts, result.completed_total, result.mismatched) == (2, 1, 35, [])
    assert bar_values(database) == {bars[0]: 70, bars[1]: 105}


def test_while_events_are_in_flight_verify_replays_what_each_bar_has_applied(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    dispatch_all(uow_factory)  # sequenced, not applied: each bar is right as of its position

    result = verify(uow_factory, STEP, example_closed_form)

    assert (result.holds, result.outbox_drained, result.checked_closed_form) == (True, False, False)
    assert bar_values(database) == dict.fromkeys(bars, 0)


def test_verify_finds_a_tampered_bar_and_shows_what_it_should_hold(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)
    database.data.bars[bars[1]].bar.value = 104

    result = verify(uow_factory, STEP)

    assert not result.holds
    assert result.mismatched == [
        BarMismatch(bars[1], {"weight": 3, "value": 104}, {"weight": 3, "value": 105})
    ]
    assert result.checked_closed_form is False  # a recalculation of one's own: replay only


def test_verify_finds_a_bar_whose_position_was_tampered_with(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)
    database.data.bars[bars[0]].position = 4  # says it has not applied the fifth event

    assert [m.id for m in verify(uow_factory, STEP).mismatched] == [bars[0]]


def test_verify_checks_the_example_closed_form_too_once_drained(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    # A bar and its baseline damaged alike: its replay agrees, the closed form does not.
    bars = history(uow_factory)
    drain(uow_factory)
    row = database.data.bars[bars[0]]
    row.bar.value += 1
    row.baseline = {**row.baseline, "value": row.baseline["value"] + 1}

    assert verify(uow_factory, STEP).holds
    result = verify(uow_factory, STEP, example_closed_form)

    assert result.mismatched == [
        BarMismatch(bars[0], {"weight": 2, "value": 71}, {"weight": 2, "value": 70})
    ]


def test_verify_shows_at_most_the_requested_number_of_mismatched_bars(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    create_bars(uow_factory(), weight=1, count=5)
    complete_foos(uow_factory(), create_foos(uow_factory(), 4))
    drain(uow_factory)
    for row in database.data.bars.values():
        row.bar.value = -1

    result = verify(uow_factory, STEP, show=2)

    assert [bar.id for bar in result.mismatched] == [1, 2]
    assert result.bars == 5


def test_verify_holds_with_a_recalculation_of_ones_own_over_several_parts(
    database: InMemoryDatabase,
) -> None:
    uow_factory = computed_with(DIGEST_STEP.name, small_parts(database, 2))
    create_bars(uow_factory(), weight=1, count=3)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5, count=2))
    drain(uow_factory, DIGEST_STEP)
    create_bars(uow_factory(), weight=1, count=2)  # one into the last part, one a new part
    complete_foos(uow_factory(), create_foos(uow_factory(), 5))
    drain(uow_factory, DIGEST_STEP)

    result = verify(uow_factory, DIGEST_STEP)

    assert (result.holds, result.bars, result.parts) == (True, 5, 3)
    events = [row.id for row in event_rows(database)]
    assert bar_values(database)[1] == chained(0, events)


# Rebuild: every part back to its baselines, replayed by the passes.


def test_rebuild_restores_bars_that_were_tampered_with(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = history(uow_factory)
    drain(uow_factory)
    for row in database.data.bars.values():
        row.bar.value = -1
    progress: list[tuple[int, int]] = []

    started = rebuild(uow_factory, STEP, progress=lambda done, of: progress.append((done, of)))

    assert (started.parts, started.from_position, started.events) == (1, 0, 5)
    assert progress[-1] == (1, 1)
    assert bar_values(database) == {bars[0]: 70, bars[1]: 105}
    assert bar_positions(database) == dict.fromkeys(bars, 5)
    assert database.data.events_applied == 5  # replayed, not counted again
    assert verify(uow_factory, STEP, example_closed_form).holds


def test_rebuild_leaves_events_not_yet_sequenced_to_the_workers(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = create_bars(uow_factory(), weight=2)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10))
    drain(uow_factory)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5))  # in the outbox, not sequenced

    assert rebuild(uow_factory, STEP).events == 1
    assert bar_values(database) == {bars[0]: 20}

    drain(uow_factory)
    assert bar_values(database) == {bars[0]: 30}
    assert verify(uow_factory, STEP, example_closed_form).holds


def test_rebuild_of_an_empty_log_sets_every_bar_back_to_its_baseline(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    create_bars(uow_factory(), weight=4, count=2)
    for row in database.data.bars.values():
        row.bar.value = 8

    started = rebuild(uow_factory, STEP)

    assert (started.parts, started.events) == (1, 0)
    assert set(bar_values(database).values()) == {0}


def test_rebuild_after_changing_the_recalculation_recomputes_every_bar_with_it(
    database: InMemoryDatabase, clock: ManualClock
) -> None:
    uow_factory = small_parts(database, 2)
    bars = create_bars(uow_factory(), weight=1, count=3)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5, count=3))
    drain(uow_factory)
    events = [row.id for row in event_rows(database)]
    assert bar_values(database) == dict.fromkeys(bars, 15)

    started = rebuild(uow_factory, DIGEST_STEP)

    assert (started.parts, started.events) == (2, 3)
    assert bar_values(database) == dict.fromkeys(bars, chained(0, events))
    assert database.data.recalculation == DIGEST_STEP.name
    assert verify(uow_factory, DIGEST_STEP).holds
    # The old recalculation is refused from now on; the new one goes on.
    complete_foos(uow_factory(), create_foos(uow_factory(), 1))
    [sent] = dispatch_all(uow_factory)
    assert handle_delivery(uow_factory, sent, STEP) is Outcome.REFUSED
    assert bar_values(database) == dict.fromkeys(bars, chained(0, events))
    clock.advance(RECHECK_STOPPED_S)
    drain(uow_factory, DIGEST_STEP)
    assert bar_values(database) == dict.fromkeys(bars, chained(0, [*events, sent]))


def test_a_rebuild_that_cannot_finish_because_a_part_died_says_how_to_resume(
    database: InMemoryDatabase,
) -> None:
    uow_factory = small_parts(database, 1)
    create_bars(uow_factory(), weight=1, count=2)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5))
    drain(uow_factory)
    database.pass_errors.append(RuntimeError("disk full"))
    dying = replace(DIGEST_STEP, retry=RetryPolicy(max_attempts=1))

    with pytest.raises(DomainError, match=r"1 part\(s\) died during the rebuild"):
        rebuild(uow_factory, dying)

    assert [p.state for p in parts(database)] == [PartState.DEAD, PartState.READY]
    assert [p.rebuilding for p in parts(database)] == [True, False]
