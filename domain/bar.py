"""Bar: a projection of the event log. `value == weight * sum(amount for completed foos)`."""

from __future__ import annotations

from domain.errors import InvalidWeightError
from domain.numbers import is_whole_number_between

MAX_WEIGHT = 1_000_000


def validate_weight(weight: object) -> int:
    if not is_whole_number_between(weight, 0, MAX_WEIGHT):
        raise InvalidWeightError(
            f"weight must be a whole number from 0 to {MAX_WEIGHT}, got {weight!r}"
        )
    return weight


class Bar:
    id: int | None

    def __init__(self, weight: int, value: int = 0) -> None:
        self.id = None
        self.weight = validate_weight(weight)
        self.value = value

    def __repr__(self) -> str:
        return f"<Bar {self.id} weight={self.weight} value={self.value}>"

    def expected_value(self, completed_total: int) -> int:
        return self.weight * completed_total
