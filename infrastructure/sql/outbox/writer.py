"""The Outbox port: a unit of work's events, collected until its commit, where the write path
(`infrastructure.sql.write_path`) writes them in its transaction."""

from __future__ import annotations

from domain.events import FooEvent
from domain.ports import Outbox


class SqlOutbox(Outbox):
    def __init__(self) -> None:
        self.pending: list[FooEvent] = []

    def append(self, event: FooEvent) -> None:
        self.pending.append(event)
