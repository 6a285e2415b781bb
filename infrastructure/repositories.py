"""SQLAlchemy repositories for foos and bars. They never commit; the unit of work does."""

from __future__ import annotations

from sqlalchemy import ColumnElement, cast, func, select, update
from sqlalchemy.orm import Session

from domain.bar import Bar
from domain.foo import Foo, FooState
from domain.ports import BarRepository, FooRepository
from infrastructure.schema import BigSum, bar_projection, bars, foos


def _weighted(n: int) -> ColumnElement[int]:
    """`n * weight` in the value's type: on PostgreSQL a NUMERIC product, where a BIGINT one
    would overflow for a large total (SQLite's guard is the value's CHECK)."""
    return cast(bars.c.weight, BigSum()) * n


class SqlFooRepository(FooRepository):
    def __init__(self, session: Session) -> None:
        super().__init__()
        self.session = session

    def _add(self, foo: Foo) -> None:
        self.session.add(foo)
        self.session.flush()  # assign the id now: events name their foo

    def _get(self, foo_id: int) -> Foo | None:
        return self.session.get(Foo, foo_id)

    def completed_total(self) -> int:
        query = select(func.coalesce(func.sum(foos.c.amount), 0)).where(
            foos.c.state == FooState.COMPLETED
        )
        return int(self.session.execute(query).scalar_one())


class SqlBarRepository(BarRepository):
    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, bar: Bar) -> None:
        self.session.add(bar)
        self.session.flush()

    def _get(self, bar_id: int) -> Bar | None:
        return self.session.get(Bar, bar_id)

    def lock_applied_total(self) -> int:
        # An UPDATE, not SELECT ... FOR UPDATE: SQLite has no row locks, and on PostgreSQL a
        # no-op update takes the same row lock and also waits for a concurrent applier.
        query = (
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(applied_total=bar_projection.c.applied_total)
            .returning(bar_projection.c.applied_total)
        )
        return int(self.session.execute(query).scalar_one())

    def apply_delta(self, delta: int, events: int = 1) -> int:
        # Lock the projection row first: bar creation takes the same lock, and this UPDATE's
        # snapshot, taken after the lock is granted, sees every bar committed before it.
        self.session.execute(
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(
                applied_total=bar_projection.c.applied_total + delta,
                events_applied=bar_projection.c.events_applied + events,
            )
        )
        if delta == 0:
            return 0
        result = self.session.execute(update(bars).values(value=bars.c.value + _weighted(delta)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def reset_all(self, total: int, events: int) -> int:
        self.session.execute(
            update(bar_projection)
            .where(bar_projection.c.id == 1)
            .values(applied_total=total, events_applied=events)
        )
        result = self.session.execute(update(bars).values(value=_weighted(total)))
        return int(result.rowcount)  # type: ignore[attr-defined]

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        query = select(Bar).where(bars.c.value != _weighted(total)).order_by(bars.c.id)
        return list(self.session.scalars(query.limit(limit)))

    def count(self) -> int:
        return int(self.session.execute(select(func.count()).select_from(bars)).scalar_one())
