"""The OutboxMonitor port in memory: counts by state, the counters, dead events."""

from __future__ import annotations

from collections.abc import Sequence

from domain.outbox import (
    REVIVE,
    UNFINISHED_STATES,
    EventState,
    OutboxHealth,
    OutboxStats,
    StoredEvent,
)
from domain.ports import OutboxMonitor
from infrastructure.memory.tables import InMemoryOutboxTable, OutboxRow


class InMemoryOutboxMonitor(OutboxMonitor):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def stats(self) -> OutboxStats:
        rows = self.table.rows()

        def count(state: EventState) -> int:
            return sum(1 for row in rows if row.state is state)

        # As SQL counts them: every event applied (the projection's counter, pruned events
        # included), but those whose message is still out.
        applied_in_flight = sum(1 for r in rows if r.state is EventState.DISPATCHED and r.applied)
        unfinished = [row for row in rows if row.state in UNFINISHED_STATES]
        unapplied = [row for row in unfinished if not row.applied]
        now = self.table.clock()
        return OutboxStats(
            pending=count(EventState.PENDING),
            in_flight=count(EventState.DISPATCHED),
            processed=self.table.data.events_applied - applied_in_flight,
            dead=count(EventState.DEAD),
            oldest_pending_age_s=_age(unfinished, now) if unfinished else None,
            projection_lag_s=_age(unapplied, now),
        )

    def health(self) -> OutboxHealth:
        stats, data = self.stats(), self.table.data
        last_pass = data.last_relay_pass_at
        return OutboxHealth(
            pending=stats.pending,
            in_flight=stats.in_flight,
            dead=stats.dead,
            oldest_pending_age_s=stats.oldest_pending_age_s or 0.0,
            projection_lag_s=stats.projection_lag_s,
            events_applied=data.events_applied,
            event_failures=data.counters.get("event_failures", 0),
            part_failures=data.counters.get("part_failures", 0),
            events_dead=data.counters.get("events_dead", 0),
            events_dispatched=data.counters.get("events_dispatched", 0),
            leases_expired=data.counters.get("leases_expired", 0),
            relay_passes=data.counters.get("relay_passes", 0),
            last_relay_pass_age_s=None if last_pass is None else self.table.clock() - last_pass,
            events_pruned=data.checkpoint.events,
        )

    def dead_events(self) -> list[StoredEvent]:
        return [
            row.stored() for row in self.table.in_id_order(lambda r: r.state is EventState.DEAD)
        ]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        wanted = set(self.table.data.events) if event_ids is None else set(event_ids)
        dead = self.table.in_id_order(
            lambda row: row.id in wanted and REVIVE.allows(row.state, row.applied)
        )
        for row in dead:
            row.state, row.failures, row.available_at = (
                EventState.PENDING,
                0,
                self.table.clock(),
            )
        return [row.id for row in dead]


def _age(rows: list[OutboxRow], now: float) -> float:
    """Of the oldest of `rows`; 0 when there is none."""
    return max(now - min(row.occurred_at for row in rows), 0.0) if rows else 0.0
