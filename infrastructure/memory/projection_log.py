"""The ProjectionLog port in memory: the applied log's sum and the checkpoint."""

from __future__ import annotations

from domain.outbox import Checkpoint
from domain.ports import ProjectionLog
from infrastructure.memory.tables import InMemoryOutboxTable


class InMemoryProjectionLog(ProjectionLog):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def applied_sum(self) -> tuple[int, int]:
        applied = [row.stored().event().delta for row in self.table.rows(lambda r: r.applied)]
        return sum(applied), len(applied)

    def checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def lock_checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint
