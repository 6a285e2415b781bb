"""The SQL unit of work: one connection, one transaction policy, in SQLAlchemy Core.

Of its own, it checks out a connection and begins nothing: SQLAlchemy begins the transaction
at the first statement sent through the connection, by any adapter; commit ends it, and what
follows begins the next. Reading an adapter, `uow.bars` say, sends nothing.

Handed the application's `Connection` or `Session`, it works in a savepoint of the
application's transaction, begun at once and again after a rollback: the application's rows,
the foo and its outbox event commit or roll back together. Its commit releases the savepoint
(what follows is the application's alone); it never commits nor closes what it does not own,
and the relay is nudged when the application's transaction commits.

Commit hands the foos that changed and their events to the write path (write_path), which
owns their statements, and runs them in the transaction, begun first if none is. The one
exception, for speed: on PostgreSQL a unit of work of its own reads foos, and sends a commit
that is one statement, before any transaction, atomic by itself; a foo's save checks the
version it was read at, so completing a foo costs two round trips and no BEGIN or COMMIT."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import NestedTransaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from domain.errors import ConcurrentUpdateError
from domain.ports import UnitOfWork
from infrastructure.sql.outbox.delivery_ledger import SqlDeliveryLedger
from infrastructure.sql.outbox.monitor import SqlOutboxMonitor
from infrastructure.sql.outbox.projection_log import SqlProjectionLog
from infrastructure.sql.outbox.relay_queue import SqlRelayQueue
from infrastructure.sql.outbox.retention import SqlRetention
from infrastructure.sql.outbox.writer import SqlOutbox
from infrastructure.sql.parts import SqlPartLedger
from infrastructure.sql.repositories import SqlBarRepository, SqlFooRepository
from infrastructure.sql.write_path import WritePath

# PostgreSQL's serialization_failure and deadlock_detected: the transaction lost a race.
_RACE_SQLSTATES = {"40001", "40P01"}


class SqlUnitOfWork(UnitOfWork):
    connection: Connection
    write_path: WritePath
    foos: SqlFooRepository  # the two ports whose contents the commit writes
    bars: SqlBarRepository
    outbox: SqlOutbox
    outer: Connection | Session | None = None  # the application's, when joining its transaction
    savepoint: NestedTransaction | None = None  # in the application's transaction

    def __init__(
        self, engine: Engine | None, after_events_committed: Callable[[], None] | None = None
    ) -> None:
        self.engine = engine
        self.after_events_committed = after_events_committed

    @classmethod
    def joining(
        cls, outer: Connection | Session, after_events_committed: Callable[[], None] | None = None
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
            self._begin()
        self.write_path = WritePath(self.connection, alone=self.outer is None)
        self._adapters(self.connection)
        return super().__enter__()

    def _adapters(self, connection: Connection) -> None:
        """Each port's adapter, on the unit of work's connection: where ports are wired."""
        self.foos = SqlFooRepository(self.write_path)
        self.outbox = SqlOutbox()
        self.bars = SqlBarRepository(connection)
        self.parts = SqlPartLedger(connection)
        self.relay_queue = SqlRelayQueue(connection)
        self.deliveries = SqlDeliveryLedger(connection)
        self.monitor = SqlOutboxMonitor(connection)
        self.projection_log = SqlProjectionLog(connection)
        self.retention = SqlRetention(connection)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self._end(commit=False)  # if not committed
        finally:
            if self.outer is None:
                self.write_path.restore_driver()
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
        changed, events = self.foos.changed(), self.outbox.pending
        self.outbox.pending = []
        writes = self.write_path.writes(changed, events)
        if self.write_path.go_alone(writes):
            for write in writes:
                write()  # one statement: atomic by itself, in the driver's autocommit
        else:
            self._begin()
            for write in writes:
                write()
            self._end(commit=True)
        self.foos.saved(changed)

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
        self._end(commit=False)
        self.foos.forget()
        self.bars.loaded.clear()  # what was read is no longer what the database holds
        self.outbox.pending = []
        if self.outer is not None:
            self._begin()

    def _begin(self) -> None:
        """A transaction of its own, or a savepoint of the application's, if none is open."""
        if self.outer is None:
            if not self.connection.in_transaction():
                self.connection.begin()
        elif self.savepoint is None:
            self.savepoint = self.connection.begin_nested()

    def _end(self, commit: bool) -> None:
        if self.outer is None:
            self.connection.commit() if commit else self.connection.rollback()
            return
        savepoint, self.savepoint = self.savepoint, None
        if savepoint is not None and savepoint.is_active:
            savepoint.commit() if commit else savepoint.rollback()
