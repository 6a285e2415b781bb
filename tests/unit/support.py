"""Helpers for the unit tests: make events, move them through the relay and the workers, read
the fake's committed state, put raw rows in the outbox."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from domain.backoff import RetryPolicy
from domain.delivery import handle_delivery
from domain.outbox import EventState, RelayLimits
from domain.ports import UnitOfWork
from domain.relay import relay_once, relay_until_idle
from domain.use_cases import complete_foos, create_foos
from infrastructure.memory import (
    InMemoryDatabase,
    InMemoryDispatcher,
    InMemoryUnitOfWork,
    OutboxRow,
)


def complete_new_foos(uow: InMemoryUnitOfWork, *amounts: int) -> list[int]:
    """Create and complete one foo per amount; return the ids of the events that wrote."""
    before = set(uow.database.data.events)
    complete_foos(uow, [create_foos(uow, amount)[0] for amount in amounts])
    return sorted(set(uow.database.data.events) - before)


def dispatch_all(uow_factory: Callable[[], UnitOfWork]) -> list[int]:
    """One relay batch with room for everything due; the ids it dispatched."""
    dispatcher = InMemoryDispatcher()
    relay_once(uow_factory(), dispatcher, RelayLimits(batch_size=100, lease_seconds=30))
    return dispatcher.dispatched


def drain(uow_factory: Callable[[], UnitOfWork]) -> None:
    """Relay every due event and deliver each message once, as the workers would."""
    dispatcher = InMemoryDispatcher()
    relay_until_idle(uow_factory, dispatcher, RelayLimits(), 10.0)
    for event_id in dispatcher.dispatched:
        handle_delivery(uow_factory, event_id, RetryPolicy())


def bar_values(database: InMemoryDatabase) -> dict[int, int]:
    return {bar_id: bar.value for bar_id, bar in database.data.bars.items()}


def event_rows(database: InMemoryDatabase) -> list[OutboxRow]:
    return [database.data.events[event_id] for event_id in sorted(database.data.events)]


def event_states(database: InMemoryDatabase) -> dict[int, EventState]:
    return {row.id: row.state for row in event_rows(database)}


def append_raw_event(database: InMemoryDatabase, event_type: str, payload: Any) -> int:
    """Commit an outbox row as another (older or newer) version of postsave might write it."""
    data = database.data
    event_id = data.next_id("events")
    now = database.clock()
    data.events[event_id] = OutboxRow(event_id, event_type, payload, now, now)
    return event_id
