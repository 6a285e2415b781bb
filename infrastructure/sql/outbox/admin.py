"""The OutboxAdmin port: counts by state, the applied log, dead events and their revival."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import BigInteger, Connection, Select, any_, bindparam, delete, func, select, update
from sqlalchemy.dialects.postgresql import ARRAY

from domain.outbox import Checkpoint, EventState, OutboxHealth, OutboxStats, StoredEvent
from domain.ports import OutboxAdmin
from infrastructure.sql.clock import db_now, db_now_plus, seconds, seconds_since
from infrastructure.sql.outbox.rows import UNFINISHED, select_events, stored
from infrastructure.sql.schema import (
    applied_events,
    bar_projection,
    outbox_counters,
    outbox_events,
    projection_checkpoint,
)


class SqlOutboxAdmin(OutboxAdmin):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name

    def stats(self) -> OutboxStats:
        # From the unfinished events and the counters, like health(): what `postsave status`
        # costs does not grow with the log. An applied event whose message is still out is in
        # flight, not processed.
        health = self.health()
        applied_in_flight = self.connection.execute(
            select(func.count()).where(
                outbox_events.c.state == EventState.DISPATCHED.value,
                outbox_events.c.applied_at.is_not(None),
            )
        ).scalar_one()
        return OutboxStats(
            pending=health.pending,
            in_flight=health.in_flight,
            processed=health.events_applied - int(applied_in_flight),
            dead=health.dead,
            oldest_pending_age_s=health.oldest_pending_age_s
            if health.pending + health.in_flight
            else None,
        )

    def health(self) -> OutboxHealth:
        # Each query matches a partial index's predicate (unfinished, dead) or reads a
        # one-row table: none of them reads the finished events.
        state = outbox_events.c.state
        query = select(state, func.count()).where(UNFINISHED).group_by(state)
        unfinished = {row[0]: int(row[1]) for row in self.connection.execute(query)}
        dead = self.connection.execute(
            select(func.count()).where(state == EventState.DEAD.value)
        ).scalar_one()
        oldest = self.connection.execute(
            select(seconds_since(func.min(outbox_events.c.occurred_at))).where(UNFINISHED)
        ).scalar_one()
        counters = self.connection.execute(
            select(
                outbox_counters,
                seconds_since(outbox_counters.c.last_relay_pass_at).label("last_pass_age"),
                bar_projection.c.events_applied,
                projection_checkpoint.c.events_applied.label("events_pruned"),
            )
            .join_from(outbox_counters, bar_projection, bar_projection.c.id == outbox_counters.c.id)
            .join(projection_checkpoint, projection_checkpoint.c.id == outbox_counters.c.id)
        ).one()
        return OutboxHealth(
            pending=int(unfinished.get(EventState.PENDING.value, 0)),
            in_flight=int(unfinished.get(EventState.DISPATCHED.value, 0)),
            dead=int(dead),
            oldest_pending_age_s=0.0 if oldest is None else max(float(oldest), 0.0),
            events_applied=int(counters.events_applied),
            event_failures=int(counters.event_failures),
            events_dead=int(counters.events_dead),
            events_dispatched=int(counters.events_dispatched),
            leases_expired=int(counters.leases_expired),
            relay_passes=int(counters.relay_passes),
            last_relay_pass_age_s=(
                None if counters.last_pass_age is None else max(float(counters.last_pass_age), 0.0)
            ),
            events_pruned=int(counters.events_pruned),
        )

    def applied_events(self) -> Iterator[StoredEvent]:
        query = (
            select_events()
            .where(outbox_events.c.applied_at.is_not(None))
            .order_by(outbox_events.c.id)
            .execution_options(yield_per=10_000)
        )
        for row in self.connection.execute(query):
            yield stored(row)

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
        self, older_than_s: float, limit: int, after_id: int = 0, below_id: int | None = None
    ) -> list[StoredEvent]:
        # A range of the primary key: each chunk starts where the last one ended, and none
        # reads the recent events a retention keeps.
        query = (
            select_events()
            .where(
                outbox_events.c.id > after_id,
                outbox_events.c.state == EventState.PROCESSED.value,
                outbox_events.c.occurred_at <= db_now_plus(seconds(-older_than_s)),
            )
            .order_by(outbox_events.c.id)
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if below_id is not None:
            query = query.where(outbox_events.c.id < below_id)
        return [stored(row) for row in self.connection.execute(query).all()]

    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        ids = [event.id for event in events]
        checkpoint = projection_checkpoint.c
        self.connection.execute(
            update(projection_checkpoint).values(
                applied_total=checkpoint.applied_total + total,
                events_applied=checkpoint.events_applied + len(ids),
                last_pruned_id=self._greater(checkpoint.last_pruned_id, max(ids)),
                pruned_at=db_now(),
            )
        )
        self.connection.execute(
            delete(applied_events).where(self._among(applied_events.c.event_id, ids))
        )
        self.connection.execute(delete(outbox_events).where(self._among(outbox_events.c.id, ids)))

    def _among(self, column: Any, ids: list[int]) -> Any:
        # On PostgreSQL one array parameter: the statement's text stays the same from chunk to
        # chunk (a thousand-item IN is compiled and parsed anew each time, a third of a prune).
        if self.dialect == "postgresql":
            return column == any_(bindparam("ids", ids, type_=ARRAY(BigInteger)))
        return column.in_(ids)

    def _greater(self, column: Any, value: int) -> Any:
        # SQLite's two-argument max() is PostgreSQL's greatest().
        return (func.max if self.dialect == "sqlite" else func.greatest)(column, value)

    def dead_events(self) -> list[StoredEvent]:
        query = (
            select_events()
            .where(outbox_events.c.state == EventState.DEAD.value)
            .order_by(outbox_events.c.id)
        )
        return [stored(row) for row in self.connection.execute(query)]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        query = update(outbox_events).where(outbox_events.c.state == EventState.DEAD.value)
        if event_ids is not None:
            query = query.where(outbox_events.c.id.in_(event_ids))
        revived = self.connection.execute(
            query.values(
                state=EventState.PENDING.value, failures=0, available_at=db_now()
            ).returning(outbox_events.c.id)
        )
        return sorted(revived.scalars())
