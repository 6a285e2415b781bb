"""The BarRepository port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from domain.ports import UnitOfWork
from tests.contract.support import (
    BarValues,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_bars,
)


class BarRepositoryContract:
    """Bars, the set-based apply and reset, and the projection's applied total."""

    def test_a_bar_survives_its_round_trip_through_the_repository(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        [bar_id] = add_bars(uow_factory, 7, value=-21)

        with uow_factory() as uow:
            [bar] = uow.bars.mismatched(0, 10)  # read back as a bar off the invariant
            assert (bar.id, bar.weight, bar.value) == (bar_id, 7, -21)
            assert uow.bars.count() == 1
        assert bar_values([bar_id]) == [-21]

    def test_applying_a_delta_changes_every_bar_by_delta_times_weight_and_the_applied_total(
        self,
        uow_factory: UowFactory,
        bar_values: BarValues,
    ) -> None:
        ids = add_bars(uow_factory, 0, 1, 3) + add_bars(uow_factory, 10, value=5)

        with uow_factory() as uow:
            assert uow.bars.apply_delta(4) == 4
            uow.commit()
        with uow_factory() as uow:
            assert uow.bars.apply_delta(-1) == 4
            uow.commit()

        assert bar_values(ids) == [0, 3, 9, 35]
        with uow_factory() as uow:
            assert uow.bars.lock_applied_total() == 3

    def test_a_zero_delta_changes_no_bar(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        ids = add_bars(uow_factory, 2, value=6)

        with uow_factory() as uow:
            assert uow.bars.apply_delta(0) == 0
            uow.commit()

        assert bar_values(ids) == [6]

    def test_an_applied_delta_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        ids = add_bars(uow_factory, 2)

        with uow_factory() as uow:
            uow.bars.apply_delta(50)

        assert bar_values(ids) == [0]
        with uow_factory() as uow:
            assert uow.bars.lock_applied_total() == 0

    def test_a_bar_read_after_apply_delta_in_the_same_unit_of_work_has_its_new_value(
        self,
        uow_factory: UowFactory,
    ) -> None:
        [bar_id] = add_bars(uow_factory, 3)

        def values_off_zero(uow: UnitOfWork) -> list[tuple[int | None, int]]:
            return [(bar.id, bar.value) for bar in uow.bars.mismatched(0, 10)]

        with uow_factory() as uow:
            assert values_off_zero(uow) == []  # its value is 0
            uow.bars.apply_delta(2)
            assert values_off_zero(uow) == [(bar_id, 6)]
            assert uow.bars.mismatched(2, 10) == []
            uow.bars.reset_all(5, 1)
            assert values_off_zero(uow) == [(bar_id, 15)]

    def test_the_applied_total_starts_at_zero_and_can_be_locked(
        self, uow_factory: UowFactory
    ) -> None:
        with uow_factory() as uow:
            assert uow.bars.lock_applied_total() == 0
            uow.bars.apply_delta(9)
            assert uow.bars.lock_applied_total() == 9

    def test_resetting_sets_every_bar_to_weight_times_total(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        ids = add_bars(uow_factory, 0, 2, 5, value=-3)

        with uow_factory() as uow:
            assert uow.bars.reset_all(7, 3) == 3
            uow.commit()

        assert bar_values(ids) == [0, 14, 35]
        with uow_factory() as uow:
            assert uow.bars.lock_applied_total() == 7

    def test_mismatched_lists_the_bars_off_the_invariant_in_id_order_up_to_a_limit(
        self,
        uow_factory: UowFactory,
    ) -> None:
        ids = add_bars(uow_factory, 1, 2, 3, 4, value=6)  # right for total 6 only at weight 1

        with uow_factory() as uow:
            assert [bar.id for bar in uow.bars.mismatched(6, 10)] == ids[1:]
            assert [bar.id for bar in uow.bars.mismatched(6, 2)] == ids[1:3]
            assert [bar.id for bar in uow.bars.mismatched(3, 10)] == [ids[0], ids[2], ids[3]]
            assert uow.bars.mismatched(6, 0) == []


class TestBarRepositoryInMemory(InMemory, BarRepositoryContract):
    pass


class TestBarRepositorySqlite(Sqlite, BarRepositoryContract):
    pass


class TestBarRepositoryPostgres(Postgres, BarRepositoryContract):
    pass
