"""The Retention port: find the processed events old enough to prune, fold them into the
checkpoint and delete them."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import BigInteger, Connection, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from domain.outbox import PRUNE, StoredEvent
from domain.ports import Retention
from infrastructure.sql.clock import db_now, db_now_plus, seconds
from infrastructure.sql.outbox.rows import allowed, select_events, stored
from infrastructure.sql.schema import outbox_events, projection_checkpoint


class SqlRetention(Retention):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def first_recent_id(self, older_than_s: float) -> int | None:
        # Along the primary key from the lowest id: past the few old events a prune leaves
        # (unfinished or dead), the first recent one ends the walk.
        query = (
            select(outbox_events.c.id)
            .where(outbox_events.c.occurred_at > db_now_plus(seconds(-older_than_s)))
            .order_by(outbox_events.c.id)
            .limit(1)
        )
        found = self.connection.execute(query).scalar_one_or_none()
        return None if found is None else int(found)

    def lock_prunable(
        self,
        older_than_s: float,
        limit: int,
        after_id: int = 0,
        below_id: int | None = None,
        through_position: int | None = None,
    ) -> list[StoredEvent]:
        # A range of the primary key: each chunk starts where the last one ended, and none
        # reads the recent events a retention keeps.
        query = (
            select_events()
            .where(
                outbox_events.c.id > after_id,
                allowed(PRUNE),  # processed
                outbox_events.c.occurred_at <= db_now_plus(seconds(-older_than_s)),
            )
            .order_by(outbox_events.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if below_id is not None:
            query = query.where(outbox_events.c.id < below_id)
        if through_position is not None:
            query = query.where(outbox_events.c.position <= through_position)
        return [stored(row) for row in self.connection.execute(query).all()]

    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        ids = [event.id for event in events]
        if not ids:
            return
        checkpoint = projection_checkpoint.c
        self.connection.execute(
            update(projection_checkpoint).values(
                applied_total=checkpoint.applied_total + total,
                events_applied=checkpoint.events_applied + len(ids),
                last_pruned_id=self._greater(checkpoint.last_pruned_id, max(ids)),
                pruned_at=db_now(),
            )
        )
        deleted = self.connection.execute(
            delete(outbox_events).where(self._among(outbox_events.c.id, ids), allowed(PRUNE))
        )
        if deleted.rowcount != len(set(ids)):  # the checkpoint above counted events still held
            held = select(outbox_events.c.id).where(self._among(outbox_events.c.id, ids))
            raise PRUNE.refused(list(self.connection.execute(held).scalars()) or ids)

    def _among(self, column: Any, ids: list[int]) -> Any:
        # On PostgreSQL one array parameter: the statement's text stays the same from chunk to
        # chunk (a thousand-item IN is compiled and parsed anew each time, a third of a prune).
        if self.dialect == "postgresql":
            return column == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        return column.in_(ids)

    def _greater(self, column: Any, value: int) -> Any:
        # SQLite's two-argument max() is PostgreSQL's greatest().
        return (func.max if self.dialect == "sqlite" else func.greatest)(column, value)
