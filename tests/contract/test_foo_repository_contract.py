"""The FooRepository port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import pytest

from domain.errors import FooNotFoundError
from domain.foo import FooState
from tests.contract.support import (
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_foo,
)


class FooRepositoryContract:
    """Foos round-trip with their version; the completed total sums completed foos only."""

    def test_a_foo_survives_its_round_trip_through_the_repository(
        self, uow_factory: UowFactory
    ) -> None:
        foo_id = add_foo(uow_factory, amount=42)

        with uow_factory() as uow:
            foo = uow.foos.get(foo_id)
            assert (foo.id, foo.amount, foo.version, foo.events) == (foo_id, 42, 1, [])
            assert foo.state is FooState.PENDING

    def test_added_foos_get_distinct_ids(self, uow_factory: UowFactory) -> None:
        assert len({add_foo(uow_factory) for _ in range(3)}) == 3

    def test_an_unknown_foo_is_not_found(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow, pytest.raises(FooNotFoundError):
            uow.foos.get(987)

    def test_the_completed_total_sums_only_completed_foos(self, uow_factory: UowFactory) -> None:
        add_foo(uow_factory, 10, complete=True)
        add_foo(uow_factory, 32, complete=True)
        add_foo(uow_factory, 1000)
        cancelled = add_foo(uow_factory, 7, complete=True)
        with uow_factory() as uow:
            assert uow.foos.completed_total() == 49
            uow.foos.get(cancelled).cancel()
            uow.commit()

        with uow_factory() as uow:
            assert uow.foos.completed_total() == 42


class TestFooRepositoryInMemory(InMemory, FooRepositoryContract):
    pass


class TestFooRepositorySqlite(Sqlite, FooRepositoryContract):
    pass


class TestFooRepositoryPostgres(Postgres, FooRepositoryContract):
    pass
