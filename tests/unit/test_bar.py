"""Bars: valid weights, and the value the invariant expects of them."""

from __future__ import annotations

import pytest

from domain.bar import MAX_WEIGHT, Bar, validate_weight
from domain.errors import InvalidWeightError
from tests.factories import BarFactory


@pytest.mark.parametrize("weight", [-1, MAX_WEIGHT + 1, True, False, 1.0, 0.5, "2", None], ids=repr)
def test_a_bar_with_an_invalid_weight_is_refused(weight: object) -> None:
    with pytest.raises(InvalidWeightError, match="whole number from 0 to"):
        Bar(weight)  # type: ignore[arg-type]


@pytest.mark.parametrize("weight", [0, 1, MAX_WEIGHT])
def test_zero_and_large_whole_weights_are_valid(weight: int) -> None:
    assert validate_weight(weight) == weight


def test_a_new_bar_is_unsaved_and_starts_at_zero_unless_told_otherwise() -> None:
    assert (Bar(3).id, Bar(3).value, Bar(3, value=-6).value) == (None, 0, -6)


def test_a_bars_expected_value_is_its_weight_times_the_completed_total() -> None:
    bar = BarFactory.build(weight=4)

    assert bar.expected_value(25) == 100
    assert bar.expected_value(-3) == -12
