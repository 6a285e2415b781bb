"""Rebuilding events from their stored form refuses anything this version cannot apply."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import InvalidEventError, UnknownEventTypeError
from domain.events import FooCancelled, FooCompleted, FooRevised, event_from_record


@pytest.mark.parametrize("cls", [FooCompleted, FooRevised, FooCancelled])
def test_an_event_survives_its_round_trip_through_the_stored_form(cls: type) -> None:
    event = cls(foo_id=3, delta=-17)

    assert event_from_record(event.type_name, event.payload()) == event
    assert event.payload() == {"foo_id": 3, "delta": -17}


@pytest.mark.parametrize("event_type", ["FooDeleted", "", "foocompleted", "FooEvent"])
def test_an_unknown_event_type_is_refused(event_type: str) -> None:
    with pytest.raises(UnknownEventTypeError) as refused:
        event_from_record(event_type, {"foo_id": 1, "delta": 1})

    assert refused.value.event_type == event_type
    assert isinstance(refused.value, InvalidEventError)


@pytest.mark.parametrize("payload", [None, [1, 2], "{}", 5, ("foo_id", 1)], ids=repr)
def test_a_payload_that_is_not_an_object_is_refused(payload: Any) -> None:
    with pytest.raises(InvalidEventError, match="must be an object"):
        event_from_record("FooCompleted", payload)


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"delta": 5}, "'foo_id' must be an integer"),
        ({"foo_id": 1}, "'delta' must be an integer"),
        ({}, "'foo_id' must be an integer"),
        ({"foo_id": 1, "delta": 5, "amount": 5}, "unexpected fields \\['amount'\\]"),
        ({"foo_id": True, "delta": 5}, "'foo_id' must be an integer"),
        ({"foo_id": 1, "delta": False}, "'delta' must be an integer"),
        ({"foo_id": "1", "delta": 5}, "'foo_id' must be an integer"),
        ({"foo_id": 1, "delta": "5"}, "'delta' must be an integer"),
        ({"foo_id": 1, "delta": 5.0}, "'delta' must be an integer"),
        ({"foo_id": 1, "delta": None}, "'delta' must be an integer"),
        ({"foo_id": 0, "delta": 5}, "foo_id must be positive"),
        ({"foo_id": -4, "delta": 5}, "foo_id must be positive"),
    ],
)
def test_a_payload_with_missing_extra_or_mistyped_fields_is_refused(
    payload: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidEventError, match=problem):
        event_from_record("FooRevised", payload)


def test_a_negative_delta_is_a_valid_event() -> None:
    assert event_from_record("FooCancelled", {"foo_id": 2, "delta": -9}).delta == -9
