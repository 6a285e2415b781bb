"""The OutboxMonitor port: counts by state and the counters, dead events and their revival."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, case, func, select, update

from domain.outbox import REVIVE, EventState, OutboxHealth, OutboxStats, StoredEvent
from domain.ports import OutboxMonitor
from infrastructure.sql.clock import db_now, seconds_since
from infrastructure.sql.outbox.rows import UNFINISHED, allowed, select_events, stored
from infrastructure.sql.schema import (
    bar_projection,
    outbox_counters,
    outbox_events,
    projection_checkpoint,
)


class SqlOutboxMonitor(OutboxMonitor):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def stats(self) -> OutboxStats:
        # From the unfinished events and the counters, like health(): what `postsave status`
        # costs does not grow with the log. The projection counts every event applied, pruned
        # ones included; one applied while its message is still out is in flight, not processed.
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
            projection_lag_s=health.projection_lag_s,
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
        # The projection's lag from the same rows: the unfinished events not applied yet.
        occurred_at = outbox_events.c.occurred_at
        unapplied = case((outbox_events.c.applied_at.is_(None), occurred_at))
        ages = select(seconds_since(func.min(occurred_at)), seconds_since(func.min(unapplied)))
        oldest, lag = self.connection.execute(ages.where(UNFINISHED)).one()
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
            oldest_pending_age_s=_age(oldest),
            # Each age reads the clock anew: the lag, of younger events or the same, is kept
            # from passing the oldest age by the microseconds between the two reads.
            projection_lag_s=min(_age(lag), _age(oldest)),
            events_applied=int(counters.events_applied),
            event_failures=int(counters.event_failures),
            part_failures=int(counters.part_failures),
            events_dead=int(counters.events_dead),
            events_dispatched=int(counters.events_dispatched),
            leases_expired=int(counters.leases_expired),
            relay_passes=int(counters.relay_passes),
            last_relay_pass_age_s=(
                None if counters.last_pass_age is None else max(float(counters.last_pass_age), 0.0)
            ),
            events_pruned=int(counters.events_pruned),
        )

    def dead_events(self) -> list[StoredEvent]:
        query = (
            select_events()
            .where(outbox_events.c.state == EventState.DEAD.value)
            .order_by(outbox_events.c.id)
        )
        return [stored(row) for row in self.connection.execute(query)]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        query = update(outbox_events).where(allowed(REVIVE))
        if event_ids is not None:
            query = query.where(outbox_events.c.id.in_(event_ids))
        revived = self.connection.execute(
            query.values(
                state=EventState.PENDING.value, failures=0, available_at=db_now()
            ).returning(outbox_events.c.id)
        )
        return sorted(revived.scalars())


def _age(seconds: float | None) -> float:
    """0 when there is nothing to age; never below 0 (a clock step back)."""
    return 0.0 if seconds is None else max(float(seconds), 0.0)
