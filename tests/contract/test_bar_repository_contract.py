"""The BarRepository port's contract, held by every adapter: in memory, SQLite, PostgreSQL."""

from __future__ import annotations

from typing import Any

from domain.bar import Bar
from domain.parts import BarAt
from tests.contract.support import (
    BarValues,
    InMemory,
    Postgres,
    Sqlite,
    UowFactory,
    add_bars,
    append,
    completed,
    part_of,
    sequence,
)


def seen(bars: list[BarAt]) -> list[tuple[Any, ...]]:
    """Bars as a test compares them: id, fields, position."""
    return [(each.bar.id, each.bar.weight, each.bar.value, each.position) for each in bars]


def sequenced(uow_factory: UowFactory, *deltas: int) -> list[int]:
    """Events of these deltas, given positions 1, 2, ... after the head: their ids."""
    ids = append(uow_factory, *(completed(n + 1, delta) for n, delta in enumerate(deltas)))
    with uow_factory() as uow:
        sequence(uow, *ids)
        uow.commit()
    return ids


class BarRepositoryContract:
    """Bars part by part, as stored and as their baselines hold them; written back when changed."""

    def test_a_bar_joins_its_part_at_the_parts_position_as_created_and_as_its_baseline(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        sequenced(uow_factory, 3, 4)  # the head is at 2: a new part starts there

        with uow_factory() as uow:
            part = uow.parts.lock_open(10)
            bar = Bar(7, value=-21)
            uow.bars.add(bar, part)
            uow.parts.added_bars(part.id, 1)
            uow.commit()

        assert part.position == 2
        with uow_factory() as uow:
            assert seen(uow.bars.of_part(part.id)) == [(bar.id, 7, -21, 2)]
            assert seen(uow.bars.baselines_of_part(part.id)) == [(bar.id, 7, -21, 2)]
            assert uow.bars.count() == 1
        assert bar_values([bar.id]) == [-21]  # type: ignore[list-item]

    def test_a_part_lists_its_own_bars_only_in_id_order(self, uow_factory: UowFactory) -> None:
        ids = add_bars(uow_factory, 1, 2, 3, part_size=2)
        first, second = part_of(uow_factory, ids[0]), part_of(uow_factory, ids[2])

        with uow_factory() as uow:
            assert [each.bar.id for each in uow.bars.of_part(first.id)] == ids[:2]
            assert [each.bar.id for each in uow.bars.of_part(second.id)] == ids[2:]
            assert [each.bar.id for each in uow.bars.baselines_of_part(second.id)] == ids[2:]
            assert uow.bars.of_part(second.id + 100) == []
            assert uow.bars.count() == 3
        assert first.id != second.id

    def test_saving_writes_back_the_bars_changed_since_they_were_read_and_only_those(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        ids = add_bars(uow_factory, 1, 2, 3)
        part = part_of(uow_factory, ids[0])

        with uow_factory() as uow:
            bars = uow.bars.of_part(part.id)
            bars[0].bar.value = 10
            bars[2].position = 4
            assert uow.bars.save(bars) == 2
            assert uow.bars.save(bars) == 0  # what it holds now is what was written
            uow.commit()

        assert bar_values(ids) == [10, 0, 0]
        with uow_factory() as uow:
            assert seen(uow.bars.of_part(part.id)) == [
                (ids[0], 1, 10, 0),
                (ids[1], 2, 0, 0),
                (ids[2], 3, 0, 4),
            ]

    def test_saved_bars_are_discarded_with_their_unit_of_work(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        [bar_id] = add_bars(uow_factory, 2)
        part = part_of(uow_factory, bar_id)

        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value, each.position = 50, 9
            uow.bars.save([each])

        assert bar_values([bar_id]) == [0]
        with uow_factory() as uow:
            assert seen(uow.bars.of_part(part.id)) == [(bar_id, 2, 0, 0)]

    def test_a_bar_saved_and_read_again_in_the_same_unit_of_work_has_its_new_state(
        self, uow_factory: UowFactory
    ) -> None:
        [bar_id] = add_bars(uow_factory, 3)
        part = part_of(uow_factory, bar_id)

        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value, each.position = 6, 1
            uow.bars.save([each])
            assert seen(uow.bars.of_part(part.id)) == [(bar_id, 3, 6, 1)]
            assert [bar.id for bar in uow.bars.mismatched(2, 10)] == []
            assert [(bar.id, bar.value) for bar in uow.bars.mismatched(0, 10)] == [(bar_id, 6)]

    def test_baselines_stay_as_created_until_taken_and_then_hold_the_bars_as_stored(
        self, uow_factory: UowFactory
    ) -> None:
        ids = add_bars(uow_factory, 2, 5, value=1)
        part = part_of(uow_factory, ids[0])
        with uow_factory() as uow:
            bars = uow.bars.of_part(part.id)
            for each in bars:
                each.bar.value, each.position = each.bar.weight * 10, 3
            uow.bars.save(bars)
            uow.commit()

        with uow_factory() as uow:
            assert seen(uow.bars.baselines_of_part(part.id)) == [
                (ids[0], 2, 1, 0),
                (ids[1], 5, 1, 0),
            ]
            uow.bars.take_baselines(uow.parts.lock(part.id))
            uow.commit()

        with uow_factory() as uow:
            assert seen(uow.bars.baselines_of_part(part.id)) == [
                (ids[0], 2, 20, 3),
                (ids[1], 5, 50, 3),
            ]
            assert seen(uow.bars.of_part(part.id)) == seen(uow.bars.baselines_of_part(part.id))

    def test_taking_baselines_says_how_many_bars_it_took(self, uow_factory: UowFactory) -> None:
        ids = add_bars(uow_factory, 1, 2, 3, part_size=2)
        full, other = part_of(uow_factory, ids[0]), part_of(uow_factory, ids[2])

        with uow_factory() as uow:
            assert uow.bars.take_baselines(uow.parts.lock(full.id)) == 2
            assert uow.bars.take_baselines(uow.parts.lock(other.id)) == 1

    def test_taking_baselines_is_discarded_with_its_unit_of_work(
        self, uow_factory: UowFactory
    ) -> None:
        [bar_id] = add_bars(uow_factory, 2)
        part = part_of(uow_factory, bar_id)
        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value, each.position = 8, 2
            uow.bars.save([each])
            uow.commit()

        with uow_factory() as uow:
            uow.bars.take_baselines(uow.parts.lock(part.id))

        with uow_factory() as uow:
            assert seen(uow.bars.baselines_of_part(part.id)) == [(bar_id, 2, 0, 0)]

    def test_bars_read_from_their_baselines_are_written_back_whatever_is_stored(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        # A rebuild's pass: it reads the baselines, replays, and saves over the stored bars.
        [bar_id] = add_bars(uow_factory, 4)
        part = part_of(uow_factory, bar_id)
        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value, each.position = -1, 5  # damaged
            uow.bars.save([each])
            uow.commit()

        with uow_factory() as uow:
            uow.bars.of_part(part.id)
            [baseline] = uow.bars.baselines_of_part(part.id)
            assert uow.bars.save([baseline]) == 1
            uow.commit()

        assert bar_values([bar_id]) == [0]
        with uow_factory() as uow:
            assert seen(uow.bars.of_part(part.id)) == [(bar_id, 4, 0, 0)]

    def test_mismatched_lists_the_bars_off_the_closed_form_in_id_order_up_to_a_limit(
        self, uow_factory: UowFactory
    ) -> None:
        ids = add_bars(uow_factory, 1, 2, 3, 4, value=6)  # right for total 6 only at weight 1

        with uow_factory() as uow:
            assert [bar.id for bar in uow.bars.mismatched(6, 10)] == ids[1:]
            assert [bar.id for bar in uow.bars.mismatched(6, 2)] == ids[1:3]
            assert [bar.id for bar in uow.bars.mismatched(3, 10)] == [ids[0], ids[2], ids[3]]
            assert uow.bars.mismatched(6, 0) == []
            [bar] = uow.bars.mismatched(6, 1)
        assert (bar.id, bar.weight, bar.value) == (ids[1], 2, 6)


class BarValuesBeyondBigintContract:
    """A bar's value past 2**63 - 1, kept whole (NUMERIC on PostgreSQL; SQLite refuses it)."""

    def test_a_value_past_a_bigint_survives_its_round_trip(
        self, uow_factory: UowFactory, bar_values: BarValues
    ) -> None:
        huge = 2**70
        [bar_id] = add_bars(uow_factory, 1)
        part = part_of(uow_factory, bar_id)

        with uow_factory() as uow:
            [each] = uow.bars.of_part(part.id)
            each.bar.value = huge
            uow.bars.save([each])
            uow.commit()

        assert bar_values([bar_id]) == [huge]
        with uow_factory() as uow:
            assert [(bar.id, bar.value) for bar in uow.bars.mismatched(0, 10)] == [(bar_id, huge)]
            assert uow.bars.mismatched(huge, 10) == []
            assert seen(uow.bars.of_part(part.id)) == [(bar_id, 1, huge, 0)]


class TestBarRepositoryInMemory(InMemory, BarRepositoryContract, BarValuesBeyondBigintContract):
    pass


class TestBarRepositorySqlite(Sqlite, BarRepositoryContract):
    pass


class TestBarRepositoryPostgres(Postgres, BarRepositoryContract, BarValuesBeyondBigintContract):
    pass
