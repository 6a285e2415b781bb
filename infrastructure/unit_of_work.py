"""The SQLAlchemy unit of work: one session, one transaction, events written at commit.

It runs in a transaction of its own, or inside the application's: handed the application's
`Connection` or `Session`, it works in a savepoint there, so the application's rows, the foo
and its outbox event commit or roll back together. It then never commits nor closes what it
does not own; the relay is nudged when the application's transaction commits."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Self

from sqlalchemy import Connection, Engine, event
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from domain.errors import ConcurrentUpdateError
from domain.ports import UnitOfWork
from infrastructure.outbox.admin import SqlOutboxAdmin
from infrastructure.outbox.delivery_ledger import SqlDeliveryLedger
from infrastructure.outbox.relay_queue import SqlRelayQueue
from infrastructure.outbox.writer import SqlOutbox
from infrastructure.repositories import SqlBarRepository, SqlFooRepository

# PostgreSQL's serialization_failure and deadlock_detected: the transaction lost a race.
_RACE_SQLSTATES = {"40001", "40P01"}

SessionFactory = Callable[[], Session]


def session_factory(bind: Engine | Connection, **options: Any) -> sessionmaker[Session]:
    # No autoflush: changes reach the database at commit, where a lost optimistic-locking
    # race becomes a ConcurrentUpdateError, never half-way through a use case.
    return sessionmaker(bind, autoflush=False, expire_on_commit=False, **options)


class SqlUnitOfWork(UnitOfWork):
    session: Session
    outer: Connection | Session | None = None  # the application's, when joining its transaction

    def __init__(
        self,
        session_factory: SessionFactory,
        after_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.after_events_committed = after_events_committed

    @classmethod
    def joining(
        cls,
        outer: Connection | Session,
        after_events_committed: Callable[[], None] | None = None,
    ) -> SqlUnitOfWork:
        """A unit of work inside the application's own transaction, as a savepoint of it."""
        connection = outer.connection() if isinstance(outer, Session) else outer
        if not connection.in_transaction():
            # Begun here, still the application's to commit: a session would take a
            # transaction it began itself as its own, and commit it.
            connection.begin()
        factory = session_factory(connection, join_transaction_mode="create_savepoint")
        uow = cls(factory, after_events_committed)
        uow.outer = outer
        return uow

    def __enter__(self) -> Self:
        self.session = self.session_factory()
        self.foos = SqlFooRepository(self.session)
        self.bars = SqlBarRepository(self.session)
        self.outbox = SqlOutbox(self.session)
        self.relay_queue = SqlRelayQueue(self.session)
        self.deliveries = SqlDeliveryLedger(self.session)
        self.admin = SqlOutboxAdmin(self.session)
        return super().__enter__()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            super().__exit__(exc_type, exc, tb)
        finally:
            self.session.close()

    def commit(self) -> None:
        try:
            super().commit()
        except StaleDataError as error:
            self.rollback()
            raise ConcurrentUpdateError() from error
        except DBAPIError as error:
            if getattr(error.orig, "sqlstate", None) in _RACE_SQLSTATES:
                self.rollback()
                raise ConcurrentUpdateError() from error
            raise

    def _commit(self) -> None:
        self.session.commit()

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
        self.session.rollback()
