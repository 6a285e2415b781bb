"""The OutboxMonitor port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import pytest

from domain.errors import IllegalTransitionError
from domain.outbox import EventState
from tests.contract.support import (
    LONG_LEASE,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    append,
    claimed_ids,
    completed,
    process,
    stored,
    three_applied_two_pruned,
)


class OutboxMonitorContract:
    """Counts and counters that never scan the finished log; dead events and their revival."""

    def test_stats_count_events_by_state(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            empty = uow.monitor.stats()
        assert (empty.pending, empty.in_flight, empty.processed, empty.dead) == (0, 0, 0, 0)
        assert empty.oldest_pending_age_s is None
        assert empty.drained

        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
            process(uow, ids[2])
            uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            stats = uow.monitor.stats()
        assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (1, 2, 1, 1)
        assert stats.oldest_pending_age_s is not None
        assert 0.0 <= stats.oldest_pending_age_s < 60.0
        assert not stats.drained

    def test_the_oldest_pending_age_is_gone_once_every_event_is_finished(
        self,
        uow_factory: UowFactory,
    ) -> None:
        [processed, dead] = append(uow_factory, completed(1, 1), completed(2, 2))
        with uow_factory() as uow:
            process(uow, processed)
            uow.deliveries.record_failure(dead, "dead", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            stats = uow.monitor.stats()
        assert stats.oldest_pending_age_s is None
        assert stats.drained

    def test_health_counts_unfinished_and_dead_events_and_reads_the_counters(
        self,
        uow_factory: UowFactory,
    ) -> None:
        with uow_factory() as uow:
            empty = uow.monitor.health()
        assert (empty.pending, empty.in_flight, empty.dead, empty.oldest_pending_age_s) == (
            0,
            0,
            0,
            0,
        )
        assert (empty.events_applied, empty.event_failures, empty.events_dead) == (0, 0, 0)
        assert (empty.events_dispatched, empty.leases_expired, empty.relay_passes) == (0, 0, 0)
        assert empty.last_relay_pass_age_s is None  # no relay batch has run yet

        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
            process(uow, ids[2])
            uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
            uow.deliveries.record_failure(ids[4], "again later", retry_in_s=LONG_LEASE)
            uow.relay_queue.record_batch(dispatched=2, leases_expired=1)
            uow.commit()
        with uow_factory() as uow, pytest.raises(IllegalTransitionError):
            uow.deliveries.record_failure(ids[2], "too late: it is processed", retry_in_s=None)

        with uow_factory() as uow:
            health = uow.monitor.health()
        assert (health.pending, health.in_flight, health.dead) == (1, 2, 1)
        assert 0.0 <= health.oldest_pending_age_s < 60.0
        assert (health.events_applied, health.event_failures, health.events_dead) == (1, 2, 1)
        assert (health.events_dispatched, health.leases_expired, health.relay_passes) == (2, 1, 1)
        assert health.last_relay_pass_age_s is not None
        assert 0.0 <= health.last_relay_pass_age_s < 60.0

    def test_counters_are_discarded_with_their_unit_of_work(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 1))
        with uow_factory() as uow:
            uow.relay_queue.record_batch(dispatched=1, leases_expired=1)
            uow.deliveries.record_failure(event_id, "dead", retry_in_s=None)

        with uow_factory() as uow:
            health = uow.monitor.health()
        assert (health.relay_passes, health.events_dispatched, health.event_failures) == (0, 0, 0)
        assert health.last_relay_pass_age_s is None

    def test_reviving_dead_events_by_id_makes_only_those_due_again_with_no_failures(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched(ids, LONG_LEASE)
            for event_id in ids[:3]:
                uow.deliveries.record_failure(event_id, "boom", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.monitor.revive_dead([ids[2], ids[0], ids[3], 999]) == [ids[0], ids[2]]
            uow.commit()

        # Failures start over; the dispatch count is history and stays.
        revived = stored(uow_factory, ids[0])
        assert (revived.state, revived.dispatches, revived.failures, revived.last_error) == (
            EventState.PENDING,
            1,
            0,
            "boom",
        )
        still_dead = stored(uow_factory, ids[1])
        assert (still_dead.state, still_dead.dispatches, still_dead.failures) == (
            EventState.DEAD,
            1,
            1,
        )
        with uow_factory() as uow:
            assert claimed_ids(uow) == ([], [ids[0], ids[2]])
            assert [event.id for event in uow.monitor.dead_events()] == [ids[1]]
            assert uow.relay_queue.count_in_flight() == 1
        assert stored(uow_factory, ids[3]).state is EventState.DISPATCHED

    def test_reviving_every_dead_event(self, uow_factory: UowFactory) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            for event_id in ids[1:]:
                uow.deliveries.record_failure(event_id, "boom", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.monitor.revive_dead(None) == ids[1:]
            assert uow.monitor.revive_dead(None) == []
            uow.commit()

        with uow_factory() as uow:
            assert uow.monitor.dead_events() == []
            assert uow.monitor.stats().pending == 3
        assert [stored(uow_factory, event_id).failures for event_id in ids] == [0, 0, 0]

    def test_after_a_prune_processed_still_counts_every_event_ever_processed(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            stats, health = uow.monitor.stats(), uow.monitor.health()
            assert uow.monitor.dead_events() == []
            assert uow.monitor.revive_dead([ids[0], ids[2]]) == []
            assert uow.monitor.revive_dead(None) == []
        assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (0, 0, 3, 0)
        assert (stats.oldest_pending_age_s, stats.drained) == (None, True)
        assert (health.pending, health.in_flight, health.dead) == (0, 0, 0)
        assert (health.events_applied, health.events_pruned, health.event_failures) == (3, 2, 0)

    def test_processed_counts_pruned_events_and_leaves_out_applied_ones_still_in_flight(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)
        [out, waiting] = append(uow_factory, completed(4, 4), completed(5, 5))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([out], LONG_LEASE)
            uow.deliveries.record_applied([out, waiting])
            uow.bars.apply_delta(9, events=2)
            uow.deliveries.finish_pass([out, waiting], delivered_id=waiting)
            uow.commit()

        with uow_factory() as uow:
            stats = uow.monitor.stats()
        assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (0, 1, 4, 0)
        assert ids[2] < out


class TestOutboxMonitorInMemory(InMemory, OutboxMonitorContract):
    pass


class TestOutboxMonitorSqlite(Sqlite, OutboxMonitorContract):
    pass


class TestOutboxMonitorPostgres(Postgres, OutboxMonitorContract):
    pass
