"""Foo: the light write of the legacy application, and the events its state changes emit."""

from __future__ import annotations

from enum import StrEnum

from domain.errors import InvalidAmountError, InvalidTransitionError
from domain.events import FooCancelled, FooCompleted, FooEvent, FooRevised
from domain.numbers import is_whole_number_between


class FooState(StrEnum):
    PENDING = "pending"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


# Bounds keep `weight * sum(amounts)` far inside a 64-bit integer for millions of foos.
MAX_AMOUNT = 1_000_000


def validate_amount(amount: object) -> int:
    if not is_whole_number_between(amount, 0, MAX_AMOUNT):
        raise InvalidAmountError(
            f"amount must be a whole number from 0 to {MAX_AMOUNT}, got {amount!r}"
        )
    return amount


class Foo:
    """Only a completed foo counts towards the bars: `sum(amount for completed foos)`."""

    id: int | None
    version: int
    events: list[FooEvent]

    def __init__(self, amount: int, state: FooState = FooState.PENDING) -> None:
        self.id = None
        self.amount = validate_amount(amount)
        self.state = FooState(state)
        self.events = []

    def __repr__(self) -> str:
        return f"<Foo {self.id} {self.state.value} amount={self.amount}>"

    def _require_id(self) -> int:
        if self.id is None:
            raise InvalidTransitionError("a foo must be saved before its state can change")
        return self.id

    def complete(self) -> None:
        if self.state is not FooState.PENDING:
            raise InvalidTransitionError(
                f"foo {self.id} is {self.state.value}; only a pending foo can be completed"
            )
        foo_id = self._require_id()
        self.state = FooState.COMPLETED
        self.events.append(
            FooCompleted(foo_id=foo_id, delta=self.amount, amount=self.amount, state="completed")
        )

    def revise(self, amount: int) -> None:
        new_amount = validate_amount(amount)
        if self.state is FooState.CANCELLED:
            raise InvalidTransitionError(f"foo {self.id} is cancelled; it cannot be revised")
        delta = new_amount - self.amount
        if self.state is FooState.COMPLETED and delta != 0:
            self.events.append(
                FooRevised(self._require_id(), delta, amount=new_amount, state="completed")
            )
        self.amount = new_amount

    def cancel(self) -> None:
        if self.state is FooState.CANCELLED:
            raise InvalidTransitionError(f"foo {self.id} is already cancelled")
        if self.state is FooState.COMPLETED:
            self.events.append(
                FooCancelled(
                    self._require_id(), -self.amount, amount=self.amount, state="cancelled"
                )
            )
        self.state = FooState.CANCELLED
