"""The outbox's ports in memory, with the SQL adapters' semantics."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

from domain.events import FooEvent
from domain.outbox import (
    UNFINISHED_STATES,
    Checkpoint,
    EventState,
    OutboxHealth,
    OutboxStats,
    StoredEvent,
)
from domain.ports import (
    DeliveryLedger,
    Outbox,
    OutboxAdmin,
    RelayQueue,
)
from infrastructure.memory.tables import InMemoryOutboxTable, OutboxRow


class InMemoryOutbox(Outbox):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def append(self, event: FooEvent) -> None:
        now, data = self.table.clock(), self.table.data
        row_id = data.next_id("events")
        data.events[row_id] = OutboxRow(row_id, event.type_name, event.payload(), now, now)


class InMemoryRelayQueue(RelayQueue):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def try_lock(self) -> bool:
        return True

    def count_in_flight(self) -> int:
        return len(self.table.rows(lambda row: row.state is EventState.DISPATCHED))

    def _claim(self, state: EventState, limit: int) -> list[StoredEvent]:
        now = self.table.clock()
        due = self.table.rows(lambda row: row.state is state and row.available_at <= now)
        return [row.stored() for row in due[: max(limit, 0)]]

    def claim_expired(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.DISPATCHED, limit)

    def claim_pending(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.PENDING, limit)

    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        for row in map(self.table.row, event_ids):
            row.state, row.dispatches = EventState.DISPATCHED, row.dispatches + 1
            row.available_at = self.table.clock() + lease_seconds

    def record_pass(self, dispatched: int, leases_expired: int) -> None:
        self.table.count(
            relay_passes=1, events_dispatched=dispatched, leases_expired=leases_expired
        )
        self.table.data.last_relay_pass_at = self.table.clock()


class InMemoryDeliveryLedger(DeliveryLedger):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def lock(self, event_id: int) -> StoredEvent:
        return self.table.row(event_id).stored()

    def lock_waiting(self, limit: int, exclude_id: int) -> list[StoredEvent]:
        waiting = self.table.rows(
            lambda r: (
                r.state in UNFINISHED_STATES and not (r.failures or r.applied or r.id == exclude_id)
            )
        )
        return [row.stored() for row in waiting[: max(limit, 0)]]

    def record_applied(self, event_ids: Sequence[int]) -> list[int]:
        guard = self.table.data.applied
        rows = [self.table.row(event_id) for event_id in sorted(set(event_ids))]
        recorded = [row.id for row in rows if row.id not in guard]
        guard.update(recorded)
        return recorded

    def finish_pass(self, applied_ids: Sequence[int], delivered_id: int) -> None:
        delivered = self.table.row(delivered_id)
        if delivered.state is EventState.DISPATCHED and delivered.applied:
            delivered.state = EventState.PROCESSED
        for row in map(self.table.row, applied_ids):
            row.last_error, row.applied = None, True
            if row.state is not EventState.DISPATCHED or row is delivered:
                row.state = EventState.PROCESSED

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        row = self.table.row(event_id)
        if row.state not in UNFINISHED_STATES:
            return
        row.last_error, row.failures = error[:4000], row.failures + 1
        self.table.count(event_failures=1, events_dead=int(retry_in_s is None))
        if retry_in_s is None:
            row.state = EventState.DEAD
        else:
            row.state, row.available_at = EventState.PENDING, self.table.clock() + retry_in_s


class InMemoryOutboxAdmin(OutboxAdmin):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def stats(self) -> OutboxStats:
        rows = self.table.rows()

        def count(state: EventState) -> int:
            return sum(1 for row in rows if row.state is state)

        unfinished = [row.occurred_at for row in rows if row.state in UNFINISHED_STATES]
        oldest = max(self.table.clock() - min(unfinished), 0.0) if unfinished else None
        return OutboxStats(
            pending=count(EventState.PENDING),
            in_flight=count(EventState.DISPATCHED),
            processed=count(EventState.PROCESSED),
            dead=count(EventState.DEAD),
            oldest_pending_age_s=oldest,
        )

    def health(self) -> OutboxHealth:
        stats, data = self.stats(), self.table.data
        last_pass = data.last_relay_pass_at
        return OutboxHealth(
            pending=stats.pending,
            in_flight=stats.in_flight,
            dead=stats.dead,
            oldest_pending_age_s=stats.oldest_pending_age_s or 0.0,
            events_applied=data.events_applied,
            event_failures=data.counters.get("event_failures", 0),
            events_dead=data.counters.get("events_dead", 0),
            events_dispatched=data.counters.get("events_dispatched", 0),
            leases_expired=data.counters.get("leases_expired", 0),
            relay_passes=data.counters.get("relay_passes", 0),
            last_relay_pass_age_s=None if last_pass is None else self.table.clock() - last_pass,
            events_pruned=data.checkpoint.events,
        )

    def _in_id_order(self, keep: Callable[[OutboxRow], bool]) -> list[StoredEvent]:
        return [row.stored() for row in sorted(self.table.rows(keep), key=lambda row: row.id)]

    def applied_events(self) -> Iterator[StoredEvent]:
        yield from self._in_id_order(lambda row: row.applied)

    def applied_sum(self) -> tuple[int, int]:
        applied = [row.stored().event().delta for row in self.table.rows(lambda r: r.applied)]
        return sum(applied), len(applied)

    def dead_events(self) -> list[StoredEvent]:
        return self._in_id_order(lambda row: row.state is EventState.DEAD)

    def checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def lock_checkpoint(self) -> Checkpoint:
        return self.table.data.checkpoint

    def first_recent_id(self, older_than_s: float) -> int | None:
        cutoff = self.table.clock() - older_than_s
        recent = self._in_id_order(lambda row: row.occurred_at > cutoff)
        return recent[0].id if recent else None

    def lock_prunable(
        self, older_than_s: float, limit: int, after_id: int = 0, below_id: int | None = None
    ) -> list[StoredEvent]:
        cutoff = self.table.clock() - older_than_s
        old = self._in_id_order(
            lambda row: (
                row.state is EventState.PROCESSED
                and row.occurred_at <= cutoff
                and after_id < row.id < (row.id + 1 if below_id is None else below_id)
            )
        )
        return old[: max(limit, 0)]

    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        data, was = self.table.data, self.table.data.checkpoint
        data.checkpoint = Checkpoint(
            was.total + total,
            was.events + len(events),
            max([was.last_pruned_id, *(event.id for event in events)]),
        )
        for event in events:
            data.applied.discard(event.id)
            del data.events[event.id]

    def revive_dead(self, event_ids: Sequence[int] | None) -> list[int]:
        wanted = set(self.table.data.events) if event_ids is None else set(event_ids)
        dead = self.table.rows(lambda row: row.state is EventState.DEAD and row.id in wanted)
        for row in dead:
            row.state, row.failures, row.available_at = (
                EventState.PENDING,
                0,
                self.table.clock(),
            )
        return sorted(row.id for row in dead)
