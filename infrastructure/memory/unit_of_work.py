"""The in-memory unit of work."""

from __future__ import annotations

import copy
from typing import Self

from domain.errors import ConcurrentUpdateError
from domain.ports import (
    UnitOfWork,
)
from infrastructure.memory.monitor import InMemoryOutboxMonitor
from infrastructure.memory.outbox import InMemoryDeliveryLedger, InMemoryOutbox, InMemoryRelayQueue
from infrastructure.memory.parts import InMemoryPartLedger
from infrastructure.memory.projection_log import InMemoryProjectionLog
from infrastructure.memory.repositories import InMemoryBarRepository, InMemoryFooRepository
from infrastructure.memory.retention import InMemoryRetention
from infrastructure.memory.tables import InMemoryDatabase, InMemoryOutboxTable


class InMemoryUnitOfWork(UnitOfWork):
    """`with uow:` starts a transaction on a copy of the committed data; commit publishes it.

    Like the SQL adapter, a foo changed by someone else since it was read (its version moved
    on) makes the commit fail with ConcurrentUpdateError; a committed change bumps the version.
    """

    def __init__(self, database: InMemoryDatabase | None = None) -> None:
        self.database = database if database is not None else InMemoryDatabase()
        self.committed = False

    def __enter__(self) -> Self:
        self.committed = False
        self._begin()
        return super().__enter__()

    def _begin(self) -> None:
        self.data = copy.deepcopy(self.database.data)
        self.foos = InMemoryFooRepository(self.data)
        self.bars = InMemoryBarRepository(self.data, self.database.pass_errors)
        self.parts = InMemoryPartLedger(self.data, self.database.clock)
        table = InMemoryOutboxTable(self.data, self.database.clock)
        self.outbox = InMemoryOutbox(table)
        self.relay_queue = InMemoryRelayQueue(table)
        self.deliveries = InMemoryDeliveryLedger(table)
        self.monitor = InMemoryOutboxMonitor(table)
        self.projection_log = InMemoryProjectionLog(table)
        self.retention = InMemoryRetention(table)

    def _commit(self) -> None:
        before = self.database.data.foos
        for foo_id, foo in self.data.foos.items():
            old = before.get(foo_id)
            if old is None or (old.amount, old.state) == (foo.amount, foo.state):
                continue
            if old.version != foo.version:
                raise ConcurrentUpdateError()
            foo.version += 1
        self.database.data = copy.deepcopy(self.data)
        self.committed = True

    def rollback(self) -> None:
        self._begin()
