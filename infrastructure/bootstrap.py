"""The composition root: the one place that builds engines and wires adapters to ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from domain.ports import UnitOfWork
from infrastructure.database import make_engine
from infrastructure.mapping import map_domain
from infrastructure.settings import Settings
from infrastructure.unit_of_work import SqlUnitOfWork


class Nudge(Protocol):
    """Wakes the relay after a commit that wrote events (tasks/nudge.py)."""

    def __call__(self) -> None: ...

    def flush(self, timeout_s: float = 2.0) -> bool: ...

    def close(self) -> None: ...


@dataclass
class Container:
    """Everything a process needs, built lazily from settings. One per process.

    With `nudge`, a commit that wrote events also asks the relay to poll at once (when the
    settings allow it): what an application that saves foos wants. Workers and tests need not."""

    settings: Settings = field(default_factory=Settings.from_env)
    nudge: bool = False

    @cached_property
    def engine(self) -> Engine:
        map_domain()
        return make_engine(self.settings.database_url)

    @cached_property
    def session_factory(self) -> sessionmaker[Session]:
        # No autoflush: changes reach the database at commit, where a lost optimistic-locking
        # race becomes a ConcurrentUpdateError, never half-way through a use case.
        return sessionmaker(self.engine, autoflush=False, expire_on_commit=False)

    @cached_property
    def relay_nudge(self) -> Nudge | None:
        if not (self.nudge and self.settings.nudge):
            return None
        from celery import Celery

        from tasks.config import celery_config
        from tasks.nudge import RelayNudge

        app = Celery("postsave-nudge", config_source=celery_config(self.settings))
        return RelayNudge(app, expires_s=max(self.settings.poll_interval_s * 2, 1.0))

    def uow(self) -> UnitOfWork:
        return SqlUnitOfWork(self.session_factory, self.relay_nudge)

    def close(self) -> None:
        nudge = self.__dict__.get("relay_nudge")
        if nudge is not None:
            nudge.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
