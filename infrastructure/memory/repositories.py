"""Foos and bars in memory."""

from __future__ import annotations

import copy
from collections.abc import Sequence

from domain.bar import Bar
from domain.foo import Foo, FooState
from domain.parts import BarAt, Part
from domain.ports import (
    BarRepository,
    FooRepository,
)
from domain.recalculation import bar_state
from infrastructure.memory.tables import BarRow, InMemoryTables


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
    """Bars as the SQL adapter keeps them: their fields (the Bar's attributes but its id), the
    part and position they are at, and their baselines."""

    def __init__(self, data: InMemoryTables, pass_errors: list[Exception]) -> None:
        self.data = data
        self.pass_errors = pass_errors

    def add(self, bar: Bar, part: Part) -> None:
        bar.id = self.data.next_id("bars")
        self.data.bars[bar.id] = BarRow(
            copy.deepcopy(bar), part.id, part.position, bar_state(bar), part.position
        )

    def _part_rows(self, part_id: int) -> list[BarRow]:
        return [row for _, row in sorted(self.data.bars.items()) if row.part_id == part_id]

    def of_part(self, part_id: int) -> list[BarAt]:
        if self.pass_errors:
            raise self.pass_errors.pop(0)
        return [BarAt(copy.deepcopy(row.bar), row.position) for row in self._part_rows(part_id)]

    def baselines_of_part(self, part_id: int) -> list[BarAt]:
        if self.pass_errors:
            raise self.pass_errors.pop(0)
        found = []
        for row in self._part_rows(part_id):
            bar = Bar(**copy.deepcopy(row.baseline))
            bar.id = row.bar.id
            found.append(BarAt(bar, row.baseline_position))
        return found

    def save(self, bars: Sequence[BarAt]) -> int:
        written = 0
        for each in bars:
            row = self.data.bars[each.bar.id]
            if bar_state(row.bar) == bar_state(each.bar) and row.position == each.position:
                continue
            row.bar, row.position = copy.deepcopy(each.bar), each.position
            written += 1
        return written

    def take_baselines(self, part: Part) -> int:
        rows = self._part_rows(part.id)
        for row in rows:
            row.baseline, row.baseline_position = bar_state(row.bar), row.position
        return len(rows)

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        bars = [row.bar for _, row in sorted(self.data.bars.items())]
        return [copy.deepcopy(bar) for bar in bars if bar.value != total * bar.weight][:limit]

    def count(self) -> int:
        return len(self.data.bars)
