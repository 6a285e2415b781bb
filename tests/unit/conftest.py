"""The domain on fake ports: one shared in-memory database, a manual clock, a fake broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.ports import UnitOfWork
from infrastructure.memory import (
    InMemoryDatabase,
    InMemoryDispatcher,
    InMemoryUnitOfWork,
    ManualClock,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def database(clock: ManualClock) -> InMemoryDatabase:
    return InMemoryDatabase(clock=clock)


@pytest.fixture
def uow(database: InMemoryDatabase) -> InMemoryUnitOfWork:
    return InMemoryUnitOfWork(database)


@pytest.fixture
def uow_factory(database: InMemoryDatabase) -> Callable[[], UnitOfWork]:
    return lambda: InMemoryUnitOfWork(database)


@pytest.fixture
def dispatcher() -> InMemoryDispatcher:
    return InMemoryDispatcher()
