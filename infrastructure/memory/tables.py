"""The in-memory database: committed tables that each unit of work copies."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from domain.bar import Bar
from domain.errors import EventNotFoundError
from domain.foo import Foo
from domain.outbox import (
    Checkpoint,
    EventState,
    StoredEvent,
    Transition,
)
from domain.parts import Part, PartState
from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.memory.clock import ManualClock


@dataclass
class OutboxRow:
    id: int
    event_type: str
    payload: Any
    occurred_at: float
    available_at: float
    state: EventState = EventState.PENDING
    dispatches: int = 0
    last_error: str | None = None
    failures: int = 0
    applied: bool = False
    position: int | None = None

    def stored(self) -> StoredEvent:
        return StoredEvent(
            self.id,
            self.event_type,
            copy.deepcopy(self.payload),
            self.state,
            self.dispatches,
            self.last_error,
            self.failures,
            self.applied,
            self.position,
        )


@dataclass
class PartRow:
    id: int
    position: int
    applied_total: int
    baseline_position: int
    baseline_total: int
    bars: int = 0
    state: PartState = PartState.READY
    failures: int = 0
    available_at: float = 0.0
    last_error: str | None = None
    rebuilding: bool = False

    def part(self) -> Part:
        return Part(
            self.id,
            self.position,
            self.applied_total,
            self.bars,
            self.state,
            self.failures,
            self.last_error,
            self.rebuilding,
            self.baseline_position,
        )


@dataclass
class BarRow:
    bar: Bar
    part_id: int
    position: int
    baseline: dict[str, Any]  # the bar's fields as of baseline_position
    baseline_position: int


@dataclass
class InMemoryTables:
    foos: dict[int, Foo] = field(default_factory=dict)
    bars: dict[int, BarRow] = field(default_factory=dict)
    parts: dict[int, PartRow] = field(default_factory=dict)
    # The projection's row (SQL: bar_projection).
    head: int = 0
    head_total: int = 0
    applied_position: int = 0
    counted_position: int = 0
    events_applied: int = 0
    recalculation: str = EXAMPLE_RECALCULATION
    events: dict[int, OutboxRow] = field(default_factory=dict)
    # The monitoring counters, by OutboxHealth's field names, and the relay's last pass.
    counters: dict[str, int] = field(default_factory=dict)
    last_relay_pass_at: float | None = None
    checkpoint: Checkpoint = field(default_factory=Checkpoint)
    last_id: dict[str, int] = field(
        default_factory=lambda: {"foos": 0, "bars": 0, "events": 0, "parts": 0}
    )

    def next_id(self, table: str) -> int:
        self.last_id[table] += 1
        return self.last_id[table]


@dataclass
class InMemoryDatabase:
    data: InMemoryTables = field(default_factory=InMemoryTables)
    clock: Callable[[], float] = field(default_factory=ManualClock)
    # Raised, one per call, by the next reads of a part's bars: a pass's (or verify's).
    pass_errors: list[Exception] = field(default_factory=list)


class InMemoryOutboxTable:
    """The outbox rows of one transaction, shared by the in-memory adapters of its ports."""

    def __init__(self, data: InMemoryTables, clock: Callable[[], float]) -> None:
        self.data = data
        self.clock = clock

    def row(self, event_id: int) -> OutboxRow:
        row = self.data.events.get(event_id)
        if row is None:
            raise EventNotFoundError(event_id)
        return row

    def moving(self, transition: Transition, event_ids: Iterable[int]) -> list[OutboxRow]:
        """The rows that `transition` is to change, in id order, once every one of them allows
        it (by the domain's rule, as the SQL adapters' WHERE clauses); else its refusal."""
        wanted = sorted(set(event_ids))
        rows = {i: self.data.events.get(i) for i in wanted}
        refused = [
            i
            for i, row in rows.items()
            if row is None or not transition.allows(row.state, row.applied)
        ]
        if refused:
            raise transition.refused(refused)
        return [row for row in rows.values() if row is not None]

    def count(self, **increments: int) -> None:
        for name, by in increments.items():
            self.data.counters[name] = self.data.counters.get(name, 0) + by

    def in_id_order(self, keep: Callable[[OutboxRow], bool]) -> list[OutboxRow]:
        return sorted(self.rows(keep), key=lambda row: row.id)

    def rows(self, keep: Callable[[OutboxRow], bool] = lambda row: True) -> list[OutboxRow]:
        """The rows that `keep` wants, in the order of the due index."""
        rows = sorted(self.data.events.values(), key=lambda row: (row.available_at, row.id))
        return [row for row in rows if keep(row)]
