"""Passes: the heavy step part by part, each event once per bar, in the one order; a failing
part backs off alone, then dies loudly; a pass under another recalculation applies nothing."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

import pytest

from domain.backoff import RetryPolicy
from domain.bar import Bar
from domain.errors import ConcurrentUpdateError
from domain.outbox import EventState
from domain.parts import PartState
from domain.passes import (
    PassFailedError,
    RecalculationChangedError,
    advance_parts,
    run_pass,
)
from domain.ports import UnitOfWork
from domain.projection import start_rebuild
from domain.recalculation import LoggedEvent
from domain.use_cases import create_bars
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork, ManualClock
from tests.unit.support import (
    DIGEST_STEP,
    STEP,
    bar_positions,
    bar_values,
    chained,
    complete_new_foos,
    computed_with,
    dispatch_all,
    event_states,
    parts,
)


def small_parts(database: InMemoryDatabase, size: int) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        uow = InMemoryUnitOfWork(database)
        uow.part_size = size
        return uow

    return make


def test_a_pass_applies_the_events_after_its_parts_position_to_each_bar_and_moves_it(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = create_bars(uow, weight=2) + create_bars(uow, weight=3)
    complete_new_foos(uow, 1, 2, 3)
    dispatch_all(uow_factory)  # sequenced: positions 1 to 3

    passed = run_pass(uow_factory(), STEP)

    assert passed is not None
    [part] = parts(database)
    assert (part.id, part.position, part.applied_total, part.bars) == (passed.id, 3, 6, 2)
    assert bar_values(database) == {bars[0]: 12, bars[1]: 18}
    assert bar_positions(database) == {bars[0]: 3, bars[1]: 3}
    assert run_pass(uow_factory(), STEP) is None  # nothing behind: a second pass finds nothing
    assert bar_values(database) == {bars[0]: 12, bars[1]: 18}


def test_a_pass_applies_only_sequenced_events(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    complete_new_foos(uow, 5)  # committed, not yet dispatched: no position

    assert run_pass(uow_factory(), STEP) is None
    assert bar_values(database) == {bar: 0}


def test_a_pass_takes_at_most_its_events_per_pass_and_the_next_pass_goes_on(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    complete_new_foos(uow, 1, 2, 3, 4, 5)
    dispatch_all(uow_factory)
    step = replace(STEP, events_per_pass=2)

    seen = []
    while run_pass(uow_factory(), step) is not None:
        seen.append((parts(database)[0].position, bar_values(database)[bar]))

    assert seen == [(2, 1 + 2), (4, 1 + 2 + 3 + 4), (5, 15)]


def test_each_bar_gets_each_event_once_in_the_one_order_in_one_call_per_pass(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    calls: list[tuple[int | None, list[int]]] = []

    def record(bar: Bar, events: Sequence[LoggedEvent]) -> None:
        calls.append((bar.id, [event.position for event in events]))

    bars = create_bars(uow, weight=1, count=2)
    complete_new_foos(uow, 1, 2, 3)
    dispatch_all(uow_factory)

    run_pass(uow_factory(), replace(STEP, recalculate=record))

    assert calls == [(bars[0], [1, 2, 3]), (bars[1], [1, 2, 3])]


def test_a_bar_ahead_of_its_part_gets_only_the_events_after_its_own_position(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    uow_factory = computed_with(DIGEST_STEP.name, uow_factory)
    [early] = create_bars(uow_factory(), weight=1)
    before = complete_new_foos(InMemoryUnitOfWork(database), 1, 2)
    dispatch_all(uow_factory)
    advance_parts(uow_factory, DIGEST_STEP)
    [late] = create_bars(uow_factory(), weight=1)  # joins the part at position 2
    after = complete_new_foos(InMemoryUnitOfWork(database), 3)
    dispatch_all(uow_factory)
    late_start = database.data.bars[late].bar.value
    # A rebuild takes the part back to its lowest baseline (0): the late bar's is at 2.
    start_rebuild(uow_factory(), DIGEST_STEP.name)
    assert (parts(database)[0].position, bar_positions(database)) == (0, {early: 2, late: 2})

    assert run_pass(uow_factory(), DIGEST_STEP) is not None

    assert bar_values(database) == {
        early: chained(0, before + after),
        late: chained(late_start, after),
    }
    assert bar_positions(database) == {early: 3, late: 3}
    assert parts(database)[0].position == 3


def test_a_part_that_passed_an_event_never_applies_it_again(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    uow.recalculation = DIGEST_STEP.name  # the bars are computed with the digest
    [bar] = create_bars(uow, weight=1)
    events = complete_new_foos(uow, 1, 2)
    dispatch_all(uow_factory)

    assert advance_parts(uow_factory, DIGEST_STEP) == 1
    assert advance_parts(uow_factory, DIGEST_STEP) == 0

    assert bar_values(database) == {bar: chained(0, events)}


def test_parts_pass_one_after_another_until_none_is_behind(
    database: InMemoryDatabase,
) -> None:
    uow_factory = small_parts(database, 2)
    bars = create_bars(uow_factory(), weight=1, count=5)
    complete_new_foos(InMemoryUnitOfWork(database), 4, 5)
    dispatch_all(uow_factory)

    assert advance_parts(uow_factory, STEP) == 3

    assert [(p.bars, p.position, p.applied_total) for p in parts(database)] == [(2, 2, 9)] * 2 + [
        (1, 2, 9)
    ]
    assert bar_values(database) == dict.fromkeys(bars, 9)


def test_advancing_stops_once_its_budget_is_spent(database: InMemoryDatabase) -> None:
    uow_factory = small_parts(database, 1)
    create_bars(uow_factory(), weight=1, count=3)
    complete_new_foos(InMemoryUnitOfWork(database), 4)
    dispatch_all(uow_factory)
    ticks = iter([0.0, 0.5, 1.0])  # the deadline at 1.0: one pass starts, no second

    passes = advance_parts(uow_factory, replace(STEP, budget_s=1.0), clock=lambda: next(ticks))

    assert passes == 1
    assert [p.position for p in parts(database)] == [1, 0, 0]


# Failures: the part backs off alone, then it is dead; nothing of a failed pass is written.


@pytest.mark.parametrize(
    "error", [RuntimeError("connection reset"), ConcurrentUpdateError()], ids=repr
)
def test_a_failing_pass_writes_nothing_and_backs_its_part_off(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    error: Exception,
) -> None:
    [bar] = create_bars(uow, weight=1)
    [event_id] = complete_new_foos(uow, 10)
    dispatch_all(uow_factory)
    database.pass_errors.append(error)

    assert advance_parts(uow_factory, STEP) == 0

    [part] = parts(database)
    assert (part.state, part.position, part.failures) == (PartState.READY, 0, 1)
    assert part.last_error == f"{type(error).__name__}: {error}"
    assert clock() + 0.5 <= database.data.parts[part.id].available_at <= clock() + 1.0
    assert bar_values(database) == {bar: 0}
    assert database.data.events[event_id].failures == 0  # the event did not fail: its part did
    with uow_factory() as counted:
        health = counted.monitor.health()
    assert (health.part_failures, health.event_failures) == (1, 0)
    assert run_pass(uow_factory(), STEP) is None  # backing off
    clock.advance(1.0)
    assert run_pass(uow_factory(), STEP) is not None
    assert bar_values(database) == {bar: 10}
    assert parts(database)[0].failures == 0


def test_a_recalculation_that_raises_midway_leaves_no_bar_of_its_pass_changed(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    bars = create_bars(uow, weight=1, count=2)
    complete_new_foos(uow, 10)
    dispatch_all(uow_factory)

    def second_bar_breaks(bar: Bar, events: Sequence[LoggedEvent]) -> None:
        bar.value += 1
        if bar.id == bars[1]:
            raise ValueError("bar 2 is not computable")

    with pytest.raises(PassFailedError) as failed:
        run_pass(uow_factory(), replace(STEP, recalculate=second_bar_breaks))

    assert failed.value.part.id == parts(database)[0].id
    assert isinstance(failed.value.error, ValueError)
    assert bar_values(database) == dict.fromkeys(bars, 0)
    assert bar_positions(database) == dict.fromkeys(bars, 0)
    assert parts(database)[0].position == 0


def test_a_failing_part_backs_off_alone_and_the_others_pass(
    database: InMemoryDatabase,
) -> None:
    uow_factory = small_parts(database, 1)
    failing, other = create_bars(uow_factory(), weight=1, count=2)
    complete_new_foos(InMemoryUnitOfWork(database), 7)
    dispatch_all(uow_factory)
    database.pass_errors.append(RuntimeError("disk full"))  # the first pass: the first part

    assert advance_parts(uow_factory, STEP) == 1

    assert [(p.position, p.failures) for p in parts(database)] == [(0, 1), (1, 0)]
    assert bar_values(database) == {failing: 0, other: 7}


def test_a_part_that_keeps_failing_is_dead_with_an_error_naming_it_and_what_waits(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    [bar] = create_bars(uow, weight=1)
    complete_new_foos(uow, 10, 20)
    dispatch_all(uow_factory)
    step = replace(STEP, retry=RetryPolicy(max_attempts=3, base_delay_s=4.0, max_delay_s=8.0))

    with caplog.at_level("WARNING", logger="domain.passes"):
        for attempt in range(1, 4):
            database.pass_errors.append(RuntimeError(f"disk full {attempt}\nmore detail"))
            assert advance_parts(uow_factory, step) == 0
            clock.advance(8.0)
        assert advance_parts(uow_factory, step) == 0  # dead: no pass takes it, due or not

    [part] = parts(database)
    assert (part.state, part.failures, part.position) == (PartState.DEAD, 3, 0)
    assert part.last_error == "RuntimeError: disk full 3\nmore detail"  # whole, as recorded
    assert bar_values(database) == {bar: 0}
    assert set(event_states(database).values()) == {EventState.DISPATCHED}  # none failed
    *retried, dead = caplog.records
    assert [(r.levelname, r.part_id, r.failures) for r in retried] == [
        ("WARNING", part.id, 1),
        ("WARNING", part.id, 2),
    ]
    assert (
        retried[0].getMessage().startswith(f"part {part.id} failed (failure 1 of 3), next try in ")
    )
    assert retried[0].getMessage().endswith(" s: RuntimeError: disk full 1")  # its first line
    assert [2.0 <= r.retry_in_s <= 4.0 for r in retried[:1]] == [True]
    assert (dead.levelname, dead.getMessage()) == (
        "ERROR",
        f"part {part.id} is dead after 3 failure(s), 2 event(s) wait on it: "
        f"RuntimeError: disk full 3; `postsave dead retry --part {part.id}` once the cause is "
        "fixed",
    )
    assert (dead.part_id, dead.failures, dead.events_waiting) == (part.id, 3, 2)


def test_with_no_part_yet_a_pass_under_any_recalculation_is_not_refused(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    complete_new_foos(InMemoryUnitOfWork(database), 10)
    dispatch_all(uow_factory)

    assert advance_parts(uow_factory, DIGEST_STEP) == 0  # nothing to pass, nothing refused
    assert advance_parts(uow_factory, STEP) == 0
    create_bars(uow_factory(), weight=1)  # computed with the example's

    with pytest.raises(RecalculationChangedError):  # a bar now: only a rebuild changes it
        advance_parts(uow_factory, DIGEST_STEP)
    assert database.data.recalculation == STEP.name


def test_with_no_part_yet_a_pass_records_the_recalculation_it_runs(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    advance_parts(uow_factory, DIGEST_STEP)

    assert database.data.recalculation == DIGEST_STEP.name


def test_a_pass_under_another_recalculation_than_the_bars_applies_nothing(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    [bar] = create_bars(uow, weight=1)
    complete_new_foos(uow, 10)
    dispatch_all(uow_factory)

    with pytest.raises(RecalculationChangedError) as refused:
        advance_parts(uow_factory, DIGEST_STEP)
    with pytest.raises(RecalculationChangedError):
        run_pass(uow_factory(), DIGEST_STEP)

    assert (refused.value.recorded, refused.value.running) == (STEP.name, DIGEST_STEP.name)
    assert str(refused.value) == (
        f"the bars were computed with {STEP.name}, this process runs "
        f"POSTSAVE_RECALCULATION={DIGEST_STEP.name}: it applies nothing until `postsave "
        f"rebuild` is run with {DIGEST_STEP.name} (or it runs {STEP.name} again)"
    )
    [part] = parts(database)
    assert (part.position, part.failures, part.state) == (0, 0, PartState.READY)  # no failure
    assert bar_values(database) == {bar: 0}
    assert advance_parts(uow_factory, STEP) == 1  # the bars' own recalculation goes on
