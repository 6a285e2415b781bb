"""The Retention port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import pytest

from domain.errors import EventNotFoundError, IllegalTransitionError
from domain.outbox import Checkpoint, EventState
from tests.contract.support import (
    LONG_LEASE,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    append,
    completed,
    process,
    sequence,
    stored,
    three_applied_two_pruned,
)


class RetentionContract:
    """Processed events old enough, folded into the checkpoint and deleted, each once."""

    def test_only_processed_events_old_enough_are_prunable_lowest_ids_first(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 7)))
        with uow_factory() as uow:
            for event_id in (ids[4], ids[0], ids[2]):
                process(uow, event_id)
            uow.relay_queue.mark_dispatched([ids[1]], LONG_LEASE)
            uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.retention.lock_prunable(3_600, 10) == []  # none is an hour old
            assert [e.id for e in uow.retention.lock_prunable(0, 2)] == [ids[0], ids[2]]
            assert [e.id for e in uow.retention.lock_prunable(0, 10)] == [ids[0], ids[2], ids[4]]
            # A range of ids: above `after_id`, below `below_id`.
            assert [e.id for e in uow.retention.lock_prunable(0, 10, after_id=ids[0])] == [
                ids[2],
                ids[4],
            ]
            assert [e.id for e in uow.retention.lock_prunable(0, 10, below_id=ids[4])] == [
                ids[0],
                ids[2],
            ]

    def test_prunable_events_stop_at_the_position_every_baseline_is_past(
        self, uow_factory: UowFactory
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
        with uow_factory() as uow:
            sequence(uow, ids[2], ids[0], ids[3], ids[1])  # positions 1 to 4, not in id order
            for event_id in ids:
                process(uow, event_id)
            uow.commit()

        with uow_factory() as uow:
            through = [e.id for e in uow.retention.lock_prunable(0, 10, through_position=2)]
            assert through == [ids[0], ids[2]]  # positions 2 and 1, lowest id first
            assert uow.retention.lock_prunable(0, 10, through_position=0) == []
            assert [e.id for e in uow.retention.lock_prunable(0, 10, through_position=4)] == ids
            between = {"after_id": ids[0], "below_id": ids[3]}
            assert [
                e.id for e in uow.retention.lock_prunable(0, 10, **between, through_position=3)
            ] == [ids[2]]  # ids[1] is at position 4
            assert [
                e.id for e in uow.retention.lock_prunable(0, 10, **between, through_position=4)
            ] == [ids[1], ids[2]]

    def test_the_first_recent_id_bounds_a_prune(self, uow_factory: UowFactory) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            assert uow.retention.first_recent_id(3_600) == ids[0]  # all of them are recent
            assert uow.retention.first_recent_id(0) is None  # none occurred after now

    def test_folding_and_deleting_moves_events_from_the_log_into_the_checkpoint(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, 10 * n) for n in range(1, 4)))
        with uow_factory() as uow:
            for event_id in ids:
                process(uow, event_id)
            uow.commit()
        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint()
            prunable = uow.retention.lock_prunable(0, 2)
            uow.retention.fold_and_delete(prunable, 30)
            # not committed: nothing happened

        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint()
            uow.retention.fold_and_delete(uow.retention.lock_prunable(0, 2), 30)
            uow.commit()

        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint(
                total=30, events=2, last_pruned_id=ids[1]
            )
            assert uow.monitor.health().events_pruned == 2
            assert [e.id for e in uow.parts.events_after(0, 10)] == [ids[2]]  # the log kept one
            assert uow.deliveries.lock(ids[2]).applied
            with pytest.raises(EventNotFoundError):
                uow.deliveries.lock(ids[0])

    def test_folding_an_event_that_is_not_processed_is_refused_and_changes_nothing(
        self, uow_factory: UowFactory
    ) -> None:
        [processed, dispatched] = append(uow_factory, completed(1, 10), completed(2, 20))
        with uow_factory() as uow:
            process(uow, processed)
            uow.relay_queue.mark_dispatched([dispatched], LONG_LEASE)
            uow.commit()
        with uow_factory() as uow:
            events = [uow.deliveries.lock(processed), uow.deliveries.lock(dispatched)]

        with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(dispatched)):
            uow.retention.fold_and_delete(events, 30)

        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint()
            assert [e.id for e in uow.retention.lock_prunable(0, 10)] == [processed]
        assert stored(uow_factory, dispatched).state is EventState.DISPATCHED

    def test_after_a_prune_only_the_kept_events_are_prunable_and_a_pruned_one_cannot_go_twice(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            assert [e.id for e in uow.retention.lock_prunable(0, 10)] == [ids[2]]
            assert uow.retention.lock_prunable(0, 10, after_id=ids[2]) == []
            assert uow.retention.first_recent_id(3_600) == ids[2]  # the lowest id left
            assert uow.retention.first_recent_id(0) is None
        with uow_factory() as uow:
            pruned_again = uow.deliveries.lock(ids[2])
        with uow_factory() as uow:
            uow.retention.fold_and_delete([pruned_again], 30)
            uow.commit()
        with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(ids[2])):
            uow.retention.fold_and_delete([pruned_again], 30)  # already folded: counted once
        with uow_factory() as uow:
            assert uow.projection_log.checkpoint() == Checkpoint(60, 3, ids[2])


class TestRetentionInMemory(InMemory, RetentionContract):
    pass


class TestRetentionSqlite(Sqlite, RetentionContract):
    pass


class TestRetentionPostgres(Postgres, RetentionContract):
    pass
