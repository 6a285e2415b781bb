"""Domain events. Each carries the change it makes to the sum of completed amounts (its delta).

A new event type is one class here: defining a subclass of FooEvent with a `type_name`
registers it, and the outbox, the relay, the recalculation and `rebuild` handle it from then
on (docs/extending.md)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from domain.errors import InvalidEventError, UnknownEventTypeError
from domain.numbers import is_whole_number

EVENT_TYPES: dict[str, type[FooEvent]] = {}


@dataclass(frozen=True)
class FooEvent:
    """Something that happened to a foo and changes every bar by `delta * bar.weight`."""

    foo_id: int
    delta: int

    type_name: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if not cls.type_name:
            return
        known = EVENT_TYPES.setdefault(cls.type_name, cls)
        if known is not cls:
            raise TypeError(f"event type {cls.type_name!r} is already {known.__qualname__}")

    def payload(self) -> dict[str, int]:
        # Every event's two fields (event_from_record accepts no others); built directly, as
        # asdict's recursive copy costs more than the rest of building the event.
        return {"foo_id": self.foo_id, "delta": self.delta}


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


def event_from_record(event_type: str, payload: Any) -> FooEvent:
    """Rebuild an event from its stored form, refusing anything this version cannot apply."""
    cls = EVENT_TYPES.get(event_type)
    if cls is None:
        raise UnknownEventTypeError(event_type)
    if not isinstance(payload, Mapping):
        raise InvalidEventError(f"{event_type} payload must be an object, got {payload!r}")
    unexpected = set(payload) - {"foo_id", "delta"}
    if unexpected:
        raise InvalidEventError(f"{event_type} payload has unexpected fields {sorted(unexpected)}")
    foo_id = _whole_number(payload, "foo_id")
    if foo_id <= 0:
        raise InvalidEventError(f"{event_type} payload foo_id must be positive, got {foo_id}")
    return cls(foo_id=foo_id, delta=_whole_number(payload, "delta"))
