"""The DeliveryLedger port: lock what a pass applies, guard it once, finish it, or fail it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, case, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from domain.errors import EventNotFoundError
from domain.outbox import APPLY, FAIL, MAX_ERROR_CHARS, EventState, StoredEvent
from domain.ports import DeliveryLedger
from infrastructure.sql.clock import db_now, db_now_plus, seconds
from infrastructure.sql.outbox.rows import DUE_ORDER, UNFINISHED, allowed, select_events, stored
from infrastructure.sql.schema import applied_events, outbox_counters, outbox_events


class SqlDeliveryLedger(DeliveryLedger):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        postgresql = connection.dialect.name == "postgresql"
        self.insert = pg_insert if postgresql else sqlite_insert

    def lock(self, event_id: int) -> StoredEvent:
        query = select_events().where(outbox_events.c.id == event_id).with_for_update()
        row = self.connection.execute(query).one_or_none()
        if row is None:
            raise EventNotFoundError(event_id)
        return stored(row)

    def lock_waiting(self, limit: int, exclude_id: int) -> list[StoredEvent]:
        query = (
            select_events()
            .where(
                UNFINISHED,
                outbox_events.c.failures == 0,
                outbox_events.c.applied_at.is_(None),
                outbox_events.c.id != exclude_id,
            )
            .order_by(*DUE_ORDER)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [stored(row) for row in self.connection.execute(query)]

    def record_applied(self, event_ids: Sequence[int]) -> list[int]:
        if not event_ids:
            return []
        guard = (
            self.insert(applied_events)
            .values([{"event_id": event_id} for event_id in event_ids])
            .on_conflict_do_nothing(index_elements=[applied_events.c.event_id])
            .returning(applied_events.c.event_id)
        )
        return sorted(self.connection.execute(guard).scalars())

    def finish_pass(self, applied_ids: Sequence[int], delivered_id: int) -> None:
        event = outbox_events.c
        newly_applied = event.id.in_(applied_ids)
        dispatched = event.state == EventState.DISPATCHED.value
        other_message_out = dispatched & (event.id != delivered_id)
        finished = self.connection.execute(
            update(outbox_events)
            .where(
                (newly_applied & allowed(APPLY))
                # The delivered event's message is back: if another pass applied it, it is done.
                | ((event.id == delivered_id) & dispatched & event.applied_at.is_not(None))
            )
            .values(
                state=case((other_message_out, event.state), else_=EventState.PROCESSED.value),
                applied_at=case((newly_applied, db_now()), else_=event.applied_at),
                last_error=None,
            )
            .returning(event.id)
        )
        refused = set(applied_ids) - set(finished.scalars())
        if refused:
            raise APPLY.refused(refused)

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        if retry_in_s is None:
            values: dict[str, Any] = {"state": EventState.DEAD.value}
        else:
            values = {
                "state": EventState.PENDING.value,
                "available_at": db_now_plus(seconds(retry_in_s)),
            }
        failed = self.connection.execute(
            update(outbox_events)
            .where(outbox_events.c.id == event_id, allowed(FAIL))
            .values(
                last_error=error[:MAX_ERROR_CHARS],
                failures=outbox_events.c.failures + 1,
                **values,
            )
        )
        if not failed.rowcount:
            self.lock(event_id)  # EventNotFoundError if there is no such event
            raise FAIL.refused([event_id])
        counters = outbox_counters.c
        dead = int(retry_in_s is None)
        self.connection.execute(
            update(outbox_counters).values(
                event_failures=counters.event_failures + 1,
                events_dead=counters.events_dead + dead,
            )
        )
