"""The PartLedger port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

import time

from domain.outbox import MAX_ERROR_CHARS
from domain.parts import Blockers, Part, PartState, PartStats, Projection
from domain.recalculation import EXAMPLE_RECALCULATION
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
    part_of,
    sequence,
)

OTHER_RECALCULATION = "tests.recalculations:digest"


def sequenced(uow_factory: UowFactory, *deltas: int) -> list[int]:
    """Events of these deltas, given the next positions after the head: their ids."""
    ids = append(uow_factory, *(completed(n + 1, delta) for n, delta in enumerate(deltas)))
    with uow_factory() as uow:
        sequence(uow, *ids)
        uow.commit()
    return ids


def new_part(uow_factory: UowFactory) -> Part:
    """A part of its own (one bar, full), at the head."""
    [bar_id] = add_bars(uow_factory, 1, part_size=1)
    return part_of(uow_factory, bar_id)


def part(uow_factory: UowFactory, part_id: int) -> Part:
    with uow_factory() as uow:
        return uow.parts.lock(part_id)


def three_parts_at_0_1_2(uow_factory: UowFactory) -> list[Part]:
    """Parts at positions 0, 1 and 2, the head at 3; the events' deltas 3, 4 and 5."""
    parts = []
    for delta in (3, 4, 5):
        parts.append(new_part(uow_factory))
        sequenced(uow_factory, delta)
    return parts


class PartLedgerContract:
    """Parts that take bars until full, passes that take one part each, how far each has
    applied, their failures, and a rebuild that takes them back to their baselines."""

    def test_with_no_part_the_projection_is_at_the_start_with_the_example_recalculation(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            assert uow.parts.projection() == Projection(0, 0, 0, EXAMPLE_RECALCULATION)
            assert uow.parts.stats() == PartStats(0, 0, 0, 0, lowest_position=0)
            assert uow.parts.lowest_position() == 0
            assert (uow.parts.parts(), uow.parts.dead_parts()) == ([], [])
            assert uow.parts.claim(10) is None
            assert uow.parts.blockers(10) == Blockers(0, 0, 0)

    def test_with_no_part_a_recalculation_is_adopted_as_the_bars(
        self, uow_factory: UowFactory
    ) -> None:
        sequenced(uow_factory, 3)

        with uow_factory() as uow:
            assert uow.parts.adopt(OTHER_RECALCULATION) is True
            assert uow.parts.projection() == Projection(1, 3, 0, OTHER_RECALCULATION)
            assert uow.parts.adopt(OTHER_RECALCULATION) is True  # the one recorded already
            uow.commit()
        with uow_factory() as uow:
            assert uow.parts.projection().recalculation == OTHER_RECALCULATION
            assert uow.parts.adopt(EXAMPLE_RECALCULATION) is True  # still no part: again
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.projection() == Projection(1, 3, 0, EXAMPLE_RECALCULATION)

    def test_once_a_part_exists_a_recalculation_is_adopted_only_if_it_is_the_bars(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            uow.parts.lock_open(5)  # a part of this very transaction counts too
            assert uow.parts.adopt(OTHER_RECALCULATION) is False
            assert uow.parts.adopt(EXAMPLE_RECALCULATION) is True
            uow.commit()
        with uow_factory() as uow:
            assert uow.parts.adopt(OTHER_RECALCULATION) is False
            uow.parts.start_rebuild(OTHER_RECALCULATION)  # what changes it once parts exist
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.adopt(EXAMPLE_RECALCULATION) is False
            assert uow.parts.adopt(OTHER_RECALCULATION) is True
            uow.commit()
        with uow_factory() as uow:
            assert uow.parts.projection().recalculation == OTHER_RECALCULATION

    def test_an_adoption_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        with uow_factory() as uow:
            assert uow.parts.adopt(OTHER_RECALCULATION) is True

        with uow_factory() as uow:
            assert uow.parts.projection().recalculation == EXAMPLE_RECALCULATION

    def test_a_new_bar_joins_the_last_part_until_it_is_full_then_a_new_one_at_the_head(
        self, uow_factory: UowFactory
    ) -> None:
        sequenced(uow_factory, 3, 4)

        opened = []
        for _ in range(2):
            with uow_factory() as uow:
                opened.append(uow.parts.lock_open(2))
                uow.parts.added_bars(opened[-1].id, 1)
                uow.commit()
        sequenced(uow_factory, 5)
        with uow_factory() as uow:
            full = uow.parts.lock(opened[0].id)
            opened.append(uow.parts.lock_open(2))
            uow.parts.added_bars(opened[-1].id, 2)
            uow.commit()

        first, again, new = opened
        assert first == Part(first.id, 2, 7, bars=0, baseline_position=2)
        assert again == Part(first.id, 2, 7, bars=1, baseline_position=2)
        assert full.bars == 2
        assert new == Part(new.id, 3, 12, bars=0, baseline_position=3)
        assert new.id > first.id
        with uow_factory() as uow:
            assert [(p.id, p.bars) for p in uow.parts.parts()] == [(first.id, 2), (new.id, 2)]

    def test_a_part_opened_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            uow.parts.added_bars(uow.parts.lock_open(5).id, 1)

        with uow_factory() as uow:
            assert uow.parts.parts() == []

    def test_a_pass_claims_the_lowest_part_behind_the_head_then_the_next(
        self, uow_factory: UowFactory
    ) -> None:
        low, middle, high = three_parts_at_0_1_2(uow_factory)

        with uow_factory() as uow:
            assert uow.parts.claim(3) == low
            assert uow.parts.claim(1) == low
            assert uow.parts.claim(0) is None  # none is behind position 0
            uow.parts.advance(low.id, 3, 12)
            uow.commit()
        with uow_factory() as uow:
            assert uow.parts.claim(3) == middle
            uow.parts.advance(middle.id, 3, 9)
            assert uow.parts.claim(3) == high
            uow.parts.advance(high.id, 3, 5)
            assert uow.parts.claim(3) is None  # every part is at the head
            uow.commit()

        after = [part(uow_factory, each.id) for each in (low, middle, high)]
        assert [(each.position, each.applied_total) for each in after] == [(3, 3 + 4 + 5)] * 3

    def test_a_pass_is_due_while_a_ready_due_part_is_behind_the_head(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            assert uow.parts.pass_due() is False  # no part
        behind, dead = new_part(uow_factory), new_part(uow_factory)
        with uow_factory() as uow:
            assert uow.parts.pass_due() is False  # every part at the head
        sequenced(uow_factory, 3)
        with uow_factory() as uow:
            assert uow.parts.pass_due() is True
            uow.parts.record_failure(dead.id, "RuntimeError: dead", None)
            uow.parts.record_failure(behind.id, "RuntimeError: later", LONG_LEASE)
            assert uow.parts.pass_due() is False  # one dead, one backing off
            uow.parts.revive_dead([dead.id])
            assert uow.parts.pass_due() is True
            uow.parts.advance(dead.id, 1, 3)
            assert uow.parts.pass_due() is False

    def test_events_after_a_position_come_in_position_order_up_to_a_limit(
        self, uow_factory: UowFactory
    ) -> None:
        ids = append(uow_factory, completed(1, 1), completed(2, 2), completed(3, 3))
        with uow_factory() as uow:
            sequence(uow, ids[2], ids[0])
            uow.commit()

        with uow_factory() as uow:
            events = uow.parts.events_after(0, 10)
            assert [(e.id, e.position) for e in events] == [(ids[2], 1), (ids[0], 2)]
            assert [e.id for e in uow.parts.events_after(1, 10)] == [ids[0]]
            assert [e.id for e in uow.parts.events_after(0, 1)] == [ids[2]]
            assert uow.parts.events_after(2, 10) == []  # the unsequenced one is not in order
        assert [e.event() for e in events] == [completed(3, 3), completed(1, 1)]

    def test_advancing_moves_the_position_adds_the_total_and_clears_the_failures(
        self, uow_factory: UowFactory
    ) -> None:
        passed = new_part(uow_factory)
        sequenced(uow_factory, 3, 4)
        with uow_factory() as uow:
            assert uow.parts.record_failure(passed.id, "RuntimeError: one", 0.0) == 1
            assert uow.parts.record_failure(passed.id, "RuntimeError: two", 0.0) == 2
            uow.commit()
        assert (part(uow_factory, passed.id).failures, part(uow_factory, passed.id).last_error) == (
            2,
            "RuntimeError: two",
        )

        with uow_factory() as uow:
            uow.parts.advance(passed.id, 2, 7)
            uow.commit()

        assert part(uow_factory, passed.id) == Part(passed.id, 2, 7, bars=1)
        with uow_factory() as uow:
            assert uow.parts.stats() == PartStats(1, 0, 0, 0, lowest_position=2)
            assert uow.parts.lowest_position() == 2

    def test_an_advance_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        passed = new_part(uow_factory)
        sequenced(uow_factory, 3)

        with uow_factory() as uow:
            uow.parts.advance(passed.id, 1, 3)

        assert part(uow_factory, passed.id) == passed
        with uow_factory() as uow:
            assert uow.parts.claim(1) == passed

    def test_a_failed_part_backs_off_and_is_claimed_again_once_due(
        self, uow_factory: UowFactory
    ) -> None:
        later, soon = new_part(uow_factory), new_part(uow_factory)
        sequenced(uow_factory, 3)

        with uow_factory() as uow:
            error = "RuntimeError: " + "x" * 5000
            assert uow.parts.record_failure(later.id, error, LONG_LEASE) == 1
            assert uow.parts.record_failure(soon.id, "RuntimeError: soon", 0.0) == 1
            uow.commit()
        time.sleep(0.005)

        with uow_factory() as uow:
            assert uow.parts.claim(1) == Part(
                soon.id, 0, 0, 1, failures=1, last_error="RuntimeError: soon"
            )
            uow.parts.advance(soon.id, 1, 3)
            assert uow.parts.claim(1) is None  # the other backs off
            assert uow.parts.blockers(1) == Blockers(busy=0, backing_off=1, dead=0)
            assert uow.parts.stats() == PartStats(2, 1, 0, 0, lowest_position=0)
            assert uow.parts.lowest_position() == 0
            backing_off = uow.parts.lock(later.id)
        assert (backing_off.state, backing_off.failures) == (PartState.READY, 1)
        assert backing_off.last_error is not None
        assert backing_off.last_error.startswith("RuntimeError: xxx")
        assert len(backing_off.last_error) == MAX_ERROR_CHARS

    def test_a_failure_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        failed = new_part(uow_factory)
        sequenced(uow_factory, 3)

        with uow_factory() as uow:
            uow.parts.record_failure(failed.id, "RuntimeError: boom", None)

        assert part(uow_factory, failed.id) == failed
        with uow_factory() as uow:
            assert uow.parts.claim(1) == failed
            assert uow.monitor.health().part_failures == 0

    def test_every_failed_pass_counts_in_the_part_failures_and_none_as_an_events(
        self, uow_factory: UowFactory
    ) -> None:
        retried, dead = new_part(uow_factory), new_part(uow_factory)
        sequenced(uow_factory, 3)
        with uow_factory() as uow:
            uow.parts.record_failure(retried.id, "RuntimeError: one", 0.0)
            uow.parts.record_failure(dead.id, "RuntimeError: dead", None)
            uow.commit()

        with uow_factory() as uow:
            uow.parts.record_failure(retried.id, "RuntimeError: two", 0.0)
            uow.parts.advance(retried.id, 1, 3)  # clears the part's failures, not the count
            uow.commit()

        with uow_factory() as uow:
            health = uow.monitor.health()
            assert (health.part_failures, health.event_failures, health.events_dead) == (3, 0, 0)
            assert [p.failures for p in uow.parts.parts()] == [0, 1]

    def test_a_part_without_a_retry_is_dead_and_waits_for_an_operator(
        self, uow_factory: UowFactory
    ) -> None:
        dead, alive = new_part(uow_factory), new_part(uow_factory)
        sequenced(uow_factory, 3)

        with uow_factory() as uow:
            assert uow.parts.record_failure(dead.id, "RuntimeError: one", 0.0) == 1
            assert uow.parts.record_failure(dead.id, "RuntimeError: last", None) == 2
            uow.commit()
        time.sleep(0.005)

        with uow_factory() as uow:
            assert uow.parts.dead_parts() == [
                Part(dead.id, 0, 0, 1, PartState.DEAD, 2, "RuntimeError: last")
            ]
            assert uow.parts.claim(1) == alive  # never the dead one, due or not
            uow.parts.advance(alive.id, 1, 3)
            assert uow.parts.claim(1) is None
            assert uow.parts.blockers(1) == Blockers(busy=0, backing_off=0, dead=1)
            assert uow.parts.stats() == PartStats(2, 1, 1, 0, lowest_position=0)
            assert uow.parts.lowest_position() == 0

    def test_blockers_are_the_parts_below_a_position_by_what_they_wait_for(
        self, uow_factory: UowFactory
    ) -> None:
        ready, backing_off, dead = three_parts_at_0_1_2(uow_factory)
        with uow_factory() as uow:
            uow.parts.record_failure(backing_off.id, "RuntimeError: later", LONG_LEASE)
            uow.parts.record_failure(dead.id, "RuntimeError: dead", None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.blockers(0) == Blockers(0, 0, 0)
            assert uow.parts.blockers(0) == Blockers(0, 0, 0)
            assert uow.parts.blockers(1) == Blockers(busy=1, backing_off=0, dead=0)
            assert uow.parts.blockers(2) == Blockers(busy=1, backing_off=1, dead=0)
            assert uow.parts.blockers(3) == Blockers(busy=1, backing_off=1, dead=1)
            assert uow.parts.stats() == PartStats(3, 3, 1, 0, lowest_position=0)
            assert uow.parts.lowest_position() == 0
            assert uow.parts.claim(3) == ready  # the one a pass takes: due and ready

    def test_reviving_dead_parts_makes_them_due_and_wakes_the_events_parked_on_them(
        self, uow_factory: UowFactory
    ) -> None:
        dead, other = new_part(uow_factory), new_part(uow_factory)
        [parked, failed] = append(uow_factory, completed(1, 3), completed(2, 4))
        with uow_factory() as uow:
            uow.relay_queue.mark_dispatched([parked], LONG_LEASE)
            sequence(uow, parked)
            uow.deliveries.wait_for_parts(parked, LONG_LEASE)  # parked while its part is dead
            uow.deliveries.record_failure(failed, "RuntimeError: boom", LONG_LEASE)
            uow.parts.record_failure(dead.id, "RuntimeError: dead", None)
            uow.parts.record_failure(other.id, "RuntimeError: later", LONG_LEASE)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.revive_dead([other.id]) == []  # not dead: left as it is
            assert claimed_ids(uow) == ([], [])
        with uow_factory() as uow:
            assert uow.parts.revive_dead(None) == [dead.id]
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.dead_parts() == []
            revived = uow.parts.lock(dead.id)
            assert (revived.state, revived.failures) == (PartState.READY, 0)
            assert uow.parts.claim(1) == revived
            # The parked event is due now, its message to drive the part on; an event that
            # failed on its own keeps its backoff.
            assert claimed_ids(uow) == ([], [parked])
            assert uow.parts.lock(other.id).failures == 1

    def test_reviving_named_parts_revives_only_those_that_are_dead(
        self, uow_factory: UowFactory
    ) -> None:
        first, second, alive = (new_part(uow_factory) for _ in range(3))
        with uow_factory() as uow:
            for dead in (first, second):
                uow.parts.record_failure(dead.id, "RuntimeError: dead", None)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.revive_dead([second.id, alive.id, 999]) == [second.id]
            uow.commit()

        with uow_factory() as uow:
            assert [p.id for p in uow.parts.dead_parts()] == [first.id]
            assert uow.parts.revive_dead([]) == []

    def test_a_baseline_set_at_a_parts_position_is_what_a_rebuild_takes_it_back_to(
        self, uow_factory: UowFactory
    ) -> None:
        rebuilt = new_part(uow_factory)
        sequenced(uow_factory, 3, 4)
        with uow_factory() as uow:
            uow.parts.advance(rebuilt.id, 2, 7)
            uow.parts.set_baseline(rebuilt.id)
            uow.commit()
        sequenced(uow_factory, 5)
        with uow_factory() as uow:
            uow.parts.advance(rebuilt.id, 3, 5)
            uow.deliveries.apply_through(3)
            uow.commit()
        assert part(uow_factory, rebuilt.id).baseline_position == 2

        with uow_factory() as uow:
            assert uow.parts.start_rebuild(EXAMPLE_RECALCULATION) == 2
            uow.commit()

        assert part(uow_factory, rebuilt.id) == Part(
            rebuilt.id, 2, 7, bars=1, rebuilding=True, baseline_position=2
        )
        with uow_factory() as uow:
            assert uow.parts.projection() == Projection(3, 12, 2, EXAMPLE_RECALCULATION)

    def test_a_rebuild_takes_every_part_back_to_its_baseline_ready_and_the_projection_with_it(
        self, uow_factory: UowFactory
    ) -> None:
        low = new_part(uow_factory)  # its baseline at 0
        sequenced(uow_factory, 3, 4)
        high = new_part(uow_factory)  # its baseline at 2, with a total of 7
        sequenced(uow_factory, 5)
        with uow_factory() as uow:
            uow.parts.advance(low.id, 3, 12)
            uow.parts.advance(high.id, 3, 5)
            uow.parts.record_failure(high.id, "RuntimeError: dead", None)
            uow.deliveries.apply_through(3)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.start_rebuild(OTHER_RECALCULATION) == 0
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.parts() == [
                Part(low.id, 0, 0, 1, rebuilding=True),
                Part(
                    high.id,
                    2,
                    7,
                    1,
                    failures=0,
                    last_error="RuntimeError: dead",
                    rebuilding=True,
                    baseline_position=2,
                ),
            ]
            assert uow.parts.projection() == Projection(3, 12, 0, OTHER_RECALCULATION)
            assert uow.parts.stats() == PartStats(2, 2, 0, 2, lowest_position=0)
            assert uow.parts.lowest_position() == 0
            assert uow.parts.blockers(1) == Blockers(busy=2, backing_off=0, dead=0)
            # Rebuilding parts are claimed, lowest first, even one at the head.
            assert uow.parts.claim(3) == uow.parts.lock(low.id)
            uow.parts.advance(low.id, 3, 12)
            assert uow.parts.claim(3) == uow.parts.lock(high.id)
            uow.parts.advance(high.id, 3, 5)
            assert uow.parts.claim(3) is None
            assert uow.parts.stats() == PartStats(2, 0, 0, 0, lowest_position=3)
            assert uow.parts.lowest_position() == 3

    def test_a_rebuild_of_a_part_at_the_head_claims_it_at_the_head(
        self, uow_factory: UowFactory
    ) -> None:
        sequenced(uow_factory, 3)
        at_head = new_part(uow_factory)

        with uow_factory() as uow:
            assert uow.parts.claim(1) is None
            assert uow.parts.start_rebuild(EXAMPLE_RECALCULATION) == 1
            assert uow.parts.claim(1) == Part(
                at_head.id, 1, 3, 1, rebuilding=True, baseline_position=1
            )

    def test_a_rebuild_with_no_part_is_at_the_head_and_records_the_recalculation(
        self, uow_factory: UowFactory
    ) -> None:
        ids = sequenced(uow_factory, 3, 4)
        with uow_factory() as uow:
            uow.deliveries.apply_through(2)
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.start_rebuild(OTHER_RECALCULATION) == 2
            uow.commit()

        with uow_factory() as uow:
            assert uow.parts.projection() == Projection(2, 7, 2, OTHER_RECALCULATION)
            assert all(uow.deliveries.lock(event_id).applied for event_id in ids)

    def test_a_rebuild_is_discarded_with_its_unit_of_work(self, uow_factory: UowFactory) -> None:
        rebuilt = new_part(uow_factory)
        sequenced(uow_factory, 3)
        with uow_factory() as uow:
            uow.parts.advance(rebuilt.id, 1, 3)
            uow.deliveries.apply_through(1)
            uow.commit()

        with uow_factory() as uow:
            uow.parts.start_rebuild(OTHER_RECALCULATION)

        with uow_factory() as uow:
            assert uow.parts.projection() == Projection(1, 3, 1, EXAMPLE_RECALCULATION)
            assert uow.parts.parts() == [Part(rebuilt.id, 1, 3, 1)]


class ClaimSkipsLockedPartsContract:
    """Passes on several connections at once: each takes a part no other pass holds."""

    def test_a_claim_skips_a_part_another_transaction_holds(self, uow_factory: UowFactory) -> None:
        low, middle, high = three_parts_at_0_1_2(uow_factory)

        with uow_factory() as first, uow_factory() as second, uow_factory() as third:
            assert first.parts.claim(3) == low
            assert second.parts.claim(3) == middle
            assert third.parts.claim(3) == high
            with uow_factory() as fourth:
                assert fourth.parts.claim(3) is None

        with uow_factory() as uow:  # released with their transactions
            assert uow.parts.claim(3) == low

    def test_a_part_locked_for_verify_or_a_prune_is_skipped_by_passes(
        self, uow_factory: UowFactory
    ) -> None:
        low, middle, _ = three_parts_at_0_1_2(uow_factory)

        with uow_factory() as holder, uow_factory() as passing:
            holder.parts.lock(low.id)
            assert passing.parts.claim(3) == middle


class TestPartLedgerInMemory(InMemory, PartLedgerContract):
    pass


class TestPartLedgerSqlite(Sqlite, PartLedgerContract):
    pass


class TestPartLedgerPostgres(Postgres, PartLedgerContract, ClaimSkipsLockedPartsContract):
    pass
