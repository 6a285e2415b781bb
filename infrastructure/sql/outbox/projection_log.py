"""The ProjectionLog port: the checkpoint that pruning folds into."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, select

from domain.outbox import Checkpoint
from domain.ports import ProjectionLog
from infrastructure.sql.schema import projection_checkpoint


class SqlProjectionLog(ProjectionLog):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def checkpoint(self) -> Checkpoint:
        return self._checkpoint(select(projection_checkpoint))

    def lock_checkpoint(self) -> Checkpoint:
        # SQLite has no row locks; its one writer at a time keeps a prune out just the same.
        return self._checkpoint(select(projection_checkpoint).with_for_update())

    def _checkpoint(self, query: Select[Any]) -> Checkpoint:
        row = self.connection.execute(query).one()
        return Checkpoint(int(row.applied_total), int(row.events_applied), int(row.last_pruned_id))
