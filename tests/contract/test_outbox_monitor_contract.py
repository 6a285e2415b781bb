"""The OutboxMonitor port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import update

from domain.errors import IllegalTransitionError
from domain.outbox import EventState
from domain.ports import UnitOfWork
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDatabase
from infrastructure.sql.clock import db_now_plus, seconds
from infrastructure.sql.schema import outbox_events
from tests.contract.support import (
    LONG_LEASE,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    append,
    claimed_ids,
    completed,
    position_of,
    process,
    stored,
    three_applied_two_pruned,
)

Backdate = Callable[[int, float], None]  # make an event have occurred that many seconds ago


def dispatch(uow: UnitOfWork, *event_ids: int) -> None:
    """As the relay does: give the events not sequenced yet the next positions, and lease
    every one of them."""
    events = [uow.deliveries.lock(event_id) for event_id in event_ids]
    fresh = [(event.id, event.event().delta) for event in events if event.position is None]
    uow.relay_queue.sequence(fresh)
    uow.relay_queue.mark_dispatched(event_ids, LONG_LEASE)


def apply_through(uow: UnitOfWork, event_id: int) -> None:
    """Every part has passed the sequenced event: it is applied, and so is each before it."""
    uow.deliveries.apply_through(position_of(uow, event_id))


class OutboxMonitorContract:
    """Counts and counters that never scan the finished log; dead events and their revival;
    the projection's lag."""

    def test_stats_count_events_by_state(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            empty = uow.monitor.stats()
        assert (empty.pending, empty.in_flight, empty.processed, empty.dead) == (0, 0, 0, 0)
        assert (empty.oldest_pending_age_s, empty.projection_lag_s) == (None, 0.0)
        assert empty.drained

        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        with uow_factory() as uow:
            process(uow, ids[2])
            dispatch(uow, *ids[:2])
            uow.deliveries.record_failure(ids[3], "dead", retry_in_s=None)
            uow.commit()

        with uow_factory() as uow:
            stats = uow.monitor.stats()
        assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (1, 2, 1, 1)
        assert stats.oldest_pending_age_s is not None
        assert 0.0 <= stats.oldest_pending_age_s < 60.0
        assert 0.0 <= stats.projection_lag_s <= stats.oldest_pending_age_s
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
        assert (stats.oldest_pending_age_s, stats.projection_lag_s) == (None, 0.0)
        assert stats.drained

    def test_health_counts_unfinished_and_dead_events_and_reads_the_counters(
        self,
        uow_factory: UowFactory,
    ) -> None:
        with uow_factory() as uow:
            empty = uow.monitor.health()
        assert (empty.pending, empty.in_flight, empty.dead) == (0, 0, 0)
        assert (empty.oldest_pending_age_s, empty.projection_lag_s) == (0.0, 0.0)
        assert (empty.events_applied, empty.event_failures, empty.events_dead) == (0, 0, 0)
        assert (empty.events_dispatched, empty.leases_expired, empty.relay_passes) == (0, 0, 0)
        assert empty.part_failures == 0
        assert empty.last_relay_pass_age_s is None  # no relay batch has run yet

        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        with uow_factory() as uow:
            process(uow, ids[2])
            dispatch(uow, *ids[:2])
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
        assert 0.0 <= health.projection_lag_s <= health.oldest_pending_age_s
        assert (health.events_applied, health.event_failures, health.events_dead) == (1, 2, 1)
        assert (health.events_dispatched, health.leases_expired, health.relay_passes) == (2, 1, 1)
        assert health.part_failures == 0  # an event's failures are not a part's
        assert health.last_relay_pass_age_s is not None
        assert 0.0 <= health.last_relay_pass_age_s < 60.0

    def test_the_projection_lag_is_the_age_of_the_oldest_unfinished_event_not_applied_yet(
        self, uow_factory: UowFactory, backdate: Backdate
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        out, waiting, behind, new, dead = ids
        ages = {out: 5_000, waiting: 4_000, behind: 3_000, new: 1_000, dead: 9_000}
        for event_id, age in ages.items():
            backdate(event_id, age)
        with uow_factory() as uow:
            dispatch(uow, out, waiting, behind)  # positions 1, 2, 3
            uow.deliveries.wait_for_parts(waiting, 0)  # its message back, pending again
            apply_through(uow, waiting)  # every part has passed out and waiting, not behind
            uow.deliveries.record_failure(dead, "unreadable", retry_in_s=None)
            uow.commit()
        assert stored(uow_factory, out).state is EventState.DISPATCHED  # applied, message out
        assert stored(uow_factory, waiting).state is EventState.PROCESSED

        with uow_factory() as uow:
            health, stats = uow.monitor.health(), uow.monitor.stats()
        # The oldest unfinished event is applied (its message is still out): the bars lag by
        # the next one, sequenced but not passed by every part; dead events wait for no part.
        assert 5_000 <= health.oldest_pending_age_s < 5_060
        assert 3_000 <= health.projection_lag_s < 3_060
        assert stats.projection_lag_s == pytest.approx(health.projection_lag_s, abs=60)

        with uow_factory() as uow:
            apply_through(uow, behind)
            uow.commit()
        with uow_factory() as uow:
            lag = uow.monitor.health().projection_lag_s
        assert 1_000 <= lag < 1_060  # the new event: no relay has sequenced it yet

        with uow_factory() as uow:
            process(uow, new)
            uow.commit()
        with uow_factory() as uow:
            health = uow.monitor.health()
        assert (health.in_flight, health.projection_lag_s) == (2, 0.0)  # out and behind
        assert health.oldest_pending_age_s >= 5_000

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
            uow.relay_queue.mark_dispatched(ids, LONG_LEASE)  # dead before it is sequenced
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
        assert (stats.oldest_pending_age_s, stats.drained, stats.projection_lag_s) == (
            None,
            True,
            0.0,
        )
        assert (health.pending, health.in_flight, health.dead) == (0, 0, 0)
        assert (health.events_applied, health.events_pruned, health.event_failures) == (3, 2, 0)

    def test_processed_counts_pruned_events_and_leaves_out_applied_ones_still_in_flight(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)
        [out, waiting] = append(uow_factory, completed(4, 4), completed(5, 5))
        with uow_factory() as uow:
            dispatch(uow, out, waiting)
            uow.deliveries.wait_for_parts(waiting, 0)
            apply_through(uow, waiting)  # both applied; out's message is still out
            uow.commit()

        with uow_factory() as uow:
            stats = uow.monitor.stats()
        assert (stats.pending, stats.in_flight, stats.processed, stats.dead) == (0, 1, 4, 0)
        assert stats.projection_lag_s == 0.0
        assert ids[2] < out


class TestOutboxMonitorInMemory(InMemory, OutboxMonitorContract):
    @pytest.fixture
    def backdate(self, database: InMemoryDatabase) -> Backdate:
        def move(event_id: int, age_s: float) -> None:
            database.data.events[event_id].occurred_at = database.clock() - age_s

        return move


class _SqlBackdate:
    @pytest.fixture
    def backdate(self, sql_container: Container) -> Backdate:
        def move(event_id: int, age_s: float) -> None:
            with sql_container.engine.begin() as connection:
                connection.execute(
                    update(outbox_events)
                    .where(outbox_events.c.id == event_id)
                    .values(occurred_at=db_now_plus(seconds(-age_s)))
                )

        return move


class TestOutboxMonitorSqlite(Sqlite, _SqlBackdate, OutboxMonitorContract):
    pass


class TestOutboxMonitorPostgres(Postgres, _SqlBackdate, OutboxMonitorContract):
    pass
