"""Retention: finished events folded into the checkpoint and deleted; the projection, rebuilds
and late messages stay right."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest

from domain.delivery import Outcome, handle_delivery
from domain.errors import DomainError
from domain.outbox import Checkpoint, EventState, StoredEvent
from domain.ports import UnitOfWork
from domain.projection import rebuild, start_rebuild, verify
from domain.recalculation import example_closed_form
from domain.retention import format_duration, parse_duration, prune, prune_on_schedule
from domain.use_cases import complete_foos, create_bars, create_foos
from infrastructure.memory import InMemoryDatabase, InMemoryUnitOfWork, ManualClock
from tests.unit.support import (
    DIGEST_STEP,
    STEP,
    append_raw_event,
    bar_values,
    chained,
    computed_with,
    dispatch_all,
    drain,
    event_rows,
    event_states,
    parts,
)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("0s", 0), ("30s", 30), ("15m", 900), ("12h", 43_200), ("7d", 604_800)]
)
def test_durations_are_a_whole_number_and_a_unit(raw: str, seconds: float) -> None:
    assert parse_duration(raw) == seconds


@pytest.mark.parametrize("raw", ["", "7", "d", "1.5h", "-1d", "7 days", "1w", "10000000000s"])
def test_anything_else_is_not_a_duration(raw: str) -> None:
    with pytest.raises(DomainError, match="is not a duration"):
        parse_duration(raw)


@pytest.mark.parametrize(
    ("seconds", "text"), [(0, "0s"), (90, "90s"), (900, "15m"), (86_400, "1d"), (90_000, "25h")]
)
def test_a_duration_is_written_in_its_largest_exact_unit(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text
    assert parse_duration(text) == seconds


def history(uow_factory: Callable[[], UnitOfWork], clock: ManualClock) -> list[int]:
    """Bars of weights 2 and 3; six foos of 10 completed an hour ago, applied."""
    bars = create_bars(uow_factory(), 2) + create_bars(uow_factory(), 3)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=6))
    drain(uow_factory)
    clock.advance(3_600)
    return bars


def test_prune_folds_old_processed_events_into_the_checkpoint_and_deletes_them(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    bars = history(uow_factory, clock)
    complete_foos(uow_factory(), create_foos(uow_factory(), 1))  # new: pending, never pruned
    archived: list[int] = []
    progress: list[int] = []

    report = prune(
        uow_factory,
        older_than_s=60,
        archive=lambda events: archived.extend(e.id for e in events),
        progress=progress.append,
        chunk=4,
    )

    assert (report.pruned, report.total) == (6, 60)
    assert archived == [1, 2, 3, 4, 5, 6]
    assert progress == [4, 6]
    assert event_states(database) == {7: EventState.PENDING}
    assert database.data.checkpoint == Checkpoint(total=60, events=6, last_pruned_id=6)
    # The bars as the prune found them are their baselines now, at their parts' positions.
    assert [(row.baseline, row.baseline_position) for row in database.data.bars.values()] == [
        ({"weight": 2, "value": 120}, 6),
        ({"weight": 3, "value": 180}, 6),
    ]
    assert [p.baseline_position for p in parts(database)] == [6]
    drain(uow_factory)  # new events flow as before
    assert verify(uow_factory, STEP, example_closed_form).holds
    assert bar_values(database) == {bars[0]: 122, bars[1]: 183}


def test_pending_in_flight_dead_and_young_events_are_never_pruned(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=2))
    dead = append_raw_event(database, "FooCompleted", {"foo_id": 1, "delta": "10"})
    [in_flight, young] = dispatch_all(uow_factory)  # the unreadable one is dead at the relay
    handle_delivery(uow_factory, young, STEP)  # processed, but recent
    complete_foos(uow_factory(), create_foos(uow_factory(), 10))
    [pending] = [row.id for row in event_rows(database) if row.state is EventState.PENDING]
    # Applied, both: the one whose message is still out is in flight, not finished.
    assert event_states(database) == {
        in_flight: EventState.DISPATCHED,
        young: EventState.PROCESSED,
        dead: EventState.DEAD,
        pending: EventState.PENDING,
    }
    clock.advance(30)

    assert prune(uow_factory, older_than_s=60).pruned == 0
    assert sorted(database.data.events) == sorted([pending, in_flight, dead, young])
    assert prune(uow_factory, older_than_s=0).pruned == 1  # `0s`: every finished event
    assert sorted(database.data.events) == sorted([pending, in_flight, dead])


def test_rebuild_after_a_prune_is_the_checkpoint_plus_the_events_left(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    bars = history(uow_factory, clock)
    prune(uow_factory, older_than_s=0, chunk=4)
    complete_foos(uow_factory(), create_foos(uow_factory(), 5))
    drain(uow_factory)
    for row in database.data.bars.values():
        row.bar.value = -1  # damaged

    started = rebuild(uow_factory, STEP)

    assert (started.from_position, started.events) == (6, 1)  # the baselines, and one event
    assert bar_values(database) == {bars[0]: 130, bars[1]: 195}
    assert verify(uow_factory, STEP, example_closed_form).holds


def test_a_message_for_a_pruned_event_changes_nothing_and_says_so(
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
    clock: ManualClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    bars = history(uow_factory, clock)
    prune(uow_factory, older_than_s=0)

    with caplog.at_level("INFO", logger="domain.delivery"):
        late = handle_delivery(uow_factory, 3, STEP)
        unknown = handle_delivery(uow_factory, 99, STEP)

    assert (late, unknown) == (Outcome.ALREADY_APPLIED, Outcome.NO_SUCH_EVENT)
    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        ("INFO", "event 3: dropped a message for an event applied and then pruned"),
        ("ERROR", "event 99: dropped a message for an event the outbox does not hold"),
    ]
    assert bar_values(database) == {bars[0]: 120, bars[1]: 180}


def test_an_archive_that_fails_prunes_nothing_of_its_chunk(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    history(uow_factory, clock)

    def full_disk(events: Sequence[StoredEvent]) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        prune(uow_factory, older_than_s=0, archive=full_disk)

    assert len(database.data.events) == 6
    assert database.data.checkpoint == Checkpoint()


def test_a_time_budget_stops_between_chunks_and_the_next_prune_goes_on(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    history(uow_factory, clock)
    budget = ManualClock(0.0)

    def each_chunk_takes_3_s(pruned: int) -> None:
        budget.advance(3)

    first = prune(
        uow_factory,
        older_than_s=0,
        chunk=2,
        time_budget_s=5,
        clock=budget,
        progress=each_chunk_takes_3_s,
    )
    assert (first.pruned, first.finished) == (4, False)  # chunks at 0 s and 3 s, none at 6 s
    assert sorted(database.data.events) == [5, 6]

    second = prune(uow_factory, older_than_s=0, chunk=2, time_budget_s=5, clock=budget)
    assert (second.pruned, second.finished) == (2, True)
    assert database.data.checkpoint == Checkpoint(total=60, events=6, last_pruned_id=6)


def test_prune_walks_the_ids_below_the_first_recent_event_and_a_straggler_waits(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    history(uow_factory, clock)  # events 1-6, an hour old
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=2))
    drain(uow_factory)  # events 7 and 8, recent
    database.data.events[8].occurred_at -= 7_200  # committed late: an old event above 7

    assert prune(uow_factory, older_than_s=60).pruned == 6
    assert sorted(database.data.events) == [7, 8]
    clock.advance(120)
    assert prune(uow_factory, older_than_s=60).pruned == 2  # the next prune takes it
    assert verify(uow_factory, STEP, example_closed_form).holds


def test_the_scheduled_prune_says_what_it_removed_in_one_line(
    uow_factory: Callable[[], UnitOfWork], clock: ManualClock, caplog: pytest.LogCaptureFixture
) -> None:
    history(uow_factory, clock)

    with caplog.at_level("INFO", logger="domain.retention"):
        assert prune_on_schedule(uow_factory, 1_800, time_budget_s=60).pruned == 6
        assert prune_on_schedule(uow_factory, 1_800, time_budget_s=60).pruned == 0

    assert [(r.levelname, r.getMessage()) for r in caplog.records] == [
        (
            "INFO",
            "prune: folded 6 finished events older than 30m into the checkpoint and deleted them",
        ),
    ]


# Baselines: what a replay starts from once the events before it are gone.


def test_after_a_prune_verify_and_rebuild_replay_from_the_baselines_it_took(
    database: InMemoryDatabase, clock: ManualClock
) -> None:
    uow_factory = computed_with(DIGEST_STEP.name, small_parts(database, 1))  # order-sensitive
    bars = create_bars(uow_factory(), 1, count=2)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=4))
    drain(uow_factory, DIGEST_STEP)
    first = [row.id for row in event_rows(database)]
    clock.advance(3_600)

    assert prune(uow_factory, older_than_s=60).pruned == 4
    assert database.data.events == {}

    assert verify(uow_factory, DIGEST_STEP).holds
    complete_foos(uow_factory(), create_foos(uow_factory(), 10))
    drain(uow_factory, DIGEST_STEP)
    everything = [*first, *(row.id for row in event_rows(database))]
    assert bar_values(database) == dict.fromkeys(bars, chained(0, everything))
    assert verify(uow_factory, DIGEST_STEP).holds
    for row in database.data.bars.values():
        row.bar.value = -1  # damaged
    assert not verify(uow_factory, DIGEST_STEP).holds
    rebuild(uow_factory, DIGEST_STEP)
    assert bar_values(database) == dict.fromkeys(bars, chained(0, everything))


def test_a_prune_leaves_the_events_a_part_behind_has_not_passed(
    database: InMemoryDatabase, clock: ManualClock
) -> None:
    uow_factory = small_parts(database, 1)
    create_bars(uow_factory(), 1, count=2)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=2))
    drain(uow_factory)
    complete_foos(uow_factory(), create_foos(uow_factory(), 10, count=2))
    database.pass_errors.append(RuntimeError("disk full"))  # the first part stays behind
    drain(uow_factory)
    clock.advance(3_600)

    assert prune(uow_factory, older_than_s=0).pruned == 2

    assert [(p.position, p.baseline_position) for p in parts(database)] == [(2, 2), (4, 4)]
    assert [row.position for row in event_rows(database)] == [3, 4]
    assert verify(uow_factory, STEP).holds
    clock.advance(60)
    drain(uow_factory)
    assert verify(uow_factory, STEP, example_closed_form).holds


def test_a_rebuilding_part_keeps_its_baseline_and_the_events_after_it(
    uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase, clock: ManualClock
) -> None:
    history(uow_factory, clock)
    start_rebuild(uow_factory(), STEP.name)  # the workers have not replayed it yet

    assert prune(uow_factory, older_than_s=0).pruned == 0

    assert [p.baseline_position for p in parts(database)] == [0]
    assert len(database.data.events) == 6
    drain(uow_factory)
    assert verify(uow_factory, STEP, example_closed_form).holds
    assert prune(uow_factory, older_than_s=0).pruned == 6


def small_parts(database: InMemoryDatabase, size: int) -> Callable[[], UnitOfWork]:
    def make() -> UnitOfWork:
        uow = InMemoryUnitOfWork(database)
        uow.part_size = size
        return uow

    return make
