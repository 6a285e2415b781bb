"""Helpers for the unit tests: read the fake's committed state, put raw rows in the outbox."""

from __future__ import annotations

from typing import Any

from domain.outbox import EventState
from tests.fakes import FakeDatabase, OutboxRow


def bar_values(database: FakeDatabase) -> dict[int, int]:
    return {bar_id: bar.value for bar_id, bar in database.data.bars.items()}


def event_rows(database: FakeDatabase) -> list[OutboxRow]:
    return [database.data.events[event_id] for event_id in sorted(database.data.events)]


def event_states(database: FakeDatabase) -> dict[int, EventState]:
    return {row.id: row.state for row in event_rows(database)}


def append_raw_event(database: FakeDatabase, event_type: str, payload: Any) -> int:
    """Commit an outbox row as another (older or newer) version of postsave might write it."""
    data = database.data
    event_id = data.next_id("events")
    now = database.clock()
    data.events[event_id] = OutboxRow(event_id, event_type, payload, now, now)
    return event_id
