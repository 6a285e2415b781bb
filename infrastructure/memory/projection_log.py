"""The ProjectionLog port in memory: the checkpoint."""

from __future__ import annotations

from domain.outbox import Checkpoint
from domain.ports import ProjectionLog
from infrastructure.memory.tables import InMemoryOutboxTable


class InMemoryProjectionLog(ProjectionLog):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def lock_checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint
