"""SQLAlchemy Core repositories for foos and bars. They never commit; the unit of work does.
A foo's statements are the write path's (write_path)."""

from __future__ import annotations

from collections.abc import Sequence
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    bindparam,
    cast,
    func,
    insert,
    literal_column,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from domain.bar import Bar
from domain.foo import Foo, FooState
from domain.parts import BarAt, Part
from domain.ports import BarRepository, FooRepository
from infrastructure.sql.column_types import BigSum
from infrastructure.sql.schema import BAR_FIELDS, bar_baselines, bars, foos
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
    """Bars as the team's Bar: its fields are the bars table's own columns (BAR_FIELDS)."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection
        self.dialect = connection.dialect.name
        self.loaded: dict[int, tuple[dict[str, Any], int]] = {}  # id: (fields, position)

    def add(self, bar: Bar, part: Part) -> None:
        fields = _fields(bar)
        bar.id = self.connection.execute(
            _INSERT_BAR, {"part_id": part.id, "position": part.position, **fields}
        ).scalar_one()
        self.connection.execute(
            insert(bar_baselines),
            {"bar_id": bar.id, "position": part.position, "state": _json_ready(fields)},
        )

    def of_part(self, part_id: int) -> list[BarAt]:
        rows = self.connection.execute(_SELECT_PART, {"part_id": part_id})
        found = []
        for row in rows:
            fields = {column.name: row._mapping[column.name] for column in BAR_FIELDS}
            self.loaded[row.id] = (fields, row.position)
            found.append(BarAt(_bar(row.id, fields), row.position))
        return found

    def baselines_of_part(self, part_id: int) -> list[BarAt]:
        query = (
            select(bar_baselines.c.bar_id, bar_baselines.c.position, bar_baselines.c.state)
            .join(bars, bars.c.id == bar_baselines.c.bar_id)
            .where(bars.c.part_id == part_id)
            .order_by(bar_baselines.c.bar_id)
        )
        found = []
        for row in self.connection.execute(query):
            self.loaded.pop(row.bar_id, None)  # written back whatever it holds
            found.append(BarAt(_bar(row.bar_id, dict(row.state)), row.position))
        return found

    def save(self, bars_at: Sequence[BarAt]) -> int:
        rows = []
        for each in bars_at:
            fields = _fields(each.bar)
            if self.loaded.get(each.bar.id) == (fields, each.position):
                continue
            rows.append({"bar_id": each.bar.id, "position": each.position, **fields})
            self.loaded[each.bar.id] = (fields, each.position)
        if rows and self.dialect == "postgresql":
            self._update_from_arrays(rows)
        elif rows:
            self.connection.execute(_UPDATE_BAR, rows)
        return len(rows)

    def _update_from_arrays(self, rows: list[dict[str, Any]]) -> None:
        """One statement for the whole part, each column sent as one array: SQLAlchemy's
        executemany spent more on binding each row's values than PostgreSQL on the update."""
        names = ["bar_id", "position", *(column.name for column in BAR_FIELDS)]
        arrays = tuple([row[name] for row in rows] for name in names)
        self.connection.exec_driver_sql(_update_from_arrays_sql(self.connection), arrays)

    def take_baselines(self, part: Part) -> int:
        build = func.jsonb_build_object if self.dialect == "postgresql" else func.json_object
        pairs: list[Any] = []
        for column in BAR_FIELDS:
            pairs += [literal_column(f"'{column.name}'"), column]
        state = build(*pairs)
        rows = select(bars.c.id, bars.c.position, state).where(bars.c.part_id == part.id)
        upsert = (pg_insert if self.dialect == "postgresql" else sqlite_insert)(bar_baselines)
        statement = upsert.from_select(["bar_id", "position", "state"], rows).execution_options(
            preserve_rowcount=True
        )
        statement = statement.on_conflict_do_update(
            index_elements=[bar_baselines.c.bar_id],
            set_={"position": statement.excluded.position, "state": statement.excluded.state},
        )
        return int(self.connection.execute(statement).rowcount)

    def mismatched(self, total: int, limit: int) -> list[Bar]:
        query = _SELECT_BARS.where(bars.c.value != _weighted(total)).order_by(bars.c.id)
        return [
            _bar(row.id, {c.name: row._mapping[c.name] for c in BAR_FIELDS})
            for row in self.connection.execute(query.limit(limit))
        ]

    def count(self) -> int:
        return int(self.connection.execute(select(func.count()).select_from(bars)).scalar_one())


_INSERT_BAR = insert(bars).returning(bars.c.id)
_SELECT_BARS = select(bars.c.id, bars.c.position, *BAR_FIELDS)
_SELECT_PART = _SELECT_BARS.where(bars.c.part_id == bindparam("part_id")).order_by(bars.c.id)
_UPDATE_BAR = (
    update(bars)
    .where(bars.c.id == bindparam("bar_id"))
    .values(
        position=bindparam("position"),
        **{c.name: bindparam(c.name, type_=c.type) for c in BAR_FIELDS},
    )
)


_ARRAY_UPDATES: dict[str, str] = {}


def _update_from_arrays_sql(connection: Connection) -> str:
    """`UPDATE bars ... FROM unnest(...)`, each array cast to its column's type."""
    dialect = connection.dialect
    sql = _ARRAY_UPDATES.get(dialect.name)
    if sql is None:
        columns = [(column.name, column.type.compile(dialect=dialect)) for column in BAR_FIELDS]
        casts = ", ".join(["%s::bigint[]", "%s::bigint[]", *(f"%s::{t}[]" for _, t in columns)])
        sets = ", ".join(["position = u.position", *(f"{n} = u.{n}" for n, _ in columns)])
        names = ", ".join(["bar_id", "position", *(n for n, _ in columns)])
        sql = _ARRAY_UPDATES[dialect.name] = (
            f"UPDATE bars SET {sets} FROM unnest({casts}) AS u({names}) WHERE bars.id = u.bar_id"
        )
    return sql


def _fields(bar: Bar) -> dict[str, Any]:
    return {column.name: getattr(bar, column.name) for column in BAR_FIELDS}


def _json_ready(fields: dict[str, Any]) -> dict[str, Any]:
    """A bar's fields as a baseline stores them (JSON: a Decimal from NUMERIC as an int)."""
    return {
        name: int(value) if isinstance(value, Decimal) else value for name, value in fields.items()
    }


def _bar(bar_id: int, fields: dict[str, Any]) -> Bar:
    bar = Bar(**fields)
    bar.id = bar_id
    return bar
