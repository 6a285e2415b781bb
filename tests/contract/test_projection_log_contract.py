"""The ProjectionLog port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from domain.outbox import Checkpoint
from tests.contract.support import (
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    append,
    completed,
    process,
    three_applied_two_pruned,
)


class ProjectionLogContract:
    """The checkpoint that pruning folds into, read as it is or locked."""

    def test_the_checkpoint_starts_empty(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint(0, 0, 0)
            assert uow.projection_log.lock_checkpoint() == Checkpoint()

    def test_the_checkpoint_can_be_read_locked(self, uow_factory: UowFactory) -> None:
        ids = append(uow_factory, completed(1, 5))
        with uow_factory() as uow:
            process(uow, ids[0])
            uow.commit()
        with uow_factory() as uow:
            uow.retention.fold_and_delete(uow.retention.lock_prunable(0, 1), 5)
            uow.commit()
        with uow_factory() as uow:
            assert (
                uow.projection_log.lock_checkpoint()
                == uow.projection_log.checkpoint()
                == Checkpoint(5, 1, ids[0])
            )

    def test_after_a_prune_the_checkpoint_holds_what_it_folded(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint(10 + 20, 2, ids[1])
            assert uow.projection_log.lock_checkpoint() == Checkpoint(10 + 20, 2, ids[1])
            assert [e.id for e in uow.parts.events_after(0, 10)] == [ids[2]]  # the log kept one


class TestProjectionLogInMemory(InMemory, ProjectionLogContract):
    pass


class TestProjectionLogSqlite(Sqlite, ProjectionLogContract):
    pass


class TestProjectionLogPostgres(Postgres, ProjectionLogContract):
    pass
