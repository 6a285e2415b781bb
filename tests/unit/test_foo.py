"""The foo's state machine: what each transition emits, and every transition it refuses."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.errors import InvalidAmountError, InvalidTransitionError
from domain.events import FooCancelled, FooCompleted, FooRevised
from domain.foo import MAX_AMOUNT, Foo, FooState, validate_amount
from tests.factories import FooFactory

INVALID_AMOUNTS = [-1, MAX_AMOUNT + 1, True, False, 1.0, 2.5, "3", None, [1]]


def test_a_new_foo_is_pending_and_has_emitted_nothing() -> None:
    foo = Foo(5)

    assert foo.state is FooState.PENDING
    assert foo.amount == 5
    assert foo.events == []


def test_completing_a_pending_foo_emits_foo_completed_with_plus_its_amount() -> None:
    foo = FooFactory.build(id=7, amount=40)

    foo.complete()

    assert foo.state is FooState.COMPLETED
    assert foo.events == [FooCompleted(foo_id=7, delta=40, amount=40, state="completed")]


@pytest.mark.parametrize(("old", "new"), [(40, 55), (40, 15), (40, 0), (0, 9)])
def test_revising_a_completed_foo_emits_foo_revised_with_new_minus_old(old: int, new: int) -> None:
    foo = FooFactory.build(id=3, amount=old, state=FooState.COMPLETED)

    foo.revise(new)

    assert foo.amount == new
    assert foo.state is FooState.COMPLETED
    assert foo.events == [FooRevised(foo_id=3, delta=new - old, amount=new, state="completed")]


def test_revising_a_completed_foo_to_the_same_amount_emits_nothing() -> None:
    foo = FooFactory.build(amount=40, state=FooState.COMPLETED)

    foo.revise(40)

    assert foo.events == []


def test_revising_a_pending_foo_only_changes_its_amount() -> None:
    foo = FooFactory.build(amount=40)

    foo.revise(12)

    assert (foo.amount, foo.state, foo.events) == (12, FooState.PENDING, [])


def test_cancelling_a_completed_foo_emits_foo_cancelled_with_minus_its_amount() -> None:
    foo = FooFactory.build(id=4, amount=40, state=FooState.COMPLETED)

    foo.cancel()

    assert foo.state is FooState.CANCELLED
    assert foo.events == [FooCancelled(foo_id=4, delta=-40, amount=40, state="cancelled")]


def test_cancelling_a_pending_foo_cancels_it_and_emits_nothing() -> None:
    foo = FooFactory.build(amount=40)

    foo.cancel()

    assert (foo.state, foo.events) == (FooState.CANCELLED, [])


def test_a_completed_then_revised_then_cancelled_foo_emits_deltas_that_sum_to_zero() -> None:
    foo = FooFactory.build(amount=10)

    foo.complete()
    foo.revise(25)
    foo.cancel()

    assert [event.delta for event in foo.events] == [10, 15, -25]


FORBIDDEN: list[tuple[FooState, str, Callable[[Foo], None]]] = [
    (FooState.COMPLETED, "complete", Foo.complete),
    (FooState.CANCELLED, "complete", Foo.complete),
    (FooState.CANCELLED, "cancel", Foo.cancel),
    (FooState.CANCELLED, "revise", lambda foo: foo.revise(99)),
]


@pytest.mark.parametrize(
    ("state", "change"),
    [(state, change) for state, _, change in FORBIDDEN],
    ids=[f"{name}-{state.value}" for state, name, _ in FORBIDDEN],
)
def test_a_forbidden_transition_is_refused_with_a_message_naming_the_foo_and_its_state(
    state: FooState, change: Callable[[Foo], None]
) -> None:
    foo = FooFactory.build(id=42, amount=30, state=state)

    with pytest.raises(InvalidTransitionError) as refused:
        change(foo)

    assert "foo 42" in str(refused.value)
    assert state.value in str(refused.value)
    assert (foo.state, foo.amount, foo.events) == (state, 30, [])


def test_completing_a_completed_foo_is_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="foo 1 is completed"):
        FooFactory.build(id=1, state=FooState.COMPLETED).complete()


def test_completing_a_cancelled_foo_is_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="foo 1 is cancelled"):
        FooFactory.build(id=1, state=FooState.CANCELLED).complete()


def test_cancelling_a_cancelled_foo_is_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="foo 1 is already cancelled"):
        FooFactory.build(id=1, state=FooState.CANCELLED).cancel()


def test_revising_a_cancelled_foo_is_refused() -> None:
    with pytest.raises(InvalidTransitionError, match="foo 1 is cancelled"):
        FooFactory.build(id=1, state=FooState.CANCELLED).revise(3)


@pytest.mark.parametrize(
    ("state", "change"),
    [
        (FooState.PENDING, Foo.complete),
        (FooState.COMPLETED, Foo.cancel),
        (FooState.COMPLETED, lambda foo: foo.revise(99)),
    ],
    ids=["complete", "cancel", "revise"],
)
def test_a_transition_of_an_unsaved_foo_is_refused_and_leaves_the_foo_unchanged(
    state: FooState, change: Callable[[Foo], None]
) -> None:
    foo = FooFactory.build(id=None, amount=30, state=state)

    with pytest.raises(InvalidTransitionError, match="must be saved"):
        change(foo)

    assert (foo.state, foo.amount, foo.events) == (state, 30, [])


@pytest.mark.parametrize("amount", INVALID_AMOUNTS, ids=repr)
def test_a_foo_with_an_invalid_amount_is_refused(amount: object) -> None:
    with pytest.raises(InvalidAmountError, match="whole number from 0 to"):
        Foo(amount)  # type: ignore[arg-type]


@pytest.mark.parametrize("amount", INVALID_AMOUNTS, ids=repr)
def test_revising_to_an_invalid_amount_is_refused_and_changes_nothing(amount: object) -> None:
    foo = FooFactory.build(amount=8, state=FooState.COMPLETED)

    with pytest.raises(InvalidAmountError):
        foo.revise(amount)  # type: ignore[arg-type]

    assert (foo.amount, foo.events) == (8, [])


@pytest.mark.parametrize("amount", [0, 1, MAX_AMOUNT])
def test_zero_and_large_whole_amounts_are_valid(amount: int) -> None:
    assert validate_amount(amount) == amount


def test_an_unknown_state_is_refused() -> None:
    with pytest.raises(ValueError, match="'done'"):
        Foo(1, state="done")  # type: ignore[arg-type]
