"""The write path: how a unit of work's foos and their events become statements, and how each
statement reaches the database.

- A changed foo with exactly one event, on PostgreSQL: one statement,
  `WITH saved AS (UPDATE foos ... version check) INSERT INTO outbox_events ... FROM saved`,
  so the event is written exactly when the foo is. SQLite has no UPDATE in a WITH.
- Any other changed foo: its UPDATE, which checks the version it was loaded at (a concurrent
  save moved it on: ConcurrentUpdateError). Any other events: one batch INSERT.
- Events keep the order they happened in; every payload is serialised here, by `serialised`.
- On PostgreSQL through psycopg 3 or psycopg2, a foo's load and save go straight through the
  driver (see driver_statements); on any other driver, and on SQLite, through
  `Connection.execute`.
- `alone` (a unit of work of its own, on the driver path): a load, or a commit that is one
  foo's save (`go_alone`), may go out before any transaction, in the driver's autocommit:
  atomic by itself, with no BEGIN and COMMIT round trips. A transaction begun on the
  connection, by the unit of work or by SQLAlchemy at the first statement through it, takes
  the driver out of autocommit first (`_leave_autocommit`), so that it is a real one.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from functools import partial
from typing import Any
from weakref import WeakSet

from sqlalchemy import Connection, Engine, bindparam, event, insert, select, update
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

from domain.errors import ConcurrentUpdateError
from domain.events import FooEvent
from domain.foo import Foo
from infrastructure.sql.driver_statements import DriverStatement
from infrastructure.sql.schema import Payload, foos, outbox_events

DRIVERS = {"psycopg", "psycopg2"}  # those that take `DriverStatement`'s SQL as it is compiled
_AUTOCOMMIT = "postsave_autocommit"  # in the driver connection's info: switched on by us
_WATCHED: WeakSet[Engine] = WeakSet()

Write = partial[None]


def serialised(event: FooEvent) -> str:
    """An event's payload as the JSON text stored, whichever path writes it."""
    return json.dumps(event.payload())


class _Serialised(TypeDecorator[Any]):
    """The payload column's type in SQL (`::JSONB` on PostgreSQL), bound as the text
    `serialised` made: not serialised a second time by the JSON type."""

    impl = Payload
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> None:
        return None


class WritePath:
    def __init__(self, connection: Connection, alone: bool) -> None:
        dialect = connection.dialect
        self.connection = connection
        self.combined = dialect.name == "postgresql"
        self.driver = self.combined and dialect.driver in DRIVERS
        self.alone = alone and self.driver
        if self.alone:
            _watch(connection.engine)

    def load_foo(self, foo_id: int) -> tuple[int, str, int] | None:
        """The foo's amount, state and version, if there is such a foo."""
        found = self._rows(_LOAD_FOO, {"id": foo_id})
        return (found[0][1], found[0][2], found[0][3]) if found else None

    def insert_foo(self, foo: Foo) -> int:
        """A new foo's id. Through the connection: in its transaction, begun if need be."""
        row = {"amount": foo.amount, "state": foo.state, "version": foo.version}
        return int(self.connection.execute(_INSERT_FOO, row).scalar_one())

    def writes(self, changed: Sequence[Foo], events: Sequence[FooEvent]) -> list[Write]:
        """The statements that save what changed, one callable each, in the order to send
        them: the foos saved alone first, then the events as they happened."""
        per_foo = Counter(event.foo_id for event in events)
        together = {foo.id: foo for foo in changed if self.combined and per_foo[foo.id or 0] == 1}
        writes: list[Write] = [
            partial(self._save, foo, None) for foo in changed if foo.id not in together
        ]
        waiting: list[FooEvent] = []
        for each in events:
            if each.foo_id in together:
                if waiting:
                    writes.append(partial(self._insert_events, waiting))
                    waiting = []
                writes.append(partial(self._save, together[each.foo_id], each))
            else:
                waiting.append(each)
        if waiting:
            writes.append(partial(self._insert_events, waiting))
        return writes

    def go_alone(self, writes: Sequence[Write]) -> bool:
        """Whether `writes` may go out before any transaction: nothing, or (for a unit of work
        of its own) one foo's save, with its event or not, through the driver."""
        if self.connection.in_transaction():
            return False
        return not writes or (self.alone and len(writes) == 1 and writes[0].func == self._save)

    def _save(self, foo: Foo, event: FooEvent | None) -> None:
        row = {
            "foo_id": foo.id,
            "new_amount": foo.amount,
            "new_state": foo.state.value,
            "loaded": foo.version,
        }
        if event is None:
            saved = self._rows(_SAVE_FOO, row)
        else:
            row |= {"event_type": event.type_name, "payload": serialised(event)}
            saved = self._rows(_SAVE_FOO_WITH_EVENT, row)
        if not saved:
            raise ConcurrentUpdateError()
        foo.version += 1

    def _insert_events(self, events: list[FooEvent]) -> None:
        rows = [{"event_type": e.type_name, "payload": serialised(e)} for e in events]
        self.connection.execute(_INSERT_EVENTS, rows)

    def _rows(self, statement: DriverStatement, params: dict[str, Any]) -> Sequence[Any]:
        if not self.driver:
            return self.connection.execute(statement.statement, params).all()
        if self.alone and not self.connection.in_transaction():
            _enter_autocommit(self.connection)
        return statement.rows(self.connection, params)

    def restore_driver(self) -> None:
        """Out of autocommit, as the pool lent it; only if in it, since the switch refuses
        while a transaction is open, and must not hide why one was left open."""
        if self.alone and not self.connection.invalidated:
            _leave_autocommit(self.connection)


def _enter_autocommit(connection: Connection) -> None:
    # The driver's own switch, not SQLAlchemy's isolation level: it costs nothing per call.
    pooled = connection.connection
    if not pooled.info.get(_AUTOCOMMIT):  # its setter takes a lock: not for every statement
        pooled.driver_connection.autocommit = True  # type: ignore[union-attr]
        pooled.info[_AUTOCOMMIT] = True


def _leave_autocommit(connection: Connection) -> None:
    pooled = connection.connection
    if pooled.info.pop(_AUTOCOMMIT, False):
        pooled.driver_connection.autocommit = False  # type: ignore[union-attr]


def _watch(engine: Engine) -> None:
    """Before any transaction begins on the engine's connections: out of our autocommit.
    Only where we switched it on: an application's own AUTOCOMMIT connections keep theirs."""
    if engine not in _WATCHED:
        event.listen(engine, "begin", _leave_autocommit)
        _WATCHED.add(engine)


# Built once: SQLAlchemy caches each statement's compiled form under the same object.
_INSERT_FOO = insert(foos).returning(foos.c.id)
_INSERT_EVENTS = insert(outbox_events).values(
    event_type=bindparam("event_type"), payload=bindparam("payload", type_=_Serialised())
)
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
            bindparam("payload", type_=_Serialised()),
        ).select_from(_SAVED),
    )
    .returning(outbox_events.c.id)
)
