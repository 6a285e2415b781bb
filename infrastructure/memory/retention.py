"""The Retention port in memory: processed events old enough, folded into the checkpoint and
deleted."""

from __future__ import annotations

from collections.abc import Sequence

from domain.outbox import PRUNE, Checkpoint, StoredEvent
from domain.ports import Retention
from infrastructure.memory.tables import InMemoryOutboxTable


class InMemoryRetention(Retention):
    def __init__(self, table: InMemoryOutboxTable) -> None:
        self.table = table

    def first_recent_id(self, older_than_s: float) -> int | None:
        cutoff = self.table.clock() - older_than_s
        recent = self.table.in_id_order(lambda row: row.occurred_at > cutoff)
        return recent[0].id if recent else None

    def lock_prunable(
        self,
        older_than_s: float,
        limit: int,
        after_id: int = 0,
        below_id: int | None = None,
        through_position: int | None = None,
    ) -> list[StoredEvent]:
        cutoff = self.table.clock() - older_than_s
        through = through_position
        old = self.table.in_id_order(
            lambda row: (
                PRUNE.allows(row.state, row.applied)  # processed
                and row.occurred_at <= cutoff
                and after_id < row.id < (row.id + 1 if below_id is None else below_id)
                and (through is None or (row.position is not None and row.position <= through))
            )
        )
        return [row.stored() for row in old[: max(limit, 0)]]

    def fold_and_delete(self, events: Sequence[StoredEvent], total: int) -> None:
        rows = self.table.moving(PRUNE, [event.id for event in events])
        if not rows:
            return
        data, was = self.table.data, self.table.data.checkpoint
        data.checkpoint = Checkpoint(
            was.total + total,
            was.events + len(rows),
            max([was.last_pruned_id, *(row.id for row in rows)]),
        )
        for row in rows:
            del data.events[row.id]
