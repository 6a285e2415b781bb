"""The DeliveryLedger port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import threading
import time

import pytest
from sqlalchemy import text

from domain.delivery import Outcome, settle
from domain.errors import EventNotFoundError, IllegalTransitionError
from domain.outbox import MAX_ERROR_CHARS, EventState, RelayLimits, StoredEvent
from domain.relay import relay_once
from domain.use_cases import create_bars
from infrastructure.bootstrap import Container
from infrastructure.memory import InMemoryDispatcher
from infrastructure.sql.outbox.relay_queue import SqlRelayQueue
from tests.contract.support import (
    LONG_LEASE,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_bars,
    append,
    claimed_ids,
    completed,
    process,
    sequence,
    stored,
    three_applied_two_pruned,
)


class DeliveryLedgerContract:
    """Events applied once every part has passed them, each counted once; the message back;
    waiting for parts without a failure; failures only of an unapplied unfinished event."""

    def test_locking_an_event_reads_it_whole_and_an_unknown_one_is_not_found(
        self, uow_factory: UowFactory
    ) -> None:
        [event_id] = append(uow_factory, completed(1, 5))
        with uow_factory() as uow:
            sequence(uow, event_id)
            uow.commit()

        with uow_factory() as uow:
            event = uow.deliveries.lock(event_id)
            with pytest.raises(EventNotFoundError):
                uow.deliveries.lock(31337)
        assert (event.id, event.state, event.applied, event.position) == (
            event_id,
            EventState.PENDING,
            False,
            1,
        )
        assert event.event() == completed(1, 5)

    def test_applying_through_a_position_stamps_the_events_up_to_it_once_each(
        self, uow_factory: UowFactory
    ) -> None:
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 5)))
        with uow_factory() as uow:
            sequence(uow, *ids[:3])
            uow.commit()

        with uow_factory() as uow:
            assert uow.deliveries.apply_through(2) == 2
            assert uow.deliveries.apply_through(2) == 0
            assert uow.deliveries.apply_through(1) == 0  # behind what is applied: nothing
            uow.commit()
        with uow_factory() as uow:
            assert uow.parts.projection().applied == 2
            assert uow.deliveries.apply_through(3) == 1
            uow.commit()

        after = [stored(uow_factory, event_id) for event_id in ids]
        assert [(e.state, e.applied, e.last_error) for e in after] == [
            (EventState.PROCESSED, True, None),  # never dispatched: no message to wait for
            (EventState.PROCESSED, True, None),
            (EventState.PROCESSED, True, None),
            (EventState.PENDING, False, None),  # not sequenced: no part has passed it
        ]
        with uow_factory() as uow:
            assert uow.parts.projection().applied == 3
            assert uow.monitor.health().events_applied == 3
            assert uow.monitor.stats().processed == 3

    def test_applying_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        [event_id] = append(uow_factory, completed(1, 5))
        with uow_factory() as uow:
            sequence(uow, event_id)
            uow.commit()

        with uow_factory() as uow:
            assert uow.deliveries.apply_through(1) == 1

        event = stored(uow_factory, event_id)
        assert (event.state, event.applied) == (EventState.PENDING, False)
        with uow_factory() as uow:
            assert uow.parts.projection().applied == 0
            assert uow.monitor.health().events_applied == 0
            assert process(uow, event_id) is True
            assert process(uow, event_id) is False
            uow.commit()
        with uow_factory() as uow:
            assert process(uow, event_id) is False
            assert uow.monitor.health().events_applied == 1

    def test_an_event_applied_while_its_message_is_out_stays_in_flight_until_it_comes_back(
        self, uow_factory: UowFactory
    ) -> None:
        delivered, out, waiting = append(uow_factory, *(completed(i, i) for i in range(1, 4)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([delivered, out], LONG_LEASE)
            sequence(uow, delivered, out, waiting)
            uow.commit()

        with uow_factory() as uow:
            assert uow.deliveries.apply_through(3) == 3
            uow.deliveries.message_back(delivered)
            uow.commit()

        after = {i: stored(uow_factory, i) for i in (delivered, out, waiting)}
        assert [after[i].state for i in (delivered, out, waiting)] == [
            EventState.PROCESSED,
            EventState.DISPATCHED,  # the broker still holds its message
            EventState.PROCESSED,  # never dispatched: no message to wait for
        ]
        assert all(event.applied for event in after.values())
        with uow_factory() as uow:
            assert (uow.monitor.stats().processed, uow.monitor.stats().in_flight) == (2, 1)
            assert uow.relay_queue.count_in_flight() == 1
            uow.deliveries.message_back(out)
            uow.deliveries.message_back(waiting)  # finished already: nothing changes
            uow.commit()

        assert [stored(uow_factory, i).state for i in (delivered, out, waiting)] == [
            EventState.PROCESSED
        ] * 3
        with uow_factory() as uow:
            assert uow.relay_queue.count_in_flight() == 0
            assert uow.monitor.stats().processed == 3

    def test_a_message_back_of_an_unapplied_event_changes_nothing(
        self, uow_factory: UowFactory
    ) -> None:
        [out, pending] = append(uow_factory, completed(1, 1), completed(2, 2))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([out], LONG_LEASE)
            sequence(uow, out)
            uow.deliveries.message_back(out)
            uow.deliveries.message_back(pending)
            uow.commit()

        assert [
            (stored(uow_factory, i).state, stored(uow_factory, i).applied) for i in (out, pending)
        ] == [
            (EventState.DISPATCHED, False),
            (EventState.PENDING, False),
        ]

    def test_waiting_for_parts_makes_an_unapplied_event_pending_later_and_counts_no_failure(
        self, uow_factory: UowFactory
    ) -> None:
        [later, now, applied] = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([later, now, applied], LONG_LEASE)
            sequence(uow, applied, later, now)
            uow.deliveries.apply_through(1)  # `applied` only
            uow.deliveries.wait_for_parts(later, LONG_LEASE)
            uow.deliveries.wait_for_parts(now, 0.0)
            uow.deliveries.wait_for_parts(applied, 0.0)  # applied: its message settles it
            uow.commit()
        time.sleep(0.005)

        after = {i: stored(uow_factory, i) for i in (later, now, applied)}
        assert [(e.state, e.dispatches, e.failures, e.last_error) for e in after.values()] == [
            (EventState.PENDING, 1, 0, None),
            (EventState.PENDING, 1, 0, None),
            (EventState.DISPATCHED, 1, 0, None),
        ]
        assert [after[i].position for i in (applied, later, now)] == [1, 2, 3]  # kept
        with uow_factory() as uow:
            assert claimed_ids(uow) == ([], [now])
            assert uow.relay_queue.count_in_flight() == 1
            assert uow.monitor.health().event_failures == 0

    def test_reopening_after_a_position_unapplies_the_events_after_it(
        self, uow_factory: UowFactory
    ) -> None:
        # As a rebuild does: its parts are back at their baselines (position 2 here).
        ids = append(uow_factory, *(completed(n, n) for n in range(1, 6)))
        with uow_factory() as uow:
            sequence(uow, *ids[:2])
            uow.commit()
        add_bars(uow_factory, 1)  # its part, and its bar's baseline, at position 2
        with uow_factory() as uow:
            sequence(uow, *ids[2:4])
            uow.relay_queue.mark_dispatched([ids[3]], LONG_LEASE)
            uow.deliveries.apply_through(4)
            uow.deliveries.message_back(ids[0])
            uow.deliveries.record_failure(ids[4], "InvalidEventError: unreadable", None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.start_rebuild("tests.recalculations:digest") == 2
            assert uow.deliveries.reopen_after(2) == 2
            uow.commit()

        after = [stored(uow_factory, event_id) for event_id in ids]
        assert [(e.state, e.applied, e.position) for e in after] == [
            (EventState.PROCESSED, True, 1),
            (EventState.PROCESSED, True, 2),
            (EventState.PENDING, False, 3),  # due again: its message drives the replay
            (EventState.DISPATCHED, False, 4),  # its message is still out
            (EventState.DEAD, False, None),  # no part waits for a dead event
        ]
        with uow_factory() as uow:
            assert claimed_ids(uow) == ([], [ids[2]])
            assert uow.parts.projection().applied == 2
            # Applied again, the replayed events are not counted again.
            assert uow.deliveries.apply_through(4) == 2
            assert uow.monitor.health().events_applied == 4

    def test_a_failure_with_a_retry_delay_makes_the_event_pending_later_and_counts_a_failure(
        self, uow_factory: UowFactory
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
            assert uow.monitor.health().event_failures == 2

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
            assert (uow.monitor.health().event_failures, uow.monitor.health().events_dead) == (1, 1)
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
        [processed, dead, applied] = append(uow_factory, *(completed(n, n) for n in range(1, 4)))
        with uow_factory() as uow:
            process(uow, processed)
            uow.deliveries.record_failure(dead, "first", retry_in_s=None)
            uow.relay_queue.mark_dispatched([applied], LONG_LEASE)
            sequence(uow, applied)
            uow.deliveries.apply_through(2)
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
        with uow_factory() as uow:
            assert uow.monitor.health().event_failures == 0

    def test_after_a_prune_a_pruned_event_is_held_nowhere_and_the_kept_one_is_whole(
        self, uow_factory: UowFactory
    ) -> None:
        ids = three_applied_two_pruned(uow_factory)

        with uow_factory() as uow:
            with pytest.raises(EventNotFoundError):
                uow.deliveries.lock(ids[0])
            kept = uow.deliveries.lock(ids[2])
            assert (kept.state, kept.applied, kept.position, kept.event().delta) == (
                EventState.PROCESSED,
                True,
                3,
                30,
            )
            assert uow.deliveries.apply_through(3) == 0  # applied already: counted once
            uow.deliveries.message_back(ids[0])  # a pruned event's message: nothing to do
            uow.deliveries.wait_for_parts(ids[1], 0.0)
            assert uow.monitor.health().events_applied == 3
        with uow_factory() as uow, pytest.raises(EventNotFoundError):
            uow.deliveries.record_failure(ids[1], "late", retry_in_s=0.0)


class SettlingBesideTheRelayContract:
    """A delivery settles while the relay sequences: each takes the projection's row and some
    events' rows, and neither may wait for the other forever."""

    def test_a_delivery_settling_while_the_relay_claims_and_dispatches_does_not_deadlock(
        self, uow_factory: UowFactory, sql_container: Container, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        create_bars(uow_factory(), weight=1)  # a part, which has yet to pass both events
        [waiting, new] = append(uow_factory, completed(1, 1), completed(2, 2))
        with uow_factory() as uow:  # sequenced, then pending again while its parts catch up
            uow.relay_queue.mark_dispatched([waiting], LONG_LEASE)
            sequence(uow, waiting)
            uow.deliveries.wait_for_parts(waiting, 0.0)
            uow.commit()
        time.sleep(0.005)
        errors: list[Exception] = []

        def settle_waiting() -> None:
            try:
                settle(uow_factory(), waiting)
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        settler = threading.Thread(target=settle_waiting)
        claim = SqlRelayQueue.claim_pending

        def claim_then_a_delivery_settles(queue: SqlRelayQueue, limit: int) -> list[StoredEvent]:
            claimed = claim(queue, limit)
            settler.start()
            _wait_for_a_lock_wait(sql_container)  # the delivery waits for a claimed event
            return claimed

        monkeypatch.setattr(SqlRelayQueue, "claim_pending", claim_then_a_delivery_settles)
        try:
            report = relay_once(uow_factory(), InMemoryDispatcher(), RelayLimits())
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
            report = None
        settler.join(60)

        assert errors == []
        assert report is not None
        assert report.dispatched == 2
        assert [stored(uow_factory, e).position for e in (waiting, new)] == [1, 2]

    def test_a_delivery_settling_while_the_relay_sequences_does_not_deadlock(
        self, uow_factory: UowFactory, sql_container: Container, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # Out before its database gave positions, and back: pending, with none yet. A second
        # message of it settles while the relay claims it to sequence it.
        [event_id] = append(uow_factory, completed(1, 1))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([event_id], LONG_LEASE)
            uow.deliveries.wait_for_parts(event_id, 0.0)
            uow.commit()
        time.sleep(0.005)
        errors: list[Exception] = []
        outcomes: list[Outcome] = []

        def settle_it() -> None:
            try:
                outcomes.append(settle(uow_factory(), event_id))
            except Exception as error:  # noqa: BLE001 - reported below
                errors.append(error)

        settler = threading.Thread(target=settle_it)
        claim_unsequenced, claim_pending = (
            SqlRelayQueue.claim_unsequenced,
            SqlRelayQueue.claim_pending,
        )

        def claim_then_a_delivery_settles(queue: SqlRelayQueue, limit: int) -> list[StoredEvent]:
            claimed = claim_unsequenced(queue, limit)
            settler.start()
            _wait_for_a_lock_wait(sql_container)  # the delivery waits for what the relay holds
            return claimed

        def once_it_settled(queue: SqlRelayQueue, limit: int) -> list[StoredEvent]:
            settler.join(60)  # so that what the batch claims does not depend on timing
            return claim_pending(queue, limit)

        monkeypatch.setattr(SqlRelayQueue, "claim_unsequenced", claim_then_a_delivery_settles)
        monkeypatch.setattr(SqlRelayQueue, "claim_pending", once_it_settled)
        try:
            report = relay_once(uow_factory(), InMemoryDispatcher(), RelayLimits())
        except Exception as error:  # noqa: BLE001 - reported below
            errors.append(error)
            report = None
        settler.join(60)

        assert errors == []
        assert outcomes == [Outcome.WAITING]
        assert report is not None
        assert report.dispatched == 1
        event = stored(uow_factory, event_id)
        assert (event.position, event.state, event.dispatches) == (1, EventState.DISPATCHED, 2)


def _wait_for_a_lock_wait(container: Container) -> None:
    """Until a session of this database waits for a lock (at most 30 s)."""
    query = text(
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE datname = current_database() AND wait_event_type = 'Lock'"
    )
    for _ in range(3_000):
        with container.engine.connect() as connection:
            if connection.execute(query).scalar_one():
                return
        time.sleep(0.01)
    raise AssertionError("no session waited for a lock")


class TestDeliveryLedgerInMemory(InMemory, DeliveryLedgerContract):
    pass


class TestDeliveryLedgerSqlite(Sqlite, DeliveryLedgerContract):
    pass


class TestDeliveryLedgerPostgres(Postgres, DeliveryLedgerContract, SettlingBesideTheRelayContract):
    pass
