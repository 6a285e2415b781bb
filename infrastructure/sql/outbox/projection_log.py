"""The ProjectionLog port: the applied log's sum, and the checkpoint that pruning folds into."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Select, func, select

from domain.outbox import Checkpoint
from domain.ports import ProjectionLog
from infrastructure.sql.schema import outbox_events, projection_checkpoint


class SqlProjectionLog(ProjectionLog):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def applied_sum(self) -> tuple[int, int]:
        # Every applied event's payload holds its delta (FooEvent.payload), valid: it was read
        # to be applied. NUMERIC on PostgreSQL, so that the sum may pass BIGINT; SQLite's
        # integers are exact to 64 bits, its NUMERIC is not.
        field = outbox_events.c.payload["delta"]
        delta = field.as_numeric(38, 0) if self.dialect == "postgresql" else field.as_integer()
        total, events = self.connection.execute(
            select(func.coalesce(func.sum(delta), 0), func.count()).where(
                outbox_events.c.applied_at.is_not(None)
            )
        ).one()
        return int(total), int(events)

    def checkpoint(self) -> Checkpoint:
        return self._checkpoint(select(projection_checkpoint))

    def lock_checkpoint(self) -> Checkpoint:
        # SQLite has no row locks; its one writer at a time keeps a prune out just the same.
        return self._checkpoint(select(projection_checkpoint).with_for_update())

    def _checkpoint(self, query: Select[Any]) -> Checkpoint:
        row = self.connection.execute(query).one()
        return Checkpoint(int(row.applied_total), int(row.events_applied), int(row.last_pruned_id))
