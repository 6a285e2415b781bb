"""The composition root: the one place that builds engines and wires adapters to ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.ports import UnitOfWork
from infrastructure.database import make_engine
from infrastructure.mapping import map_domain
from infrastructure.settings import Settings
from infrastructure.unit_of_work import SqlUnitOfWork


@dataclass
class Container:
    """Everything a process needs, built lazily from settings. One per process."""

    settings: Settings = field(default_factory=Settings.from_env)

    @cached_property
    def engine(self) -> Engine:
        map_domain()
        return make_engine(self.settings.database_url)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        # No autoflush: changes reach the database at commit, where a lost optimistic-locking
        # race becomes a ConcurrentUpdateError, never half-way through a use case.
        return sessionmaker(self.engine, autoflush=False, expire_on_commit=False)

    def uow(self) -> UnitOfWork:
        return SqlUnitOfWork(self.session_factory)

    def close(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
