"""SQLAlchemy Core repositories for foos and bars. They never commit; the unit of work does."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import ColumnElement, Connection, bindparam, cast, func, insert, select, update

from domain.bar import Bar
from domain.errors import ConcurrentUpdateError
from domain.events import FooEvent
from domain.foo import Foo, FooState
from domain.ports import BarRepository, FooRepository
from infrastructure.sql.driver_statements import DriverStatement
from infrastructure.sql.schema import BigSum, bar_projection, bars, foos, outbox_events


def _weighted(n: int) -> ColumnElement[int]:
    """`n * weight` in the value's type: on PostgreSQL a NUMERIC product, where a BIGINT one
    would overflow for a large total (SQLite's guard is the value's CHECK)."""
    return cast(bars.c.weight, BigSum()) * n


class SqlFooRepository(FooRepository):
    """Foos in Core: a load is one SELECT, and a save is one UPDATE that checks the version the
    foo was loaded at (a concurrent save moved it on: ConcurrentUpdateError), on PostgreSQL in
    the same statement as the foo's event."""

    def __init__(
        self,
        connection: Connection,
        before_read: Callable[[], None] | None = None,
        before_write: Callable[[], None] | None = None,
    ) -> None:
        """`before_read` and `before_write` run before each statement that reads foos or
        writes a new one: where a unit of work begins its transaction when it needs one."""
        super().__init__()
        self.connection = connection
        self.before_read = before_read or _nothing
        self.before_write = before_write or _nothing
        self.postgresql = connection.dialect.name == "postgresql"
        self.loaded: dict[int, tuple[Foo, int, FooState]] = {}  # id: (foo, amount, state)

    def _add(self, foo: Foo) -> None:
        self.before_write()
        foo.version = 1
        foo.id = self.connection.execute(
            _INSERT_FOO, {"amount": foo.amount, "state": foo.state, "version": foo.version}
        ).scalar_one()  # the id now: events name their foo
        self.loaded[foo.id] = (foo, foo.amount, foo.state)

    def _get(self, foo_id: int) -> Foo | None:
        if foo_id in self.loaded:
            return self.loaded[foo_id][0]  # one object per foo in a unit of work
        self.before_read()
        found = self._rows(_LOAD_FOO, {"id": foo_id})
        if not found:
            return None
        (_, amount, state, version), *_ = found
        foo = Foo(amount, state)
        foo.id, foo.version = foo_id, version
        self.loaded[foo_id] = (foo, foo.amount, foo.state)
        return foo

    def changed(self) -> list[Foo]:
        """The foos changed since they were loaded or last saved."""
        return [
            foo
            for foo, amount, state in self.loaded.values()
            if (foo.amount, foo.state) != (amount, state)
        ]

    def save(self, foo: Foo, event: FooEvent | None = None) -> None:
        """Write the foo, if the version it was loaded at is still the database's (else
        ConcurrentUpdateError); on PostgreSQL `event` is inserted by the same statement."""
        if event is None:
            saved = self._rows(_SAVE_FOO, _changes(foo))
        else:
            assert self.postgresql, "one statement for a foo and its event is PostgreSQL's"
            payload = json.dumps(event.payload())  # the JSON type's own serialiser
            row = {"event_type": event.type_name, "payload": payload, **_changes(foo)}
            saved = self._rows(_SAVE_FOO_WITH_EVENT, row)
        if not saved:
            raise ConcurrentUpdateError()
        assert foo.id is not None
        foo.version += 1
        self.loaded[foo.id] = (foo, foo.amount, foo.state)

    def _rows(self, statement: DriverStatement, params: dict[str, Any]) -> Sequence[Any]:
        # Every save's statements: on PostgreSQL through the driver (see driver_statements).
        if self.postgresql:
            return statement.rows(self.connection, params)
        return self.connection.execute(statement.statement, params).all()

    def forget(self) -> None:
        """After a rollback: what was loaded is no longer what the database holds."""
        self.loaded.clear()

    def completed_total(self) -> int:
        self.before_read()
        query = select(func.coalesce(func.sum(foos.c.amount), 0)).where(
            foos.c.state == FooState.COMPLETED
        )
        return int(self.connection.execute(query).scalar_one())


def _nothing() -> None:
    pass


def _changes(foo: Foo) -> dict[str, Any]:
    return {
        "foo_id": foo.id,
        "new_amount": foo.amount,
        "new_state": foo.state.value,
        "loaded": foo.version,
    }


# Built once: SQLAlchemy caches each statement's compiled form under the same object.
_INSERT_FOO = insert(foos).returning(foos.c.id)
_LOAD_FOO = DriverStatement(
    select(foos.c.id, foos.c.amount, foos.c.state, foos.c.version).where(
        foos.c.id == bindparam("id")
    )
)
_UPDATE_FOO = (
    update(foos)
    .where(foos.c.id == bindparam("foo_id"), foos.c.version == bindparam("loaded"))
    .values(
        amount=bindparam("new_amount"),
        state=bindparam("new_state"),
        version=foos.c.version + 1,
    )
    .returning(foos.c.id)
)
_SAVE_FOO = DriverStatement(_UPDATE_FOO)
_SAVED = _UPDATE_FOO.cte("saved")
_SAVE_FOO_WITH_EVENT = DriverStatement(
    insert(outbox_events)
    .from_select(
        ["event_type", "payload"],
        select(
            bindparam("event_type", type_=outbox_events.c.event_type.type),
            bindparam("payload", type_=outbox_events.c.payload.type),
        ).select_from(_SAVED),
    )
    .returning(outbox_events.c.id)
)


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
