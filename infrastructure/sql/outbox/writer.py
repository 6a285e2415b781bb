"""The Outbox port: a unit of work's events, inserted in its own transaction at its commit."""

from __future__ import annotations

from sqlalchemy import Connection, insert

from domain.events import FooEvent
from domain.ports import Outbox
from infrastructure.sql.schema import outbox_events

_INSERT_EVENTS = insert(outbox_events)


class SqlOutbox(Outbox):
    """Events wait here until the commit, where a foo's save may write its event in the same
    statement (SqlFooRepository.save_changes); the others go in one INSERT."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.pending: list[FooEvent] = []

    def append(self, event: FooEvent) -> None:
        self.pending.append(event)

    def take(self) -> list[FooEvent]:
        taken, self.pending = self.pending, []
        return taken

    def write(self, events: list[FooEvent]) -> None:
        if events:
            rows = [{"event_type": e.type_name, "payload": e.payload()} for e in events]
            self.connection.execute(_INSERT_EVENTS, rows)
