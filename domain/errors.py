"""Domain errors. Each one's docstring is its default message."""

from __future__ import annotations

from collections.abc import Iterable


class DomainError(Exception):
    """The request breaks a rule of the domain; nothing was changed."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class NotFoundError(DomainError):
    """No such record."""


class FooNotFoundError(NotFoundError):
    """No foo with that id."""

    def __init__(self, foo_id: int) -> None:
        super().__init__(f"foo {foo_id} does not exist")
        self.foo_id = foo_id


class EventNotFoundError(NotFoundError):
    """No outbox event with that id."""

    def __init__(self, event_id: int) -> None:
        super().__init__(f"outbox event {event_id} does not exist")
        self.event_id = event_id


class IllegalTransitionError(DomainError):
    """An outbox event's state does not allow that change; the transaction is to be undone."""

    def __init__(self, change: str, event_ids: Iterable[int]) -> None:
        self.change, self.event_ids = change, sorted(event_ids)
        ids = ", ".join(map(str, self.event_ids))
        super().__init__(f"cannot {change} outbox event(s) {ids}: not in a state that allows it")


class InvalidAmountError(DomainError):
    """An amount must be a whole number from 0 to the maximum."""


class InvalidWeightError(DomainError):
    """A weight must be a whole number from 0 to the maximum."""


class InvalidTransitionError(DomainError):
    """That state change is not allowed."""


class ConcurrentUpdateError(DomainError):
    """Someone else changed this record at the same time; try again."""


class InvalidEventError(DomainError):
    """An event's payload does not describe a valid event."""


class UnknownEventTypeError(InvalidEventError):
    """The event type is not one this version of postsave knows."""

    def __init__(self, event_type: str) -> None:
        super().__init__(f"unknown event type {event_type!r}")
        self.event_type = event_type


class DispatchError(Exception):
    """The broker did not take the messages; the events stay due."""
