"""The SQLAlchemy unit of work: one session, one transaction, events written at commit."""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Self

from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.exc import StaleDataError

from domain.errors import ConcurrentUpdateError
from domain.ports import UnitOfWork
from infrastructure.outbox_store import SqlOutbox
from infrastructure.repositories import SqlBarRepository, SqlFooRepository

# PostgreSQL's serialization_failure and deadlock_detected: the transaction lost a race.
_RACE_SQLSTATES = {"40001", "40P01"}


class SqlUnitOfWork(UnitOfWork):
    session: Session

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        after_events_committed: Callable[[], None] | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.after_events_committed = after_events_committed

    def __enter__(self) -> Self:
        self.session = self.session_factory()
        self.foos = SqlFooRepository(self.session)
        self.bars = SqlBarRepository(self.session)
        self.outbox = SqlOutbox(self.session)
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
        if self.after_events_committed is not None:
            self.after_events_committed()

    def rollback(self) -> None:
        self.session.rollback()
