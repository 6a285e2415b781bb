"""Foos and bars in memory."""

from __future__ import annotations

from domain.bar import Bar
from domain.foo import Foo, FooState
from domain.ports import (
    BarRepository,
    FooRepository,
)
from infrastructure.memory.tables import InMemoryTables


class InMemoryFooRepository(FooRepository):
    def __init__(self, data: InMemoryTables) -> None:
        super().__init__()
        self.data = data

    def _add(self, foo: Foo) -> None:
        foo.id = self.data.next_id("foos")
        foo.version = 1
        self.data.foos[foo.id] = foo

    def _get(self, foo_id: int) -> Foo | None:
        return self.data.foos.get(foo_id)

    def completed_total(self) -> int:
        return sum(f.amount for f in self.data.foos.values() if f.state is FooState.COMPLETED)


class InMemoryBarRepository(BarRepository):
    def __init__(self, data: InMemoryTables, errors: list[Exception]) -> None:
        self.data = data
        self.errors = errors

    def add(self, bar: Bar) -> None:
        bar.id = self.data.next_id("bars")
        self.data.bars[bar.id] = bar

    def lock_applied_total(self) -> int:
        return self.data.applied_total

    def apply_delta(self, delta: int, events: int = 1) -> int:
        if self.errors:
            raise self.errors.pop(0)
        self.data.applied_total += delta
        self.data.events_applied += events
        if delta == 0:
            return 0
        for bar in self.data.bars.values():
            bar.value += delta * bar.weight
        return len(self.data.bars)

    def reset_all(self, total: int, events: int) -> int:
        self.data.applied_total, self.data.events_applied = total, events
        for bar in self.data.bars.values():
            bar.value = total * bar.weight
        return len(self.data.bars)

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        bars = sorted(self.data.bars.values(), key=lambda bar: bar.id or 0)
        return [bar for bar in bars if bar.value != total * bar.weight][:limit]

    def count(self) -> int:
        return len(self.data.bars)
