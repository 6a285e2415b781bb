"""The PartLedger port in memory, with the SQL adapter's semantics (one pass at a time)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from domain.outbox import MAX_ERROR_CHARS, EventState, StoredEvent
from domain.parts import Blockers, Part, PartState, PartStats, Projection
from domain.ports import PartLedger
from infrastructure.memory.tables import InMemoryTables, PartRow


class InMemoryPartLedger(PartLedger):
    def __init__(self, data: InMemoryTables, clock: Callable[[], float]) -> None:
        self.data = data
        self.clock = clock

    def projection(self) -> Projection:
        data = self.data
        return Projection(data.head, data.head_total, data.applied_position, data.recalculation)

    def adopt(self, recalculation: str) -> bool:
        if not self.data.parts:
            self.data.recalculation = recalculation
        return self.data.recalculation == recalculation

    def lock_open(self, part_size: int) -> Part:
        parts = self.data.parts
        if parts and parts[max(parts)].bars < part_size:
            return parts[max(parts)].part()
        part_id = self.data.next_id("parts")
        head, total = self.data.head, self.data.head_total
        parts[part_id] = PartRow(part_id, head, total, head, total, available_at=self.clock())
        return parts[part_id].part()

    def added_bars(self, part_id: int, count: int) -> None:
        self.data.parts[part_id].bars += count

    def _due(self, row: PartRow) -> bool:
        return row.state is PartState.READY and row.available_at <= self.clock()

    def claim(self, head: int) -> Part | None:
        candidates = [
            row
            for row in self.data.parts.values()
            if self._due(row) and (row.position < head or row.rebuilding)
        ]
        if not candidates:
            return None
        return min(candidates, key=lambda row: (row.position, row.id)).part()

    def pass_due(self) -> bool:
        return self.claim(self.data.head) is not None

    def wait_for_passes(self, position: int) -> int:
        # One thread at a time here: no pass holds a part while another unit of work runs.
        return sum(
            1
            for row in self.data.parts.values()
            if row.state is PartState.READY and self._due(row) and row.position < position
        )

    def events_after(self, position: int, limit: int) -> list[StoredEvent]:
        rows = sorted(
            (
                r
                for r in self.data.events.values()
                if r.position is not None and r.position > position
            ),
            key=lambda r: r.position or 0,
        )
        return [row.stored() for row in rows[: max(limit, 0)]]

    def advance(self, part_id: int, position: int, delta_total: int) -> None:
        row = self.data.parts[part_id]
        row.position, row.applied_total = position, row.applied_total + delta_total
        row.failures, row.last_error, row.rebuilding = 0, None, False

    def record_failure(self, part_id: int, error: str, retry_in_s: float | None) -> int:
        row = self.data.parts[part_id]
        row.failures, row.last_error = row.failures + 1, error[:MAX_ERROR_CHARS]
        self.data.counters["part_failures"] = self.data.counters.get("part_failures", 0) + 1
        if retry_in_s is None:
            row.state = PartState.DEAD
        else:
            row.available_at = self.clock() + retry_in_s
        return row.failures

    def blockers(self, position: int) -> Blockers:
        below = [r for r in self.data.parts.values() if r.position < position or r.rebuilding]
        ready = [r for r in below if r.state is PartState.READY]
        return Blockers(
            busy=sum(1 for r in ready if self._due(r)),
            backing_off=sum(1 for r in ready if not self._due(r)),
            dead=sum(1 for r in below if r.state is PartState.DEAD),
        )

    def stats(self) -> PartStats:
        rows, head = list(self.data.parts.values()), self.data.head
        return PartStats(
            parts=len(rows),
            behind=sum(1 for r in rows if r.position < head),
            dead=sum(1 for r in rows if r.state is PartState.DEAD),
            rebuilding=sum(1 for r in rows if r.rebuilding),
            lowest_position=min((r.position for r in rows), default=head),
        )

    def lowest_position(self) -> int:
        return min((r.position for r in self.data.parts.values()), default=self.data.head)

    def parts(self) -> list[Part]:
        return [row.part() for _, row in sorted(self.data.parts.items())]

    def dead_parts(self) -> list[Part]:
        return [part for part in self.parts() if part.state is PartState.DEAD]

    def revive_dead(self, part_ids: Sequence[int] | None) -> list[int]:
        revived = []
        for part_id, row in sorted(self.data.parts.items()):
            if row.state is PartState.DEAD and (part_ids is None or part_id in part_ids):
                row.state, row.failures, row.available_at = PartState.READY, 0, self.clock()
                revived.append(part_id)
        if revived:
            now = self.clock()
            for event in self.data.events.values():
                waiting = event.state is EventState.PENDING and event.position is not None
                if waiting and event.available_at > now:
                    event.available_at = now
        return revived

    def lock(self, part_id: int) -> Part:
        return self.data.parts[part_id].part()

    def set_baseline(self, part_id: int) -> None:
        row = self.data.parts[part_id]
        row.baseline_position, row.baseline_total = row.position, row.applied_total

    def start_rebuild(self, recalculation: str) -> int:
        for row in self.data.parts.values():
            row.position, row.applied_total = row.baseline_position, row.baseline_total
            row.rebuilding, row.state, row.failures = True, PartState.READY, 0
            row.available_at = self.clock()
        rows = self.data.parts.values()
        position = min((row.baseline_position for row in rows), default=self.data.head)
        self.data.applied_position = min(self.data.applied_position, position)
        self.data.recalculation = recalculation
        return position
