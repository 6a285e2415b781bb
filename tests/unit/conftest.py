"""The domain on fake ports: one shared in-memory database, a manual clock, a fake broker."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.ports import UnitOfWork
from tests.fakes import FakeDatabase, FakeDispatcher, FakeUnitOfWork, ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def database(clock: ManualClock) -> FakeDatabase:
    return FakeDatabase(clock=clock)


@pytest.fixture
def uow(database: FakeDatabase) -> FakeUnitOfWork:
    return FakeUnitOfWork(database)


@pytest.fixture
def uow_factory(database: FakeDatabase) -> Callable[[], UnitOfWork]:
    return lambda: FakeUnitOfWork(database)


@pytest.fixture
def dispatcher() -> FakeDispatcher:
    return FakeDispatcher()
