"""The composition root: the one place that builds engines, the Celery app, the dispatcher and
the nudge, and wires adapters to ports."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

from celery import Celery
from sqlalchemy import Connection, Engine
from sqlalchemy.orm import Session

from domain.backoff import DispatchBackoff
from domain.passes import HeavyStep
from domain.ports import Dispatcher, UnitOfWork
from domain.projection import Verification, verify
from domain.recalculation import EXAMPLE_RECALCULATION, example_closed_form
from infrastructure.broker.celery_app import make_celery_app, poll_expiry_s
from infrastructure.broker.dispatcher import CeleryDispatcher
from infrastructure.broker.nudge import RelayNudge
from infrastructure.recalculation import load_recalculation
from infrastructure.settings import Settings
from infrastructure.sql.engines import make_engine
from infrastructure.sql.unit_of_work import SqlUnitOfWork


@dataclass
class Container:
    """Everything a process needs, built lazily from settings. One per process.

    With `nudge`, a commit that wrote events also asks the relay to poll at once (when the
    settings allow it): what an application that saves foos wants. Workers and tests need not."""

    settings: Settings = field(default_factory=Settings.from_env)
    nudge: bool = False

    @cached_property
    def engine(self) -> Engine:
        return make_engine(self.settings.database_url, self.settings.statement_timeout_s)

    @cached_property
    def celery_app(self) -> Celery:
        return make_celery_app(self.settings)

    @cached_property
    def dispatcher(self) -> Dispatcher:
        """The relay's publisher; it opens its own broker connection on first use."""
        return CeleryDispatcher(
            self.celery_app,
            timeout_s=self.settings.broker_timeout_s,
            prune_embedded_broker=self.settings.uses_embedded_broker,
        )

    @cached_property
    def dispatch_backoff(self) -> DispatchBackoff:
        """The broker's health as this process's relay saw it."""
        return DispatchBackoff()

    @cached_property
    def relay_nudge(self) -> RelayNudge | None:
        if not (self.nudge and self.settings.nudge):
            return None
        return RelayNudge(
            self.celery_app,
            expires_s=poll_expiry_s(self.settings),
            timeout_s=self.settings.broker_timeout_s,
        )

    @cached_property
    def heavy_step(self) -> HeavyStep:
        """The team's recalculation, as the settings name it, and how passes run it."""
        settings = self.settings
        return HeavyStep(
            recalculate=load_recalculation(settings.recalculation),
            name=settings.recalculation,
            events_per_pass=max(settings.coalesce_limit, 1),
            budget_s=settings.lease_seconds / 2,
            retry=settings.retry_policy,
        )

    def verify(self, show: int = 10) -> Verification:
        """The bars against a replay of the log (and the example's closed form, with it)."""
        example = self.settings.recalculation == EXAMPLE_RECALCULATION
        closed_form = example_closed_form if example else None
        return verify(self.uow, self.heavy_step, closed_form, show)

    def uow(self, transaction: Connection | Session | None = None) -> UnitOfWork:
        """A unit of work of its own; or, given the application's `Connection` or `Session`,
        one that joins its transaction and leaves committing to the application."""
        if transaction is None:
            uow = SqlUnitOfWork(self.engine, self.relay_nudge)
        else:
            uow = SqlUnitOfWork.joining(transaction, self.relay_nudge)
        uow.part_size = self.settings.part_size
        uow.recalculation = self.settings.recalculation
        return uow

    def nudge_problem(self) -> str | None:
        """Once the nudges asked for are out: why the latest did not get through, if it did not."""
        nudge = self.__dict__.get("relay_nudge")
        if nudge is None:
            return None
        nudge.flush(self.settings.broker_timeout_s + 1)
        return nudge.last_error

    def after_fork(self) -> None:
        """In a new worker process: connections must never cross a fork, so each pool process
        opens its own. The Celery app, with its tasks, stays."""
        if "engine" in self.__dict__:
            self.engine.dispose(close=False)
        for name in ("engine", "dispatcher", "dispatch_backoff"):
            self.__dict__.pop(name, None)

    def close(self) -> None:
        nudge = self.__dict__.get("relay_nudge")
        if nudge is not None:
            nudge.close()
        dispatcher = self.__dict__.get("dispatcher")
        if isinstance(dispatcher, CeleryDispatcher):
            dispatcher.close()
        if "celery_app" in self.__dict__:
            self.celery_app.close()
        if "engine" in self.__dict__:
            self.engine.dispose()
