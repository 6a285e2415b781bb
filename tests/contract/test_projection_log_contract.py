"""The ProjectionLog port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from domain.events import FooCancelled, FooRevised
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
    """The applied log's sum and the checkpoint that pruning folds into."""

    def test_the_applied_sum_adds_the_deltas_of_applied_events_only(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            assert uow.projection_log.applied_sum() == (0, 0)
        ids = append(
            uow_factory,
            completed(1, 10),
            FooRevised(foo_id=1, delta=-4),
            completed(2, 2**62),
            FooCancelled(foo_id=3, delta=-7),
            completed(4, 1000),
        )
        with uow_factory() as uow:
            for event_id in ids[:4]:
                process(uow, event_id)
            uow.deliveries.record_failure(ids[4], "dead", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.projection_log.applied_sum() == (10 - 4 + 2**62 - 7, 4)

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

    def test_after_a_prune_the_log_sums_what_it_kept_and_the_checkpoint_what_it_folded(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            assert uow.projection_log.applied_sum() == (30, 1)
            assert uow.projection_log.checkpoint() == Checkpoint(10 + 20, 2, ids[1])
            assert uow.projection_log.lock_checkpoint() == Checkpoint(10 + 20, 2, ids[1])


class TestProjectionLogInMemory(InMemory, ProjectionLogContract):
    pass


class TestProjectionLogSqlite(Sqlite, ProjectionLogContract):
    pass


class TestProjectionLogPostgres(Postgres, ProjectionLogContract):
    pass
