"""Whole numbers as the domain accepts them."""

from __future__ import annotations

from typing import TypeGuard


def is_whole_number(value: object) -> TypeGuard[int]:
    """An int that is not a bool: True is an int in Python, but never an amount, count or id."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_whole_number_between(value: object, low: int, high: int) -> TypeGuard[int]:
    return is_whole_number(value) and low <= value <= high
