"""The SQL unit of work: one connection, one transaction, foos and their events written at
commit, in SQLAlchemy Core (an application's save pays for no ORM unit of work).

It runs in a transaction of its own, or inside the application's: handed the application's
`Connection` or `Session`, it works in a savepoint there, so the application's rows, the foo
and its outbox event commit or roll back together. It then never commits nor closes what it
does not own; the relay is nudged when the application's transaction commits.

On PostgreSQL, a unit of work of its own begins its transaction only when it needs one, since
BEGIN and COMMIT are a round trip each. It reads foos outside of one: a foo's save checks the
version it was read at, so a foo changed since is never overwritten (ConcurrentUpdateError),
whether or not a transaction held the read. A commit that writes one statement (a foo and its
event, or a foo alone) sends it alone, atomic by itself: completing a foo costs two round
trips. Anything more, a new foo, or any other adapter (they lock and write as they go) runs in
a transaction, begun before its first statement."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from functools import partial
from types import TracebackType
from typing import Any, Generic, Self, TypeVar, overload

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import Transaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from domain.errors import ConcurrentUpdateError
from domain.events import FooEvent
from domain.ports import UnitOfWork
from infrastructure.sql.outbox.delivery_ledger import SqlDeliveryLedger
from infrastructure.sql.outbox.monitor import SqlOutboxMonitor
from infrastructure.sql.outbox.projection_log import SqlProjectionLog
from infrastructure.sql.outbox.relay_queue import SqlRelayQueue
from infrastructure.sql.outbox.retention import SqlRetention
from infrastructure.sql.outbox.writer import SqlOutbox
from infrastructure.sql.repositories import SqlBarRepository, SqlFooRepository

# PostgreSQL's serialization_failure and deadlock_detected: the transaction lost a race.
_RACE_SQLSTATES = {"40001", "40P01"}

A = TypeVar("A")


class _InTransaction(Generic[A]):
    """An adapter that locks or writes as it goes: built on first use in a unit of work, which
    begins its transaction then. The built adapter is the instance's attribute from then on
    (until the transaction ends), so later uses cost a plain attribute read."""

    def __init__(self, adapter: Callable[[Connection], A]) -> None:
        self.adapter = adapter

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, uow: None, owner: type) -> Self: ...
    @overload
    def __get__(self, uow: SqlUnitOfWork, owner: type) -> A: ...
    def __get__(self, uow: SqlUnitOfWork | None, owner: type) -> Self | A:
        if uow is None:
            return self
        uow.transaction.inside()
        adapter: A = self.adapter(uow.connection)
        uow.__dict__[self.name] = adapter
        return adapter


class SqlUnitOfWork(UnitOfWork):
    connection: Connection
    transaction: _Transaction
    foos: SqlFooRepository
    outbox: SqlOutbox
    outer: Connection | Session | None = None  # the application's, when joining its transaction
    bars = _InTransaction(SqlBarRepository)
    relay_queue = _InTransaction(SqlRelayQueue)
    deliveries = _InTransaction(SqlDeliveryLedger)
    monitor = _InTransaction(SqlOutboxMonitor)
    projection_log = _InTransaction(SqlProjectionLog)
    retention = _InTransaction(SqlRetention)

    def __init__(
        self,
        engine: Engine | None,
        after_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.engine = engine
        self.after_events_committed = after_events_committed

    @classmethod
    def joining(
        cls,
        outer: Connection | Session,
        after_events_committed: Callable[[], None] | None = None,
    ) -> SqlUnitOfWork:
        """A unit of work inside the application's own transaction, as a savepoint of it."""
        uow = cls(None, after_events_committed)
        uow.outer = outer
        return uow

    def __enter__(self) -> Self:
        if self.outer is None:
            assert self.engine is not None
            self.connection = self.engine.connect()
        else:
            # A session hands out its connection inside its own transaction, begun if need be;
            # a bare connection may have none yet: begun here, still the application's to end.
            outer = self.outer
            self.connection = outer.connection() if isinstance(outer, Session) else outer
            if not self.connection.in_transaction():
                self.connection.begin()
        # Begun when needed: a unit of work of its own on PostgreSQL (see the module's doc).
        deferred = self.outer is None and self.connection.dialect.name == "postgresql"
        self.transaction = _Transaction(self.connection, self.outer is not None, deferred)
        self._forget_adapters()
        # The repository gets the transaction's methods, not the unit of work's: no reference
        # cycle, so all of it is freed as the call returns (a cycle waits for the collector).
        self.foos = SqlFooRepository(
            self.connection,
            before_read=self.transaction.outside if deferred else None,
            before_write=self.transaction.inside if deferred else None,
        )
        self.outbox = SqlOutbox(self.connection)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.transaction.rollback()  # if not committed
        finally:
            if self.outer is None:
                self.transaction.restore_driver()
                self.connection.close()

    def commit(self) -> None:
        try:
            super().commit()
        except ConcurrentUpdateError:
            self.rollback()
            raise
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) in _RACE_SQLSTATES:
                self.rollback()
                raise ConcurrentUpdateError() from error
            raise

    def _commit(self) -> None:
        writes, transaction = self._writes(), self.transaction
        if transaction.pending and len(writes) <= 1:
            if writes:
                transaction.outside()  # as the foo was read
                writes[0]()  # one statement: atomic alone, committed by itself
            return
        transaction.inside()
        for write in writes:
            write()
        transaction.commit()
        self._forget_adapters()

    def _writes(self) -> list[Callable[[], Any]]:
        """The statements that save what changed, one callable each. A changed foo with one
        event: on PostgreSQL one statement saves both. The events keep the order they
        happened in."""
        events, changed = self.outbox.take(), self.foos.changed()
        per_foo = Counter(event.foo_id for event in events)
        one_statement = self.foos.postgresql
        together = {foo.id: foo for foo in changed if one_statement and per_foo[foo.id or 0] == 1}
        save, write = self.foos.save, self.outbox.write
        writes: list[Callable[[], Any]] = [
            partial(save, foo) for foo in changed if foo.id not in together
        ]
        waiting: list[FooEvent] = []
        for each in events:
            if each.foo_id in together:
                if waiting:
                    writes.append(partial(write, waiting))
                    waiting = []
                writes.append(partial(save, together[each.foo_id], each))
            else:
                waiting.append(each)
        if waiting:
            writes.append(partial(write, waiting))
        return writes

    def events_committed(self) -> None:
        nudge = self.after_events_committed
        if nudge is None:
            return
        if self.outer is None:
            nudge()
        elif isinstance(self.outer, Session):
            event.listen(self.outer, "after_commit", lambda _session: nudge(), once=True)
        else:
            event.listen(self.outer, "commit", lambda _connection: nudge(), once=True)

    def rollback(self) -> None:
        """Undo what was done so far; the unit of work goes on in a new transaction."""
        self.transaction.rollback()
        self.foos.forget()
        self.outbox.take()
        self._forget_adapters()
        if not self.transaction.deferred:
            self.transaction.begin()

    def _forget_adapters(self) -> None:
        for name in ("bars", "relay_queue", "deliveries", "monitor", "projection_log", "retention"):
            self.__dict__.pop(name, None)


class _Transaction:
    """A unit of work's transaction on its connection: a root one of its own or a savepoint of
    the application's, begun at once or, deferred, only once something needs it."""

    def __init__(self, connection: Connection, joined: bool, deferred: bool) -> None:
        self.connection, self.joined, self.deferred = connection, joined, deferred
        self.current: Transaction | None = None
        if not deferred:
            self.begin()

    @property
    def pending(self) -> bool:
        """Deferred and nothing begun yet: a statement goes out alone, committed by itself."""
        return self.deferred and self.current is None

    def begin(self) -> None:
        # Nothing is sent for a transaction of its own until its first statement.
        if self.joined:
            self.current = self.connection.begin_nested()
        else:
            self.current = self.connection.begin()

    def inside(self) -> None:
        """Make sure what comes next runs in the transaction."""
        if self.current is not None:
            return
        if self.deferred:
            driver = self._driver()
            if driver.autocommit:
                self.connection.commit()  # SQLAlchemy's bookkeeping of the reads; sends nothing
                driver.autocommit = False
        self.begin()

    def outside(self) -> None:
        # Before any transaction, a statement is sent alone: none is begun around it. The
        # driver's own switch, not SQLAlchemy's isolation level: it costs nothing per call, and
        # `restore_driver` switches it back before the pool gets the connection.
        if self.pending:
            driver = self._driver()
            if not driver.autocommit:  # its setter takes a lock: not for every statement
                driver.autocommit = True

    def commit(self) -> None:
        assert self.current is not None
        current, self.current = self.current, None
        current.commit()

    def rollback(self) -> None:
        current, self.current = self.current, None
        if current is not None and current.is_active:
            current.rollback()

    def restore_driver(self) -> None:
        """Out of autocommit, as the pool lent it (only if in it: the switch refuses while a
        transaction is open, and must not hide why it was left open)."""
        if self.deferred and not self.connection.invalidated:
            driver = self._driver()
            if driver.autocommit:
                driver.autocommit = False

    def _driver(self) -> Any:
        return self.connection.connection.driver_connection
