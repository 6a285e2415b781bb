"""The DeliveryLedger port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import time

import pytest

from domain.errors import EventNotFoundError, IllegalTransitionError
from domain.outbox import MAX_ERROR_CHARS, EventState
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


class DeliveryLedgerContract:
    """Each event applied once, finished or failed; only an unapplied unfinished event may fail."""

    def test_recording_an_event_as_processed_succeeds_once(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 5))

        with uow_factory() as uow:
            assert process(uow, event_id) is True
            assert process(uow, event_id) is False
            uow.commit()
        with uow_factory() as uow:
            assert process(uow, event_id) is False

        event = stored(uow_factory, event_id)
        assert (event.state, event.last_error) == (EventState.PROCESSED, None)

    def test_a_processed_mark_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        [event_id] = append(uow_factory, completed(1, 5))

        with uow_factory() as uow:
            assert process(uow, event_id) is True

        with uow_factory() as uow:
            assert process(uow, event_id) is True
        assert stored(uow_factory, event_id).state is EventState.PENDING

    def test_locking_an_unknown_event_for_processing_raises_event_not_found(
        self,
        uow_factory: UowFactory,
    ) -> None:
        with uow_factory() as uow, pytest.raises(EventNotFoundError):
            uow.deliveries.lock(31337)

    def test_a_failure_with_a_retry_delay_makes_the_event_pending_later_and_counts_a_failure(
        self,
        uow_factory: UowFactory,
    ) -> None:
        [later, now] = append(uow_factory, completed(1, 1), completed(2, 2))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([later, now], LONG_LEASE)
            uow.deliveries.record_failure(later, "RuntimeError: try later", retry_in_s=LONG_LEASE)
            uow.deliveries.record_failure(now, "RuntimeError: try now", retry_in_s=0.0)
            uow.commit()
        time.sleep(0.005)

        event = stored(uow_factory, later)
        assert (event.state, event.dispatches, event.failures, event.last_error) == (
            EventState.PENDING,
            1,
            1,
            "RuntimeError: try later",
        )
        with uow_factory() as uow:
            assert claimed_ids(uow) == ([], [now])
            assert uow.relay_queue.count_in_flight() == 0

    def test_a_failure_without_a_retry_makes_the_event_dead(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 1))

        with uow_factory() as uow:
            uow.deliveries.record_failure(
                event_id, "InvalidEventError: " + "x" * 5000, retry_in_s=None
            )
            uow.commit()

        with uow_factory() as uow:
            [dead] = uow.monitor.dead_events()
            assert claimed_ids(uow) == ([], [])
            assert uow.relay_queue.count_in_flight() == 0
        assert (dead.id, dead.state, dead.dispatches, dead.failures) == (
            event_id,
            EventState.DEAD,
            0,
            1,
        )
        assert dead.last_error is not None
        assert dead.last_error.startswith("InvalidEventError: xxx")
        assert len(dead.last_error) == MAX_ERROR_CHARS

    def test_a_failure_reported_for_a_finished_or_applied_event_is_refused_and_changes_nothing(
        self, uow_factory: UowFactory
    ) -> None:
        [processed, dead, applied, other] = append(
            uow_factory, *(completed(n, n) for n in range(1, 5))
        )
        with uow_factory() as uow:
            process(uow, processed)
            uow.deliveries.record_failure(dead, "first", retry_in_s=None)
            uow.relay_queue.mark_dispatched([applied], LONG_LEASE)
            uow.deliveries.record_applied([applied, other])
            uow.deliveries.finish_pass([applied, other], delivered_id=other)
            uow.commit()

        for event_id, retry_in_s in [(processed, 0.0), (dead, 0.0), (applied, None)]:
            with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(event_id)):
                uow.deliveries.record_failure(event_id, "late", retry_in_s=retry_in_s)
        with uow_factory() as uow, pytest.raises(EventNotFoundError):
            uow.deliveries.record_failure(31337, "never held", retry_in_s=0.0)

        after = [stored(uow_factory, event_id) for event_id in (processed, dead, applied)]
        assert [(event.state, event.failures, event.last_error) for event in after] == [
            (EventState.PROCESSED, 0, None),
            (EventState.DEAD, 1, "first"),
            (EventState.DISPATCHED, 0, None),  # applied, its message still out
        ]
        with uow_factory() as uow:
            assert uow.monitor.health().event_failures == 1

    def test_failures_are_counted_apart_from_dispatches(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 1))

        for _ in range(3):  # three dispatches whose leases simply run out
            with uow_factory() as uow:
                uow.relay_queue.mark_dispatched([event_id], 0.0)
                uow.commit()
        event = stored(uow_factory, event_id)
        assert (event.state, event.dispatches, event.failures) == (EventState.DISPATCHED, 3, 0)

        for n in range(1, 3):
            with uow_factory() as uow:
                uow.deliveries.record_failure(event_id, f"RuntimeError: {n}", retry_in_s=0.0)
                uow.commit()
            event = stored(uow_factory, event_id)
            assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 3, n)

        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([event_id], LONG_LEASE)
            uow.deliveries.record_failure(event_id, "RuntimeError: last", retry_in_s=None)
            uow.commit()
        event = stored(uow_factory, event_id)
        assert (event.state, event.dispatches, event.failures, event.last_error) == (
            EventState.DEAD,
            4,
            3,
            "RuntimeError: last",
        )

        with uow_factory() as uow:
            assert uow.monitor.revive_dead([event_id]) == [event_id]
            uow.commit()
        event = stored(uow_factory, event_id)
        assert (event.state, event.dispatches, event.failures) == (EventState.PENDING, 4, 0)

    def test_a_failure_count_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        [event_id] = append(uow_factory, completed(1, 1))

        with uow_factory() as uow:
            uow.deliveries.record_failure(event_id, "RuntimeError: boom", retry_in_s=0.0)

        event = stored(uow_factory, event_id)
        assert (event.state, event.failures, event.last_error) == (EventState.PENDING, 0, None)

    def test_a_pass_records_only_the_events_not_yet_applied(self, uow_factory: UowFactory) -> None:
        ids = append(uow_factory, completed(1, 5), completed(2, 6), completed(3, 7))
        with uow_factory() as uow:
            assert process(uow, ids[1]) is True
            uow.commit()

        with uow_factory() as uow:
            assert uow.deliveries.record_applied(ids) == [ids[0], ids[2]]
            assert uow.deliveries.record_applied(ids) == []
            uow.deliveries.finish_pass([ids[0], ids[2]], delivered_id=ids[0])
            uow.commit()

        assert {stored(uow_factory, i).state for i in ids} == {EventState.PROCESSED}
        assert all(stored(uow_factory, i).applied for i in ids)

    def test_an_event_applied_while_its_message_is_out_stays_in_flight_until_it_comes_back(
        self,
        uow_factory: UowFactory,
    ) -> None:
        delivered, out, waiting = append(uow_factory, *(completed(i, i) for i in range(1, 4)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([delivered, out], LONG_LEASE)
            uow.commit()

        with uow_factory() as uow:
            assert uow.deliveries.record_applied([delivered, out, waiting]) == [
                delivered,
                out,
                waiting,
            ]
            uow.bars.apply_delta(6, events=3)
            uow.deliveries.finish_pass([delivered, out, waiting], delivered_id=delivered)
            uow.commit()
        with uow_factory() as uow:
            assert (uow.monitor.stats().processed, uow.monitor.stats().in_flight) == (2, 1)

        after = {i: stored(uow_factory, i) for i in (delivered, out, waiting)}
        assert [after[i].state for i in (delivered, out, waiting)] == [
            EventState.PROCESSED,
            EventState.DISPATCHED,  # the broker still holds its message
            EventState.PROCESSED,  # never dispatched: no message to wait for
        ]
        assert all(event.applied for event in after.values())
        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 1
            assert uow.deliveries.lock_waiting(10, exclude_id=delivered) == []
            assert uow.projection_log.applied_sum() == (1 + 2 + 3, 3)  # all three applied
            uow.deliveries.finish_pass([], delivered_id=out)
            uow.commit()

        assert stored(uow_factory, out).state is EventState.PROCESSED
        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 0
            uow.deliveries.finish_pass(
                [], delivered_id=waiting
            )  # settling what is not in flight changes nothing
            assert uow.monitor.stats().processed == 3

    def test_coalescing_locks_unfinished_events_that_never_failed_except_the_one_in_hand(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = append(uow_factory, *(completed(i, i) for i in range(1, 6)))
        with uow_factory() as uow:
            process(uow, ids[0])
            uow.deliveries.record_failure(ids[1], "boom", retry_in_s=0.0)
            uow.relay_queue.mark_dispatched([ids[2]], LONG_LEASE)
            uow.commit()

        with uow_factory() as uow:
            locked = [event.id for event in uow.deliveries.lock_waiting(10, exclude_id=ids[3])]
            assert sorted(locked) == [ids[2], ids[4]]
            assert len(uow.deliveries.lock_waiting(1, exclude_id=ids[3])) == 1

    def test_finishing_a_pass_with_an_event_it_may_not_apply_is_refused(
        self, uow_factory: UowFactory
    ) -> None:
        [dead, processed, waiting] = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            uow.deliveries.record_failure(dead, "boom", retry_in_s=None)
            process(uow, processed)
            uow.commit()

        for illegal in (dead, processed):
            with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(illegal)):
                uow.deliveries.finish_pass([waiting, illegal], delivered_id=waiting)

        states = [stored(uow_factory, i).state for i in (dead, processed, waiting)]
        assert states == [EventState.DEAD, EventState.PROCESSED, EventState.PENDING]

    def test_after_a_prune_a_pruned_event_is_held_nowhere_and_the_kept_one_is_whole(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            with pytest.raises(EventNotFoundError):
                uow.deliveries.lock(ids[0])
            kept = uow.deliveries.lock(ids[2])
            assert (kept.state, kept.applied, kept.event().delta) == (
                EventState.PROCESSED,
                True,
                30,
            )
            assert uow.deliveries.lock_waiting(10, exclude_id=0) == []
            assert uow.deliveries.record_applied([ids[2]]) == []  # the guard still holds it
        with uow_factory() as uow, pytest.raises(EventNotFoundError):
            uow.deliveries.record_failure(ids[1], "late", retry_in_s=0.0)
        with uow_factory() as uow, pytest.raises(IllegalTransitionError, match=str(ids[1])):
            uow.deliveries.finish_pass([ids[1]], delivered_id=ids[1])


class TestDeliveryLedgerInMemory(InMemory, DeliveryLedgerContract):
    pass


class TestDeliveryLedgerSqlite(Sqlite, DeliveryLedgerContract):
    pass


class TestDeliveryLedgerPostgres(Postgres, DeliveryLedgerContract):
    pass
