"""The RelayQueue port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import time

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
    sequence,
    stored,
    three_applied_two_pruned,
)


class RelayQueueContract:
    """Claims without overlap, leases, the in-flight count; a lease only of an unfinished event."""

    def test_pending_claims_return_due_sequenced_events_oldest_first_up_to_the_limit(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 7)))
        with uow_factory() as uow:  # in another order than their ids: claims go by due order
            sequence(uow, ids[3], ids[0], ids[2], ids[1], ids[4])
            uow.commit()

        with uow_factory() as uow:
            assert uow.relay_queue.try_lock() is True
            assert [event.id for event in uow.relay_queue.claim_pending(3)] == ids[:3]
            # The last one has no position yet: not the relay's to dispatch before it has.
            assert [event.id for event in uow.relay_queue.claim_pending(10)] == ids[:5]
            assert uow.relay_queue.claim_expired(10) == []  # nothing was ever dispatched
            assert uow.relay_queue.count_in_flight() == 0

    def test_unsequenced_claims_return_due_pending_events_without_a_position_oldest_first(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 9)))
        with uow_factory() as uow:
            sequence(uow, ids[1], ids[4])
            uow.relay_queue.mark_dispatched([ids[2]], LONG_LEASE)  # out before it had a position
            uow.deliveries.record_failure(ids[5], "RuntimeError: later", LONG_LEASE)  # not due
            uow.deliveries.record_failure(ids[6], "RuntimeError: dead", None)
            uow.commit()

        with uow_factory() as uow:
            assert [e.id for e in uow.relay_queue.claim_unsequenced(2)] == [ids[0], ids[3]]
            assert [e.id for e in uow.relay_queue.claim_unsequenced(10)] == [
                ids[0],
                ids[3],
                ids[7],
            ]
            assert uow.relay_queue.claim_unsequenced(0) == []
            assert [e.id for e in uow.relay_queue.claim_pending(10)] == [ids[1], ids[4]]

    def test_dispatching_leases_events_and_counts_an_attempt(self, uow_factory: UowFactory) -> None:
        ids = append(uow_factory, completed(1, 1), completed(2, 2), completed(3, 3))

        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched(ids[:2], LONG_LEASE)
            uow.commit()

        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 2
            assert claimed_ids(uow) == ([], ids[2:])  # leased events are claimed by nobody
        events = [stored(uow_factory, event_id) for event_id in ids]
        assert [(event.state, event.dispatches, event.failures) for event in events] == [
            (EventState.DISPATCHED, 1, 0),
            (EventState.DISPATCHED, 1, 0),
            (EventState.PENDING, 0, 0),
        ]

    def test_an_event_whose_lease_expired_is_still_in_flight_and_claimed_as_expired(
        self,
        uow_factory: UowFactory,
    ) -> None:
        [expired, leased] = append(uow_factory, completed(1, 1), completed(2, 2))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([expired], 0.0)
            uow.relay_queue.mark_dispatched([leased], LONG_LEASE)
            uow.commit()
        time.sleep(0.005)

        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 2  # an expired lease still holds its place
            assert claimed_ids(uow) == ([expired], [])
            uow.relay_queue.mark_dispatched([expired], LONG_LEASE)
            uow.commit()

        event = stored(uow_factory, expired)
        assert (event.state, event.dispatches, event.failures) == (EventState.DISPATCHED, 2, 0)
        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 2
            assert claimed_ids(uow) == ([], [])

    def test_claims_split_expired_leases_from_due_pending_events_and_in_flight_counts_both(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 7)))
        # Leases that run out in reverse id order: the oldest lease end is claimed first.
        for event_id in (ids[3], ids[0]):
            with uow_factory() as uow:
                uow.relay_queue.mark_dispatched([event_id], 0.0)
                uow.commit()
            time.sleep(0.005)
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([ids[1]], LONG_LEASE)
            process(uow, ids[5])
            sequence(uow, ids[4], ids[2])
            uow.commit()

        with uow_factory() as uow:
            assert [event.id for event in uow.relay_queue.claim_expired(10)] == [ids[3], ids[0]]
            assert [event.id for event in uow.relay_queue.claim_expired(1)] == [ids[3]]
            assert [event.id for event in uow.relay_queue.claim_pending(10)] == [ids[2], ids[4]]
            assert [event.id for event in uow.relay_queue.claim_pending(1)] == [ids[2]]
            # Dispatched ones have no position either, but are no pending event to sequence.
            assert uow.relay_queue.claim_unsequenced(10) == []
            # Every dispatched event holds a place, its lease run out or not; others hold none.
            assert uow.relay_queue.count_in_flight() == 3
            [claimed] = uow.relay_queue.claim_expired(1)
        assert (claimed.state, claimed.dispatches, claimed.failures) == (
            EventState.DISPATCHED,
            1,
            0,
        )

    def test_an_event_leaves_the_in_flight_count_once_processed_or_back_to_pending_or_dead(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched(ids, 0.0)
            uow.commit()
        time.sleep(0.005)
        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 4

        with uow_factory() as uow:
            process(uow, ids[0])
            uow.deliveries.record_failure(ids[1], "RuntimeError: retry", retry_in_s=0.0)
            uow.deliveries.record_failure(ids[2], "RuntimeError: give up", retry_in_s=None)
            uow.commit()
        time.sleep(0.005)

        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 1
            assert claimed_ids(uow) == ([ids[3]], [ids[1]])

    def test_a_dispatch_mark_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        [event_id] = append(uow_factory, completed(1, 1))

        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([event_id], LONG_LEASE)

        event = stored(uow_factory, event_id)
        assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 0, 0)

    def test_dispatching_a_processed_or_dead_event_is_refused(
        self, uow_factory: UowFactory
    ) -> None:
        [processed, dead, due] = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            process(uow, processed)
            uow.deliveries.record_failure(dead, "boom", retry_in_s=None)
            uow.commit()

        for illegal in (processed, dead):
            with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(illegal)):
                uow.relay_queue.mark_dispatched([due, illegal], LONG_LEASE)

        after = [stored(uow_factory, i) for i in (processed, dead, due)]
        assert [(event.state, event.dispatches) for event in after] == [
            (EventState.PROCESSED, 0),
            (EventState.DEAD, 0),
            (EventState.PENDING, 0),
        ]

    def test_sequencing_gives_consecutive_positions_after_the_head_in_the_order_given(
        self, uow_factory: UowFactory
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))

        with uow_factory() as uow:
            uow.relay_queue.sequence([(ids[2], 5), (ids[0], 7)])
            uow.commit()
        with uow_factory() as uow:
            uow.relay_queue.sequence([(ids[3], -1)])
            uow.relay_queue.sequence([])  # moves nothing
            uow.commit()

        positions = [stored(uow_factory, event_id).position for event_id in ids]
        assert positions == [2, None, 1, 3]
        with uow_factory() as uow:
            projection = uow.parts.projection()
            assert (projection.head, projection.head_total, projection.applied) == (3, 11, 0)
            # The sequenced events, in the one order; a pending one is still due.
            assert [e.id for e in uow.parts.events_after(0, 10)] == [ids[2], ids[0], ids[3]]
            assert claimed_ids(uow) == ([], ids)

    def test_a_sequence_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 4))

        with uow_factory() as uow:
            uow.relay_queue.sequence([(event_id, 4)])

        assert stored(uow_factory, event_id).position is None
        with uow_factory() as uow:
            assert (uow.parts.projection().head, uow.parts.projection().head_total) == (0, 0)
            uow.relay_queue.sequence([(event_id, 4)])
            uow.commit()
        assert stored(uow_factory, event_id).position == 1

    def test_after_a_prune_nothing_is_due_or_in_flight_and_a_pruned_event_cannot_be_leased(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            assert uow.relay_queue.try_lock() is True
            assert claimed_ids(uow) == ([], [])
            assert uow.relay_queue.count_in_flight() == 0
            uow.relay_queue.record_batch(dispatched=0, leases_expired=0)
            assert uow.monitor.health().relay_passes == 1
        with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(ids[0])):
            uow.relay_queue.mark_dispatched([ids[0]], LONG_LEASE)


class TestRelayQueueInMemory(InMemory, RelayQueueContract):
    pass


class TestRelayQueueSqlite(Sqlite, RelayQueueContract):
    pass


class TestRelayQueuePostgres(Postgres, RelayQueueContract):
    pass
