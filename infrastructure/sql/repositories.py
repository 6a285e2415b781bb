"""SQLAlchemy Core repositories for foos and bars. They never commit; the unit of work does.
A foo's statements are the write path's (write_path)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Connection, cast, func, insert, select, update

from domain.bar import Bar
from domain.foo import Foo, FooState
from domain.ports import BarRepository, FooRepository
from infrastructure.sql.schema import BigSum, bar_projection, bars, foos
from infrastructure.sql.write_path import WritePath


def _weighted(n: int) -> ColumnElement[int]:
    """`n * weight` in the value's type: on PostgreSQL a NUMERIC product, where a BIGINT one
    would overflow for a large total (SQLite's guard is the value's CHECK)."""
    return cast(bars.c.weight, BigSum()) * n


class SqlFooRepository(FooRepository):
    """Foos as the write path loads them, each tracked as loaded or last saved: a unit of
    work's commit saves those that changed since (`changed`), then calls `saved`."""

    def __init__(self, write_path: WritePath) -> None:
        super().__init__()
        self.write_path = write_path
        self.loaded: dict[int, tuple[Foo, int, FooState]] = {}  # id: (foo, amount, state)

    def _add(self, foo: Foo) -> None:
        foo.version = 1
        foo.id = self.write_path.insert_foo(foo)  # the id now: events name their foo
        self._track(foo)

    def _get(self, foo_id: int) -> Foo | None:
        if foo_id in self.loaded:
            return self.loaded[foo_id][0]  # one object per foo in a unit of work
        found = self.write_path.load_foo(foo_id)
        if found is None:
            return None
        amount, state, version = found
        foo = Foo(amount, FooState(state))
        foo.id, foo.version = foo_id, version
        self._track(foo)
        return foo

    def changed(self) -> list[Foo]:
        """The foos changed since they were loaded or last saved."""
        return [
            foo
            for foo, amount, state in self.loaded.values()
            if (foo.amount, foo.state) != (amount, state)
        ]

    def saved(self, saved: list[Foo]) -> None:
        """After a commit: what they hold now is what the database holds."""
        for foo in saved:
            self._track(foo)

    def forget(self) -> None:
        """After a rollback: what was loaded is no longer what the database holds."""
        self.loaded.clear()

    def _track(self, foo: Foo) -> None:
        assert foo.id is not None
        self.loaded[foo.id] = (foo, foo.amount, foo.state)

    def completed_total(self) -> int:
        query = select(func.coalesce(func.sum(foos.c.amount), 0)).where(
            foos.c.state == FooState.COMPLETED
        )
        return int(self.write_path.connection.execute(query).scalar_one())


class SqlBarRepository(BarRepository):
    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    def add(self, bar: Bar) -> None:
        bar.id = self.connection.execute(
            _INSERT_BAR, {"weight": bar.weight, "value": bar.value}
        ).scalar_one()

    def lock_applied_total(self) -> int:
        # An UPDATE, not SELECT ... FOR UPDATE: SQLite has no row locks, and on PostgreSQL a
        # no-op update takes the same row lock and also waits for a concurrent applier.
        query = (
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(applied_total=bar_projection.c.applied_total)
            .returning(bar_projection.c.applied_total)
        )
        return int(self.connection.execute(query).scalar_one())

    def apply_delta(self, delta: int, events: int = 1) -> int:
        # Lock the projection row first: bar creation takes the same lock, and this UPDATE's
        # snapshot, taken after the lock is granted, sees every bar committed before it.
        self.connection.execute(
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(
                applied_total=bar_projection.c.applied_total + delta,
                events_applied=bar_projection.c.events_applied + events,
            )
        )
        if delta == 0:
            return 0
        result = self.connection.execute(update(bars).values(value=bars.c.value + _weighted(delta)))
        return int(result.rowcount)

    def reset_all(self, total: int, events: int) -> int:
        self.connection.execute(
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(applied_total=total, events_applied=events)
        )
        result = self.connection.execute(update(bars).values(value=_weighted(total)))
        return int(result.rowcount)

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        query = _SELECT_BARS.where(bars.c.value != _weighted(total)).order_by(bars.c.id)
        return [_bar(row) for row in self.connection.execute(query.limit(limit))]

    def count(self) -> int:
        return int(self.connection.execute(select(func.count()).select_from(bars)).scalar_one())


_INSERT_BAR = insert(bars).returning(bars.c.id)
_SELECT_BARS = select(bars.c.id, bars.c.weight, bars.c.value)


def _bar(row: Any) -> Bar:
    bar = Bar(row.weight, row.value)
    bar.id = row.id
    return bar
