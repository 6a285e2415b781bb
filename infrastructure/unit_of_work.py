"""The SQL unit of work: one connection, one transaction, foos and their events written at
commit, in SQLAlchemy Core (an application's save pays for no ORM unit of work).

It runs in a transaction of its own, or inside the application's: handed the application's
`Connection` or `Session`, it works in a savepoint there, so the application's rows, the foo
and its outbox event commit or roll back together. It then never commits nor closes what it
does not own; the relay is nudged when the application's transaction commits."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy import Connection, Engine, event
from sqlalchemy.engine import Transaction
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from domain.errors import ConcurrentUpdateError
from domain.events import FooEvent
from domain.ports import UnitOfWork
from infrastructure.outbox.admin import SqlOutboxAdmin
from infrastructure.outbox.delivery_ledger import SqlDeliveryLedger
from infrastructure.outbox.relay_queue import SqlRelayQueue
from infrastructure.outbox.writer import SqlOutbox
from infrastructure.repositories import SqlBarRepository, SqlFooRepository

# PostgreSQL's serialization_failure and deadlock_detected: the transaction lost a race.
_RACE_SQLSTATES = {"40001", "40P01"}


class SqlUnitOfWork(UnitOfWork):
    connection: Connection
    transaction: Transaction
    foos: SqlFooRepository
    outbox: SqlOutbox
    outer: Connection | Session | None = None  # the application's, when joining its transaction

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
        self._begin()
        self.foos = SqlFooRepository(self.connection)
        self.bars = SqlBarRepository(self.connection)
        self.outbox = SqlOutbox(self.connection)
        self.relay_queue = SqlRelayQueue(self.connection)
        self.deliveries = SqlDeliveryLedger(self.connection)
        self.admin = SqlOutboxAdmin(self.connection)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            if self.transaction.is_active:  # not committed: undone
                self.transaction.rollback()
        finally:
            if self.outer is None:
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
        # A changed foo with one event: on PostgreSQL one statement saves both. The events keep
        # the order they happened in.
        events, changed = self.outbox.take(), self.foos.changed()
        per_foo = Counter(event.foo_id for event in events)
        one_statement = self.foos.postgresql
        together = {foo.id: foo for foo in changed if one_statement and per_foo[foo.id or 0] == 1}
        for foo in changed:
            if foo.id not in together:
                self.foos.save(foo)
        waiting: list[FooEvent] = []
        for each in events:
            if each.foo_id in together:
                self.outbox.write(waiting)
                waiting = []
                self.foos.save(together[each.foo_id], each)
            else:
                waiting.append(each)
        self.outbox.write(waiting)
        self.transaction.commit()

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
        if self.transaction.is_active:
            self.transaction.rollback()
        self.foos.forget()
        self.outbox.take()
        self._begin()

    def _begin(self) -> None:
        # Nothing is sent for a transaction of its own until its first statement.
        if self.outer is None:
            self.transaction = self.connection.begin()
        else:
            self.transaction = self.connection.begin_nested()
