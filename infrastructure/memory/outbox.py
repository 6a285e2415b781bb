"""The outbox's ports of the write path in memory, with the SQL adapters' semantics: append,
relay, deliver."""

from __future__ import annotations

from collections.abc import Sequence

from domain.events import FooEvent
from domain.outbox import (
    APPLY,
    DISPATCH,
    FAIL,
    MAX_ERROR_CHARS,
    UNFINISHED_STATES,
    EventState,
    StoredEvent,
)
from domain.ports import DeliveryLedger, Outbox, RelayQueue
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
        for row in self.table.moving(DISPATCH, event_ids):
            row.state, row.dispatches = EventState.DISPATCHED, row.dispatches + 1
            row.available_at = self.table.clock() + lease_seconds

    def record_batch(self, dispatched: int, leases_expired: int) -> None:
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
        applied = self.table.moving(APPLY, applied_ids)
        delivered = self.table.row(delivered_id)
        if delivered.state is EventState.DISPATCHED and delivered.applied:
            delivered.state = EventState.PROCESSED
        for row in applied:
            row.last_error, row.applied = None, True
            if row.state is not EventState.DISPATCHED or row is delivered:
                row.state = EventState.PROCESSED

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        self.table.row(event_id)  # EventNotFoundError if there is no such event
        [row] = self.table.moving(FAIL, [event_id])
        row.last_error, row.failures = error[:MAX_ERROR_CHARS], row.failures + 1
        self.table.count(event_failures=1, events_dead=int(retry_in_s is None))
        if retry_in_s is None:
            row.state = EventState.DEAD
        else:
            row.state, row.available_at = EventState.PENDING, self.table.clock() + retry_in_s
