"""Reading outbox rows into the domain's StoredEvent."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Select, select

from domain.outbox import UNFINISHED_STATES, EventState, StoredEvent, Transition
from infrastructure.sql.schema import outbox_events

EVENT_COLUMNS = (
    outbox_events.c.id,
    outbox_events.c.event_type,
    outbox_events.c.payload,
    outbox_events.c.state,
    outbox_events.c.dispatches,
    outbox_events.c.last_error,
    outbox_events.c.failures,
    outbox_events.c.applied_at.is_not(None).label("applied"),
    outbox_events.c.position,
)
UNFINISHED = outbox_events.c.state.in_([state.value for state in UNFINISHED_STATES])
# The partial index's order: reads in it stay off the finished history.
DUE_ORDER = (outbox_events.c.available_at, outbox_events.c.id)


def select_events() -> Select[Any]:
    return select(*EVENT_COLUMNS)


def stored(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        event_type=row.event_type,
        payload=row.payload,
        state=EventState(row.state),
        dispatches=row.dispatches,
        last_error=row.last_error,
        failures=row.failures,
        applied=bool(row.applied),
        position=None if row.position is None else int(row.position),
    )


def allowed(transition: Transition) -> ColumnElement[bool]:
    """The rows that `transition` may change: the domain's rule as a WHERE clause. The states
    in a fixed order, so that the statement's text, and its cache entry, stay the same."""
    clause: ColumnElement[bool] = outbox_events.c.state.in_(
        sorted(state.value for state in transition.sources)
    )
    if transition.unapplied_only:
        clause = clause & outbox_events.c.applied_at.is_(None)
    return clause
