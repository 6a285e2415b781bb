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

    def _claim(
        self, state: EventState, limit: int, sequenced: bool | None = True
    ) -> list[StoredEvent]:
        now = self.table.clock()
        due = self.table.rows(
            lambda row: (
                row.state is state
                and row.available_at <= now
                and (sequenced is None or (row.position is not None) == sequenced)
            )
        )
        return [row.stored() for row in due[: max(limit, 0)]]

    def claim_expired(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.DISPATCHED, limit, sequenced=None)

    def claim_pending(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.PENDING, limit)

    def claim_unsequenced(self, limit: int) -> list[StoredEvent]:
        return self._claim(EventState.PENDING, limit, sequenced=False)

    def mark_dispatched(self, event_ids: Sequence[int], lease_seconds: float) -> None:
        for row in self.table.moving(DISPATCH, event_ids):
            row.state, row.dispatches = EventState.DISPATCHED, row.dispatches + 1
            row.available_at = self.table.clock() + lease_seconds

    def sequence(self, events: Sequence[tuple[int, int]]) -> None:
        data = self.table.data
        for event_id, delta in events:
            row = self.table.row(event_id)
            if row.position is None:
                data.head += 1
                data.head_total += delta
                row.position = data.head

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

    def apply_through(self, position: int) -> int:
        data = self.table.data
        applied, counted = data.applied_position, data.counted_position
        if position <= applied:
            return 0
        stamped = 0
        for row in self.table.rows(
            lambda r: r.position is not None and applied < r.position <= position
        ):
            if not APPLY.allows(row.state, row.applied):
                continue
            row.applied, row.last_error = True, None
            if row.state is not EventState.DISPATCHED:
                row.state = EventState.PROCESSED
            stamped += 1
        data.events_applied += max(position - max(counted, applied), 0)
        data.applied_position, data.counted_position = position, max(counted, position)
        return stamped

    def message_back(self, event_id: int) -> bool:
        row = self.table.data.events.get(event_id)  # none (pruned): nothing to settle, as in SQL
        if row is not None and row.state is EventState.DISPATCHED and row.applied:
            row.state = EventState.PROCESSED
            return True
        return False

    def wait_for_parts(self, event_id: int, retry_in_s: float) -> None:
        row = self.table.data.events.get(event_id)
        if row is not None and row.state is EventState.DISPATCHED and not row.applied:
            row.state, row.available_at = EventState.PENDING, self.table.clock() + retry_in_s

    def reopen_after(self, position: int) -> int:
        rows = self.table.rows(
            lambda r: (
                r.position is not None and r.position > position and r.state is not EventState.DEAD
            )
        )
        for row in rows:
            row.applied = False
            if row.state is not EventState.DISPATCHED:
                row.state, row.available_at = EventState.PENDING, self.table.clock()
        return len(rows)

    def record_failure(self, event_id: int, error: str, retry_in_s: float | None) -> None:
        self.table.row(event_id)  # EventNotFoundError if there is no such event
        [row] = self.table.moving(FAIL, [event_id])
        row.last_error, row.failures = error[:MAX_ERROR_CHARS], row.failures + 1
        self.table.count(event_failures=1, events_dead=int(retry_in_s is None))
        if retry_in_s is None:
            row.state = EventState.DEAD
        else:
            row.state, row.available_at = EventState.PENDING, self.table.clock() + retry_in_s
