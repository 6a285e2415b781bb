"""The DeliveryLedger port: settle what every part has applied, the delivered message, and
the events a relay cannot read (dead)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, case, select, update

from domain.errors import EventNotFoundError
from domain.outbox import APPLY, FAIL, MAX_ERROR_CHARS, EventState, StoredEvent
from domain.ports import DeliveryLedger
from infrastructure.sql.clock import db_now, db_now_plus, seconds
from infrastructure.sql.outbox.rows import allowed, select_events, stored
from infrastructure.sql.schema import bar_projection, outbox_counters, outbox_events


class SqlDeliveryLedger(DeliveryLedger):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def lock(self, event_id: int) -> StoredEvent:
        query = select_events().where(outbox_events.c.id == event_id).with_for_update()
        row = self.connection.execute(query).one_or_none()
        if row is None:
            raise EventNotFoundError(event_id)
        return stored(row)

    def apply_through(self, position: int) -> int:
        projection = bar_projection.c
        positions = select(projection.applied_position, projection.counted_position)
        if position <= self.connection.execute(positions).one().applied_position:
            return 0  # stamped already: no lock, so that settling deliveries do not queue
        row = self.connection.execute(positions.with_for_update()).one()
        applied, counted = int(row.applied_position), int(row.counted_position)
        if position <= applied:
            return 0
        event = outbox_events.c
        stamped = self.connection.execute(
            update(outbox_events)
            .where(event.position > applied, event.position <= position, allowed(APPLY))
            .values(
                applied_at=db_now(),
                # A message still out keeps its event dispatched until it is back.
                state=case(
                    (event.state == EventState.DISPATCHED.value, event.state),
                    else_=EventState.PROCESSED.value,
                ),
                last_error=None,
            )
        )
        # Positions run without gaps: the events newly past the highest position ever
        # applied are counted, once; a rebuild's replay is not.
        newly = max(position - max(counted, applied), 0)
        self.connection.execute(
            update(bar_projection).values(
                applied_position=position,
                counted_position=max(counted, position),
                events_applied=projection.events_applied + newly,
            )
        )
        return int(stamped.rowcount)

    def message_back(self, event_id: int) -> bool:
        event = outbox_events.c
        back = self.connection.execute(
            update(outbox_events)
            .where(
                event.id == event_id,
                event.state == EventState.DISPATCHED.value,
                event.applied_at.is_not(None),
            )
            .values(state=EventState.PROCESSED.value)
        )
        return bool(back.rowcount)

    def wait_for_parts(self, event_id: int, retry_in_s: float) -> None:
        event = outbox_events.c
        self.connection.execute(
            update(outbox_events)
            .where(
                event.id == event_id,
                event.state == EventState.DISPATCHED.value,
                event.applied_at.is_(None),
            )
            .values(state=EventState.PENDING.value, available_at=db_now_plus(seconds(retry_in_s)))
        )

    def reopen_after(self, position: int) -> int:
        event = outbox_events.c
        out = event.state == EventState.DISPATCHED.value
        reopened = self.connection.execute(
            update(outbox_events)
            .where(event.position > position, event.state != EventState.DEAD.value)
            .values(
                applied_at=None,
                state=case((out, event.state), else_=EventState.PENDING.value),
                available_at=case((out, event.available_at), else_=db_now()),
            )
        )
        return int(reopened.rowcount)

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
