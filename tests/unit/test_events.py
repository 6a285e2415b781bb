"""Rebuilding events from their stored form: payloads of every version this one reads, brought
up to the current one; anything else refused."""

from __future__ import annotations

from typing import Any

import pytest

from domain.errors import InvalidEventError, UnknownEventTypeError
from domain.events import (
    PAYLOAD_VERSION,
    FooCancelled,
    FooCompleted,
    FooRevised,
    event_from_record,
    upcast,
)


@pytest.mark.parametrize("cls", [FooCompleted, FooRevised, FooCancelled])
def test_an_event_survives_its_round_trip_through_the_stored_form(cls: type) -> None:
    event = cls(foo_id=3, delta=-17, amount=4, state="cancelled")

    assert event_from_record(event.type_name, event.payload()) == event
    assert event.payload() == {
        "v": PAYLOAD_VERSION,
        "foo_id": 3,
        "delta": -17,
        "amount": 4,
        "state": "cancelled",
    }


def test_the_payload_version_is_two() -> None:
    assert PAYLOAD_VERSION == 2


@pytest.mark.parametrize(
    ("event_type", "delta", "amount", "state"),
    [
        ("FooCompleted", 40, 40, "completed"),
        ("FooCancelled", -25, 25, "cancelled"),
        ("FooRevised", -15, None, "completed"),  # its new amount was never stored
    ],
)
def test_a_version_1_payload_is_read_with_the_amount_and_state_its_delta_implies(
    event_type: str, delta: int, amount: int | None, state: str
) -> None:
    stored = {"foo_id": 7, "delta": delta}  # version 1: no `v`, no amount, no state

    event = event_from_record(event_type, stored)

    assert (type(event).type_name, event.foo_id, event.delta) == (event_type, 7, delta)
    assert (event.amount, event.state) == (amount, state)
    assert stored == {"foo_id": 7, "delta": delta}  # read up, never rewritten
    assert upcast(event_type, {"v": 1, **stored}) == upcast(event_type, stored)


@pytest.mark.parametrize(("field", "value"), [("amount", 9), ("state", "cancelled")])
def test_a_version_1_payload_with_fields_version_1_never_had_is_refused(
    field: str, value: object
) -> None:
    with pytest.raises(
        InvalidEventError,
        match=rf"FooCompleted payload of version 1 has unexpected fields \['{field}'\]",
    ):
        event_from_record("FooCompleted", {"foo_id": 1, "delta": 5, field: value})


def test_a_version_1_cancellation_with_a_mistyped_delta_is_refused_for_its_delta() -> None:
    with pytest.raises(InvalidEventError, match="'delta' must be an integer"):
        event_from_record("FooCancelled", {"foo_id": 7, "delta": "25"})


def test_a_version_2_payload_with_unknown_amount_and_state_is_valid() -> None:
    event = event_from_record(
        "FooRevised", {"v": 2, "foo_id": 1, "delta": 5, "amount": None, "state": None}
    )

    assert event == FooRevised(foo_id=1, delta=5)


@pytest.mark.parametrize("version", [0, 3, -1, "2", 2.0, None, True], ids=repr)
def test_a_payload_version_this_one_does_not_read_is_refused(version: object) -> None:
    payload = {"v": version, "foo_id": 1, "delta": 5, "amount": 5, "state": "completed"}

    with pytest.raises(InvalidEventError, match=r"payload version .* is not one this version"):
        event_from_record("FooCompleted", payload)


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


def v2(**fields: Any) -> dict[str, Any]:
    return {"v": 2, "foo_id": 1, "delta": 5, "amount": 5, "state": "completed", **fields}


@pytest.mark.parametrize(
    ("payload", "problem"),
    [
        ({"delta": 5}, r"lacks fields \['foo_id'\]"),
        ({"foo_id": 1}, r"lacks fields \['delta'\]"),
        ({}, r"lacks fields \['delta', 'foo_id'\]"),
        ({"v": 2, "foo_id": 1, "delta": 5}, r"lacks fields \['amount', 'state'\]"),
        (v2(extra=1), r"unexpected fields \['extra'\]"),
        ({"foo_id": 1, "delta": 5, "weight": 2}, r"unexpected fields \['weight'\]"),
        ({"foo_id": True, "delta": 5}, "'foo_id' must be an integer"),
        ({"foo_id": 1, "delta": False}, "'delta' must be an integer"),
        ({"foo_id": "1", "delta": 5}, "'foo_id' must be an integer"),
        ({"foo_id": 1, "delta": "5"}, "'delta' must be an integer"),
        ({"foo_id": 1, "delta": 5.0}, "'delta' must be an integer"),
        ({"foo_id": 1, "delta": None}, "'delta' must be an integer"),
        ({"foo_id": 0, "delta": 5}, "foo_id must be positive"),
        ({"foo_id": -4, "delta": 5}, "foo_id must be positive"),
        (v2(amount=-1), "amount must be a whole number >= 0 or null"),
        (v2(amount="5"), "amount must be a whole number >= 0 or null"),
        (v2(amount=5.0), "amount must be a whole number >= 0 or null"),
        (v2(state="done"), "state must be one of pending, completed, cancelled or null"),
        (v2(state=1), "state must be one of"),
    ],
)
def test_a_payload_with_missing_extra_or_mistyped_fields_is_refused(
    payload: dict[str, Any], problem: str
) -> None:
    with pytest.raises(InvalidEventError, match=problem):
        event_from_record("FooRevised", payload)


def test_a_negative_delta_is_a_valid_event() -> None:
    assert event_from_record("FooCancelled", {"foo_id": 2, "delta": -9}).delta == -9
