"""The Outbox port: a unit of work's events, inserted in its own transaction."""

from __future__ import annotations

from sqlalchemy import insert
from sqlalchemy.orm import Session

from domain.events import FooEvent
from domain.ports import Outbox
from infrastructure.schema import outbox_events


class SqlOutbox(Outbox):
    def __init__(self, session: Session) -> None:
        self.session = session

    def append(self, event: FooEvent) -> None:
        self.session.execute(
            insert(outbox_events).values(event_type=event.type_name, payload=event.payload())
        )
