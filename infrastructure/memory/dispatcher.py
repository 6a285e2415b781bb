"""A dispatcher that records what it would publish."""

from __future__ import annotations

from collections.abc import Sequence

from domain.errors import DispatchError
from domain.ports import (
    Dispatcher,
)


class InMemoryDispatcher(Dispatcher):
    """Records every id it publishes; `fail_with` makes the next calls raise DispatchError."""

    def __init__(self) -> None:
        self.dispatched: list[int] = []
        self.batches: list[list[int]] = []
        self.fail_with: DispatchError | None = None
        self.expiries: list[float] = []

    def dispatch(self, event_ids: Sequence[int], expires_in_s: float) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.expiries.append(expires_in_s)
        self.batches.append(list(event_ids))
        self.dispatched.extend(event_ids)
