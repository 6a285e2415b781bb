"""The use cases on fake ports: each is one transaction, all or nothing, events at commit."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from domain import use_cases
from domain.delivery import handle_delivery
from domain.errors import (
    ConcurrentUpdateError,
    DomainError,
    FooNotFoundError,
    InvalidAmountError,
    InvalidTransitionError,
    InvalidWeightError,
)
from domain.foo import FooState
from domain.outbox import RelayLimits
from domain.ports import UnitOfWork
from domain.relay import relay_once
from domain.use_cases import (
    cancel_foo,
    cancel_foos,
    complete_foo,
    complete_foos,
    create_bar,
    create_bars,
    create_foos,
    revise_foo,
)
from infrastructure.memory import InMemoryDatabase, InMemoryDispatcher, InMemoryUnitOfWork
from tests.unit.support import (
    DIGEST,
    STEP,
    bar_values,
    complete_new_foos,
    dispatch_all,
    drain,
    event_rows,
    parts,
)

INVALID_AMOUNTS = [-1, True, 1.5, "3"]
INVALID_WEIGHTS = [-2, False, 0.5, "1"]


def foo_row(database: InMemoryDatabase, foo_id: int) -> tuple[FooState, int]:
    foo = database.data.foos[foo_id]
    return foo.state, foo.amount


def outbox(database: InMemoryDatabase) -> list[tuple[str, dict[str, Any]]]:
    return [(row.event_type, row.payload) for row in event_rows(database)]


def payload(foo_id: int, delta: int, amount: int, state: str) -> dict[str, Any]:
    """As the current version stores an event: the change and the foo after it."""
    return {"v": 2, "foo_id": foo_id, "delta": delta, "amount": amount, "state": state}


def test_creating_foos_stores_pending_foos_and_returns_their_ids(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    ids = create_foos(uow, amount=12, count=3)

    assert ids == [1, 2, 3]
    assert uow.committed
    assert [foo_row(database, foo_id) for foo_id in ids] == [(FooState.PENDING, 12)] * 3
    assert outbox(database) == []


@pytest.mark.parametrize("amount", INVALID_AMOUNTS, ids=repr)
def test_creating_a_foo_with_an_invalid_amount_is_refused_and_stores_nothing(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase, amount: object
) -> None:
    with pytest.raises(InvalidAmountError):
        create_foos(uow, amount=amount)  # type: ignore[arg-type]

    assert database.data.foos == {}


@pytest.mark.parametrize("count", [0, -1, True, 2.0, "2"], ids=repr)
def test_creating_foos_with_an_invalid_count_is_refused_and_stores_nothing(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase, count: object
) -> None:
    with pytest.raises(DomainError, match="count must be"):
        create_foos(uow, amount=1, count=count)  # type: ignore[arg-type]

    assert database.data.foos == {}


def test_completing_a_foo_writes_foo_completed_with_its_amount_to_the_outbox(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)

    complete_foo(uow, foo_id)

    assert foo_row(database, foo_id) == (FooState.COMPLETED, 30)
    assert outbox(database) == [("FooCompleted", payload(foo_id, 30, 30, "completed"))]


def test_revising_a_completed_foo_writes_foo_revised_with_the_difference(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)
    complete_foo(uow, foo_id)

    revise_foo(uow, foo_id, 21)

    assert foo_row(database, foo_id) == (FooState.COMPLETED, 21)
    assert outbox(database)[1:] == [("FooRevised", payload(foo_id, -9, 21, "completed"))]


def test_revising_a_pending_foo_changes_its_amount_and_writes_no_event(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)

    revise_foo(uow, foo_id, 44)

    assert foo_row(database, foo_id) == (FooState.PENDING, 44)
    assert outbox(database) == []


def test_cancelling_a_completed_foo_writes_foo_cancelled_with_minus_its_amount(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)
    complete_foo(uow, foo_id)

    cancel_foo(uow, foo_id)

    assert foo_row(database, foo_id) == (FooState.CANCELLED, 30)
    assert outbox(database)[1:] == [("FooCancelled", payload(foo_id, -30, 30, "cancelled"))]


def test_cancelling_a_pending_foo_cancels_it_and_writes_no_event(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)

    cancel_foo(uow, foo_id)

    assert foo_row(database, foo_id) == (FooState.CANCELLED, 30)
    assert outbox(database) == []


def test_a_foos_version_moves_on_with_every_committed_change(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    [foo_id] = create_foos(uow, amount=30)
    complete_foo(uow, foo_id)
    revise_foo(uow, foo_id, 31)

    assert database.data.foos[foo_id].version == 3


def _complete(uow: UnitOfWork, foo_id: int) -> None:
    complete_foo(uow, foo_id)


def _cancel(uow: UnitOfWork, foo_id: int) -> None:
    cancel_foo(uow, foo_id)


def _revise(uow: UnitOfWork, foo_id: int) -> None:
    revise_foo(uow, foo_id, 77)


FORBIDDEN = [
    pytest.param(["complete"], _complete, FooState.COMPLETED, id="complete-completed"),
    pytest.param(["complete", "cancel"], _complete, FooState.CANCELLED, id="complete-cancelled"),
    pytest.param(["cancel"], _cancel, FooState.CANCELLED, id="cancel-cancelled-from-pending"),
    pytest.param(["complete", "cancel"], _cancel, FooState.CANCELLED, id="cancel-cancelled"),
    pytest.param(["complete", "cancel"], _revise, FooState.CANCELLED, id="revise-cancelled"),
    pytest.param(["cancel"], _revise, FooState.CANCELLED, id="revise-cancelled-from-pending"),
]


@pytest.mark.parametrize(("history", "change", "state"), FORBIDDEN)
def test_a_forbidden_transition_is_refused_and_writes_nothing(
    uow: InMemoryUnitOfWork,
    database: InMemoryDatabase,
    history: list[str],
    change: Callable[[UnitOfWork, int], None],
    state: FooState,
) -> None:
    [foo_id] = create_foos(uow, amount=30)
    for step in history:
        {"complete": _complete, "cancel": _cancel}[step](uow, foo_id)
    events_before = outbox(database)

    with pytest.raises(InvalidTransitionError) as refused:
        change(uow, foo_id)

    assert f"foo {foo_id}" in str(refused.value)
    assert state.value in str(refused.value)
    assert not uow.committed
    assert foo_row(database, foo_id) == (state, 30)
    assert outbox(database) == events_before


@pytest.mark.parametrize("amount", INVALID_AMOUNTS, ids=repr)
def test_revising_to_an_invalid_amount_is_refused_and_writes_nothing(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase, amount: object
) -> None:
    [foo_id] = create_foos(uow, amount=30)
    complete_foo(uow, foo_id)

    with pytest.raises(InvalidAmountError):
        revise_foo(uow, foo_id, amount)  # type: ignore[arg-type]

    assert foo_row(database, foo_id) == (FooState.COMPLETED, 30)
    assert len(outbox(database)) == 1


@pytest.mark.parametrize(
    "change",
    [
        lambda uow, foo_id: complete_foo(uow, foo_id),
        lambda uow, foo_id: cancel_foo(uow, foo_id),
        lambda uow, foo_id: revise_foo(uow, foo_id, 3),
    ],
    ids=["complete", "cancel", "revise"],
)
def test_changing_an_unknown_foo_raises_foo_not_found(
    uow: InMemoryUnitOfWork, change: Callable[[UnitOfWork, int], None]
) -> None:
    with pytest.raises(FooNotFoundError, match="foo 404 does not exist") as missing:
        change(uow, 404)

    assert missing.value.foo_id == 404


def test_completing_several_foos_with_one_unknown_id_changes_none_of_them(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    ids = create_foos(uow, amount=5, count=3)

    with pytest.raises(FooNotFoundError):
        complete_foos(uow, [ids[0], ids[1], 999, ids[2]])

    assert [foo_row(database, foo_id) for foo_id in ids] == [(FooState.PENDING, 5)] * 3
    assert outbox(database) == []


def test_cancelling_several_foos_with_one_already_cancelled_changes_none_of_them(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    ids = create_foos(uow, amount=5, count=3)
    complete_foos(uow, ids[:2])
    cancel_foo(uow, ids[2])

    with pytest.raises(InvalidTransitionError):
        cancel_foos(uow, ids)

    assert [database.data.foos[foo_id].state for foo_id in ids] == [
        FooState.COMPLETED,
        FooState.COMPLETED,
        FooState.CANCELLED,
    ]
    assert [event_type for event_type, _ in outbox(database)] == ["FooCompleted"] * 2


def test_completing_several_foos_writes_one_event_each_in_the_order_given(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    ids = create_foos(uow, amount=5, count=3)

    complete_foos(uow, [ids[2], ids[0], ids[2], ids[1]])

    assert [fields["foo_id"] for _, fields in outbox(database)] == [ids[2], ids[0], ids[1]]


class ConflictingUnitOfWork(InMemoryUnitOfWork):
    """Loses the optimistic-concurrency race on its first `conflicts` commits."""

    def __init__(self, database: InMemoryDatabase, conflicts: int) -> None:
        super().__init__(database)
        self.conflicts = conflicts
        self.attempts = 0

    def _commit(self) -> None:
        self.attempts += 1
        if self.attempts <= self.conflicts:
            raise ConcurrentUpdateError()
        super()._commit()


def test_a_change_that_loses_a_concurrency_race_is_retried_as_a_whole(
    database: InMemoryDatabase,
) -> None:
    [foo_id] = create_foos(InMemoryUnitOfWork(database), amount=8)
    uow = ConflictingUnitOfWork(database, conflicts=use_cases.CONFLICT_RETRIES - 1)

    complete_foo(uow, foo_id)

    assert uow.attempts == use_cases.CONFLICT_RETRIES
    assert foo_row(database, foo_id) == (FooState.COMPLETED, 8)
    assert outbox(database) == [("FooCompleted", payload(foo_id, 8, 8, "completed"))]


def test_a_change_that_keeps_losing_the_race_gives_up_and_writes_nothing(
    database: InMemoryDatabase,
) -> None:
    [foo_id] = create_foos(InMemoryUnitOfWork(database), amount=8)
    uow = ConflictingUnitOfWork(database, conflicts=use_cases.CONFLICT_RETRIES)

    with pytest.raises(ConcurrentUpdateError):
        complete_foo(uow, foo_id)

    assert uow.attempts == use_cases.CONFLICT_RETRIES
    assert foo_row(database, foo_id) == (FooState.PENDING, 8)
    assert outbox(database) == []


def test_a_commit_on_a_foo_changed_meanwhile_raises_concurrent_update(
    database: InMemoryDatabase,
) -> None:
    [foo_id] = create_foos(InMemoryUnitOfWork(database), amount=8)
    slow = InMemoryUnitOfWork(database)

    with slow:
        slow.foos.get(foo_id).revise(9)
        revise_foo(InMemoryUnitOfWork(database), foo_id, 10)
        with pytest.raises(ConcurrentUpdateError):
            slow.commit()

    assert foo_row(database, foo_id) == (FooState.PENDING, 10)


def test_creating_bars_without_applied_events_starts_them_at_zero(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    ids = create_bars(uow, weight=3, count=2)

    assert ids == [1, 2]
    assert [(row.bar.weight, row.bar.value) for row in database.data.bars.values()] == [(3, 0)] * 2
    assert [(p.position, p.applied_total, p.bars) for p in parts(database)] == [(0, 0, 2)]


def test_bars_fill_parts_of_the_unit_of_works_part_size(database: InMemoryDatabase) -> None:
    uow = InMemoryUnitOfWork(database)
    uow.part_size = 2

    first = create_bars(uow, weight=1, count=5)
    second = create_bars(uow, weight=1, count=2)  # the last part's room first, then a new one

    assert first + second == list(range(1, 8))
    assert [p.bars for p in parts(database)] == [2, 2, 2, 1]
    by_part = {
        p.id: [b for b, row in database.data.bars.items() if row.part_id == p.id]
        for p in parts(database)
    }
    assert list(by_part.values()) == [[1, 2], [3, 4], [5, 6], [7]]


def test_the_first_bars_are_computed_with_the_recalculation_of_the_unit_of_work(
    database: InMemoryDatabase,
) -> None:
    first = InMemoryUnitOfWork(database)
    first.recalculation = DIGEST  # as the container sets it from POSTSAVE_RECALCULATION

    create_bars(first, weight=1)
    assert database.data.recalculation == DIGEST
    create_bars(InMemoryUnitOfWork(database), weight=1)  # another process, the example's

    assert database.data.recalculation == DIGEST  # bars exist: only a rebuild changes it
    assert [p.bars for p in parts(database)] == [2]


def test_a_bar_created_into_a_full_part_while_events_are_sequenced_starts_a_part_at_the_head(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    uow.part_size = 1
    [old] = create_bars(uow, weight=2)
    complete_new_foos(uow, 7, 8)
    sent = dispatch_all(uow_factory)  # sequenced, not yet applied: the head is at 2, total 15

    [new] = create_bars(uow, weight=5)

    assert [(p.position, p.applied_total) for p in parts(database)] == [(0, 0), (2, 15)]
    assert bar_values(database) == {old: 0, new: 5 * 15}
    for event_id in sent:
        handle_delivery(uow_factory, event_id, STEP)
    assert bar_values(database) == {old: 2 * 15, new: 5 * 15}  # the new one got neither again


def test_a_bar_joining_a_part_that_is_behind_starts_at_the_parts_position_and_total(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    complete_new_foos(uow, 4)
    [old] = create_bars(uow, weight=1)  # its part at the head: 1, with a total of 4
    complete_new_foos(uow, 7, 8)
    drain(uow_factory)
    complete_new_foos(uow, 6)
    [sent] = dispatch_all(uow_factory)  # the part is behind: at 3, the head at 4

    [new] = create_bars(uow, weight=5)

    [part] = parts(database)
    assert (part.position, part.applied_total, part.bars) == (3, 19, 2)
    assert (database.data.bars[new].position, bar_values(database)[new]) == (3, 5 * 19)
    handle_delivery(uow_factory, sent, STEP)
    assert bar_values(database) == {old: 4 + 7 + 8 + 6, new: 5 * 25}


def test_a_new_bar_starts_at_its_weight_times_the_applied_total(
    uow: InMemoryUnitOfWork,
    uow_factory: Callable[[], UnitOfWork],
    database: InMemoryDatabase,
) -> None:
    ids = create_foos(uow, amount=7, count=3)
    complete_foos(uow, ids)
    applied = [row.id for row in event_rows(database)[:2]]
    relay_once(uow_factory(), InMemoryDispatcher(), RelayLimits(batch_size=2, sequence_batch=2))
    for event_id in applied:
        handle_delivery(uow_factory, event_id, STEP)

    bar_id = create_bar(uow, weight=5)

    assert database.data.bars[bar_id].bar.value == 5 * 14
    # The third event, still in the outbox, reaches the new bar like any other.
    drain(uow_factory)
    assert database.data.bars[bar_id].bar.value == 5 * 21


@pytest.mark.parametrize("weight", INVALID_WEIGHTS, ids=repr)
def test_creating_a_bar_with_an_invalid_weight_is_refused_and_stores_nothing(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase, weight: object
) -> None:
    with pytest.raises(InvalidWeightError):
        create_bars(uow, weight=weight)  # type: ignore[arg-type]

    assert database.data.bars == {}


def test_creating_zero_bars_is_refused(uow: InMemoryUnitOfWork, database: InMemoryDatabase) -> None:
    with pytest.raises(DomainError, match="count must be"):
        create_bars(uow, weight=1, count=0)

    assert database.data.bars == {}


# Many at once: one transaction per batch, each batch's ids once it is committed.


class FailingCommit(InMemoryUnitOfWork):
    """Its `fail_at`-th commit raises, as a full disk would."""

    def __init__(self, database: InMemoryDatabase, fail_at: int) -> None:
        super().__init__(database)
        self.commits = 0
        self.fail_at = fail_at

    def _commit(self) -> None:
        self.commits += 1
        if self.commits == self.fail_at:
            raise RuntimeError("the disk is full")
        super()._commit()


def test_creating_foos_in_batches_commits_each_batch_before_yielding_its_ids(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase
) -> None:
    batches = use_cases.create_foos_in_batches(uow, amount=4, count=25, batch_size=10)
    stored_when_yielded = []
    for ids in batches:
        stored_when_yielded.append((len(ids), len(database.data.foos)))

    assert stored_when_yielded == [(10, 10), (10, 20), (5, 25)]
    assert sorted(database.data.foos) == list(range(1, 26))
    assert {foo_row(database, foo_id) for foo_id in database.data.foos} == {(FooState.PENDING, 4)}


def test_a_failing_batch_keeps_the_batches_committed_before_it(database: InMemoryDatabase) -> None:
    created: list[int] = []
    with pytest.raises(RuntimeError, match="the disk is full"):
        for ids in use_cases.create_foos_in_batches(
            FailingCommit(database, fail_at=2), amount=1, count=25, batch_size=10
        ):
            created += ids

    assert created == list(range(1, 11))
    assert sorted(database.data.foos) == created


def test_creating_bars_in_batches_starts_each_at_the_applied_total(
    uow: InMemoryUnitOfWork, uow_factory: Callable[[], UnitOfWork], database: InMemoryDatabase
) -> None:
    complete_new_foos(uow, 6)
    drain(uow_factory)
    uow.part_size = 3

    batches = list(use_cases.create_bars_in_batches(uow, weight=3, count=5, batch_size=2))

    assert [len(ids) for ids in batches] == [2, 2, 1]
    assert [database.data.bars[i].bar.value for ids in batches for i in ids] == [18] * 5
    assert [p.bars for p in parts(database)] == [3, 2]


@pytest.mark.parametrize(
    "create",
    [
        lambda uow: use_cases.create_foos_in_batches(uow, 1, count=0),
        lambda uow: use_cases.create_foos_in_batches(uow, 1, count=5, batch_size=0),
        lambda uow: use_cases.create_foos_in_batches(uow, -1, count=5),
        lambda uow: use_cases.create_bars_in_batches(uow, 1, count=True),
        lambda uow: use_cases.create_bars_in_batches(uow, 0.5, count=5),
    ],
)
def test_creating_in_batches_checks_its_input_at_the_call_before_any_batch(
    uow: InMemoryUnitOfWork, database: InMemoryDatabase, create: Callable[[UnitOfWork], object]
) -> None:
    with pytest.raises(DomainError):
        create(uow)  # not iterated: refused all the same

    assert (database.data.foos, database.data.bars) == ({}, {})
