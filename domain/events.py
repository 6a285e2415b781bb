"""Domain events. Each carries the change it makes to the sum of completed amounts (its delta),
and the foo as the change left it (its amount and state), for a recalculation to read.

A new event type is one class here: defining a subclass of FooEvent with a `type_name`
registers it, and the outbox, the relay, the recalculation and `rebuild` handle it from then
on (docs/extending.md). Fields a subclass adds are stored in its payload too.

Payloads are versioned (`v`): an event stored by an earlier version is brought up to this one
by the upcasters, one version at a time, so a change to the payload never strands the log."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from domain.errors import InvalidEventError, UnknownEventTypeError
from domain.numbers import is_whole_number

EVENT_TYPES: dict[str, type[FooEvent]] = {}
FOO_STATES = ("pending", "completed", "cancelled")  # domain.foo.FooState's values

PAYLOAD_VERSION = 2
# From version n to n + 1: a payload of `type_name` as version n stored it -> as n + 1 reads it.
Upcaster = Callable[[str, dict[str, Any]], dict[str, Any]]


def _amount_and_state_from_delta(event_type: str, payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored `{foo_id, delta}`. What the foo was after the change follows from the
    delta for a completion (+amount) and a cancellation (-amount); a revision's new amount
    was not stored and stays unknown (None)."""
    extra = set(payload) - {"foo_id", "delta"}
    if extra:
        raise InvalidEventError(
            f"{event_type} payload of version 1 has unexpected fields {sorted(extra)}"
        )
    delta = payload.get("delta")
    known: dict[str, tuple[Any, str]] = {
        "FooCompleted": (delta, "completed"),
        "FooCancelled": (-delta if is_whole_number(delta) else None, "cancelled"),
        "FooRevised": (None, "completed"),
    }
    amount, state = known.get(event_type, (None, None))
    return {**payload, "amount": amount, "state": state}


UPCASTERS: dict[int, Upcaster] = {1: _amount_and_state_from_delta}


@dataclass(frozen=True)
class FooEvent:
    """Something that happened to a foo: `delta` is its change to the sum of completed
    amounts; `amount` and `state` are the foo's after the change (None where an event stored
    by an earlier version did not say)."""

    foo_id: int
    delta: int
    amount: int | None = None
    state: str | None = None

    type_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.type_name:
            return
        known = EVENT_TYPES.setdefault(cls.type_name, cls)
        if known is not cls:
            raise TypeError(f"event type {cls.type_name!r} is already {known.__qualname__}")

    def payload(self) -> dict[str, Any]:
        # Built from the field names, found once per class: asdict's recursive copy costs
        # more than the rest of building the event.
        names = type(self)._names()
        return {"v": PAYLOAD_VERSION, **{name: getattr(self, name) for name in names}}

    @classmethod
    def _names(cls) -> tuple[str, ...]:
        names = _FIELD_NAMES.get(cls)
        if names is None:
            names = _FIELD_NAMES[cls] = tuple(field.name for field in fields(cls))
        return names


_FIELD_NAMES: dict[type[FooEvent], tuple[str, ...]] = {}


@dataclass(frozen=True)
class FooCompleted(FooEvent):
    type_name: ClassVar[str] = "FooCompleted"


@dataclass(frozen=True)
class FooRevised(FooEvent):
    type_name: ClassVar[str] = "FooRevised"


@dataclass(frozen=True)
class FooCancelled(FooEvent):
    type_name: ClassVar[str] = "FooCancelled"


def _whole_number(payload: Mapping[str, Any], key: str) -> int:
    value = payload.get(key)
    if not is_whole_number(value):
        raise InvalidEventError(f"event payload field {key!r} must be an integer, got {value!r}")
    return value


def upcast(event_type: str, payload: Mapping[str, Any]) -> dict[str, Any]:
    """The payload as this version stores it, whatever version stored it."""
    raw = payload.get("v", 1)  # version 1 had no version field
    if not is_whole_number(raw) or not 1 <= raw <= PAYLOAD_VERSION:
        raise InvalidEventError(
            f"{event_type} payload version {raw!r} is not one this version of postsave reads "
            f"(1 to {PAYLOAD_VERSION})"
        )
    current = {key: value for key, value in payload.items() if key != "v"}
    for version in range(raw, PAYLOAD_VERSION):
        current = UPCASTERS[version](event_type, current)
    return current


def event_from_record(event_type: str, payload: Any) -> FooEvent:
    """Rebuild an event from its stored form, refusing anything this version cannot apply."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventTypeError(event_type)
    if not isinstance(payload, Mapping):
        raise InvalidEventError(f"{event_type} payload must be an object, got {payload!r}")
    fields_ = upcast(event_type, payload)
    expected = set(cls._names())
    unexpected, missing = set(fields_) - expected, expected - set(fields_)
    if unexpected:
        raise InvalidEventError(f"{event_type} payload has unexpected fields {sorted(unexpected)}")
    if missing:
        raise InvalidEventError(f"{event_type} payload lacks fields {sorted(missing)}")
    foo_id = _whole_number(fields_, "foo_id")
    if foo_id <= 0:
        raise InvalidEventError(f"{event_type} payload foo_id must be positive, got {foo_id}")
    _whole_number(fields_, "delta")
    amount = fields_["amount"]
    if amount is not None and (not is_whole_number(amount) or amount < 0):
        raise InvalidEventError(
            f"{event_type} payload amount must be a whole number >= 0 or null, got {amount!r}"
        )
    if fields_["state"] is not None and fields_["state"] not in FOO_STATES:
        raise InvalidEventError(
            f"{event_type} payload state must be one of {', '.join(FOO_STATES)} or null, "
            f"got {fields_['state']!r}"
        )
    return cls(**fields_)
