"""The unit of work's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from domain.bar import Bar
from domain.errors import FooNotFoundError
from domain.foo import Foo, FooState
from tests.contract.support import (
    BarValues,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_bars,
    add_foo,
    completed,
    part_of,
    pending_events,
)


class UnitOfWorkContract:
    """One transaction: nothing of it persists unless it commits."""

    def test_nothing_is_persisted_when_the_unit_of_work_is_left_without_commit(
        self,
        uow_factory: UowFactory,
    ) -> None:
        with uow_factory() as uow:
            foo, bar = Foo(5), Bar(2)
            uow.foos.add(foo)
            part = uow.parts.lock_open(10)
            uow.bars.add(bar, part)
            uow.parts.added_bars(part.id, 1)
            uow.outbox.append(completed(1, 5))
            foo_id, bar_id = foo.id, bar.id
        assert foo_id is not None
        assert bar_id is not None

        with uow_factory() as uow:
            with pytest.raises(FooNotFoundError):
                uow.foos.get(foo_id)
            assert uow.bars.count() == 0
            assert uow.parts.parts() == []
            assert uow.monitor.stats().pending == 0

    def test_nothing_is_persisted_when_the_unit_of_work_fails(
        self, uow_factory: UowFactory
    ) -> None:
        foo_id = add_foo(uow_factory, amount=5)

        with pytest.raises(RuntimeError, match="crash"), uow_factory() as uow:
            uow.foos.get(foo_id).complete()
            raise RuntimeError("crash before commit")

        with uow_factory() as uow:
            assert uow.foos.get(foo_id).state is FooState.PENDING
            assert uow.monitor.stats().pending == 0

    def test_an_explicit_rollback_discards_the_changes_made_so_far(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        [bar_id] = add_bars(uow_factory, 2)
        part = part_of(uow_factory, bar_id)

        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value = 10
            uow.bars.save([each])
            uow.outbox.append(completed(1, 5))
            uow.rollback()
            uow.commit()

        assert bar_values([bar_id]) == [0]
        assert pending_events(uow_factory) == []

    def test_after_a_rollback_the_same_unit_of_work_writes_its_changes_again(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        [bar_id] = add_bars(uow_factory, 2)
        part = part_of(uow_factory, bar_id)

        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value = 10
            uow.bars.save([each])
            uow.rollback()
            uow.bars.save([each])
            uow.commit()

        assert bar_values([bar_id]) == [10]

    def test_a_foos_version_increments_with_every_committed_change(
        self, uow_factory: UowFactory
    ) -> None:
        foo_id = add_foo(uow_factory, amount=5)
        changes: list[Callable[[Foo], None]] = [Foo.complete, lambda foo: foo.revise(6), Foo.cancel]
        versions = []
        for change in changes:
            with uow_factory() as uow:
                change(uow.foos.get(foo_id))
                uow.commit()
            with uow_factory() as uow:
                versions.append(uow.foos.get(foo_id).version)

        assert versions == [2, 3, 4]


class TestUnitOfWorkInMemory(InMemory, UnitOfWorkContract):
    pass


class TestUnitOfWorkSqlite(Sqlite, UnitOfWorkContract):
    pass


class TestUnitOfWorkPostgres(Postgres, UnitOfWorkContract):
    pass
