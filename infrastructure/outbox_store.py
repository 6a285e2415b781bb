"""The outbox table through SQLAlchemy Core: append, claim, lease, process, fail, revive."""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import case, func, insert, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from domain.errors import EventNotFoundError
from domain.events import FooEvent
from domain.outbox import EventState, OutboxStats, StoredEvent
from domain.ports import Outbox
from infrastructure.schema import outbox_events, processed_events
from infrastructure.sql_time import db_now, db_now_plus, seconds, seconds_since

# Pollers serialise on this PostgreSQL advisory lock, so the in-flight bound is exact even
# when several beats run by mistake. SQLite serialises writers by itself.
RELAY_LOCK_KEY = zlib.crc32(b"postsave.relay")

_EVENT_COLUMNS = (
    outbox_events.c.id,
    outbox_events.c.event_type,
    outbox_events.c.payload,
    outbox_events.c.state,
    outbox_events.c.attempts,
    outbox_events.c.last_error,
    outbox_events.c.failures,
    outbox_events.c.processed_at.is_not(None).label("applied"),
)
_UNFINISHED = outbox_events.c.state.in_([EventState.PENDING.value, EventState.DISPATCHED.value])


def _stored(row: Any) -> StoredEvent:
    return StoredEvent(
        id=row.id,
        event_type=row.event_type,
        payload=row.payload,
        state=EventState(row.state),
        attempts=row.attempts,
        last_error=row.last_error,
        failures=row.failures,
        applied=bool(row.applied),
    )


class SqlOutbox(Outbox):
    def __init__(self, session: Session) -> None:
        self.session = session
        self.dialect = session.get_bind().dialect.name

    def append(self, event: FooEvent) -> None:
        self.session.execute(
            insert(outbox_events).values(event_type=event.type_name, payload=event.payload())
        )

    def lock_for_processing(self, event_id: int) -> StoredEvent:
        query = select(*_EVENT_COLUMNS).where(outbox_events.c.id == event_id).with_for_update()
        row = self.session.execute(query).one_or_none()
        if row is None:
            raise EventNotFoundError(event_id)
        return _stored(row)

    def record_applied(self, event_ids: Sequence[int]) -> list[int]:
        if not event_ids:
            return []
        dialect_insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        guard = (
            dialect_insert(processed_events)
            .values([{"event_id": event_id} for event_id in event_ids])
            .on_conflict_do_nothing(index_elements=[processed_events.c.event_id])
            .returning(processed_events.c.event_id)
        )
        return sorted(self.session.execute(guard).scalars())

    def mark_applied(self, event_ids: Sequence[int], delivered_id: int) -> None:
        if not event_ids:
            return
        message_out = (outbox_events.c.state == EventState.DISPATCHED.value) & (
            outbox_events.c.id != delivered_id
        )
        self.session.execute(
            update(outbox_events)
            .where(outbox_events.c.id.in_(event_ids))
            .values(
                state=case((message_out, outbox_events.c.state), else_=EventState.PROCESSED.value),
                processed_at=db_now(),
                last_error=None,
            )
        )

    def settle(self, event_id: int) -> None:
        self.session.execute(
            update(outbox_events)
            .where(
                outbox_events.c.id == event_id,
                outbox_events.c.state == EventState.DISPATCHED.value,
                outbox_events.c.processed_at.is_not(None),
            )
            .values(state=EventState.PROCESSED.value)
        )

    def lock_for_coalescing(self, limit: int, exclude_id: int) -> list[StoredEvent]:
        query = (
            select(*_EVENT_COLUMNS)
            .where(
                _UNFINISHED,
                outbox_events.c.failures == 0,
                outbox_events.c.processed_at.is_(None),
                outbox_events.c.id != exclude_id,
            )
            # The partial index's order: the read stays off the processed history.
            .order_by(outbox_events.c.available_at, outbox_events.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_stored(row) for row in self.session.execute(query)]

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        if retry_in_s is None:
            values: dict[str, Any] = {"state": EventState.DEAD.value}
        else:
            values = {
                "state": EventState.PENDING.value,
                "available_at": db_now_plus(seconds(retry_in_s)),
            }
        self.session.execute(
            update(outbox_events)
            .where(outbox_events.c.id == event_id, _UNFINISHED)
            .values(last_error=error[:4000], failures=outbox_events.c.failures + 1, **values)
        )

    def try_lock_relay(self) -> bool:
        if self.dialect != "postgresql":
            return True
        query = select(func.pg_try_advisory_xact_lock(RELAY_LOCK_KEY))
        return bool(self.session.execute(query).scalar_one())

    def count_in_flight(self) -> int:
        query = select(func.count()).where(outbox_events.c.state == EventState.DISPATCHED.value)
        return int(self.session.execute(query).scalar_one())

    def _claim(self, state: EventState, limit: int) -> list[StoredEvent]:
        # Rows locked by a worker applying them, or by another claimer, are skipped.
        query = (
            select(*_EVENT_COLUMNS)
            .where(
                _UNFINISHED,
                outbox_events.c.state == state.value,
                outbox_events.c.available_at <= db_now(),
            )
            .order_by(outbox_events.c.available_at, outbox_events.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        return [_stored(row) for row in self.session.execute(query)]

    def claim_expired(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.DISPATCHED, limit)

    def claim_pending(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.PENDING, limit)

    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        self.session.execute(
            update(outbox_events)
            .where(outbox_events.c.id.in_(event_ids))
            .values(
                state=EventState.DISPATCHED.value,
                attempts=outbox_events.c.attempts + 1,
                dispatched_at=db_now(),
                available_at=db_now_plus(seconds(lease_seconds)),
            )
        )

    def stats(self) -> OutboxStats:
        state = outbox_events.c.state

        def count(wanted: EventState) -> Any:
            return func.coalesce(func.sum(case((state == wanted.value, 1), else_=0)), 0)

        row = self.session.execute(
            select(
                count(EventState.PENDING).label("pending"),
                count(EventState.DISPATCHED).label("in_flight"),
                count(EventState.PROCESSED).label("processed"),
                count(EventState.DEAD).label("dead"),
            )
        ).one()
        oldest = self.session.execute(
            select(seconds_since(func.min(outbox_events.c.occurred_at))).where(_UNFINISHED)
        ).scalar_one()
        return OutboxStats(
            pending=int(row.pending),
            in_flight=int(row.in_flight),
            processed=int(row.processed),
            dead=int(row.dead),
            oldest_pending_age_s=None if oldest is None else max(float(oldest), 0.0),
        )

    def processed_events(self) -> Iterator[StoredEvent]:
        query = (
            select(*_EVENT_COLUMNS)
            .where(outbox_events.c.processed_at.is_not(None))
            .order_by(outbox_events.c.id)
            .execution_options(yield_per=10_000)
        )
        for row in self.session.execute(query):
            yield _stored(row)

    def dead_events(self) -> list[StoredEvent]:
        query = (
            select(*_EVENT_COLUMNS)
            .where(outbox_events.c.state == EventState.DEAD.value)
            .order_by(outbox_events.c.id)
        )
        return [_stored(row) for row in self.session.execute(query)]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        query = update(outbox_events).where(outbox_events.c.state == EventState.DEAD.value)
        if event_ids is not None:
            query = query.where(outbox_events.c.id.in_(event_ids))
        revived = self.session.execute(
            query.values(
                state=EventState.PENDING.value, failures=0, available_at=db_now()
            ).returning(outbox_events.c.id)
        )
        return sorted(revived.scalars())
