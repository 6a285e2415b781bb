"""Migration 0010, bar parts, on SQLite and PostgreSQL: a database at 0009 continues where it
was (every bar's value, the applied events in the order they were applied, the projection's
total), and goes back to 0009 with the same values and its applied guard."""

from __future__ import annotations

import json

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, text
from sqlalchemy.exc import IntegrityError

from infrastructure.sql.engines import make_engine
from infrastructure.sql.migrate import alembic_config, downgrade, upgrade
from tests import services
from tests.integration.databases import execute, scalar_rows, tables

PART_SIZE = 1_000
TOTAL = 10  # the sum of the applied deltas: 4 + 6
BIG_TOTAL = 2**70  # beyond BIGINT: a NUMERIC(38, 0) total, PostgreSQL only
EVENTS_APPLIED = 7  # more than the log holds: pruned events were counted too
RECALCULATION = "domain.recalculation:recalculate"

# (state, delta, applied_at): applied ones out of id order, two at the same instant.
EVENTS = [
    ("processed", 4, "2026-12-01 10:00:02.000000"),
    ("pending", 5, None),
    ("processed", 0, "2026-12-01 10:00:01.000000"),
    ("dispatched", 6, "2026-12-01 10:00:02.000000"),  # applied, its message still out
    ("dispatched", 7, None),
    ("dead", 8, None),
]
APPLIED_IN_ORDER = [3, 1, 4]  # by applied_at, then id
APPLIED = len(APPLIED_IN_ORDER)
UNAPPLIED = [2, 5, 6]


def insert_at_0009(url: str, bars: int = 2_300, total: int = TOTAL) -> list[tuple[int, int, int]]:
    """Bars as 0009 kept them (value = weight * total), with gaps in their ids, and events in
    every state; returns the bars, (id, weight, value) by id."""
    execute(
        url,
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < "
        f"{bars}) INSERT INTO bars (weight, value) SELECT i % 7, (i % 7) * {total} FROM n",
        "DELETE FROM bars WHERE id % 10 = 0",
        f"UPDATE bar_projection SET applied_total = {total}, events_applied = {EVENTS_APPLIED}",
    )
    for state, delta, applied_at in EVENTS:
        stamp = "NULL" if applied_at is None else f"'{applied_at}'"
        execute(
            url,
            "INSERT INTO outbox_events (event_type, payload, state, dispatches, applied_at) "
            f"VALUES ('FooCompleted', '{{\"foo_id\": 1, \"delta\": {delta}}}', '{state}', 1,"
            f" {stamp})",
        )
    execute(url, "INSERT INTO applied_events (event_id) VALUES (1), (3), (4)")
    return bars_kept(url)


def bars_kept(url: str) -> list[tuple[int, int, int]]:
    return [
        (int(i), int(w), int(v))
        for i, w, v in scalar_rows(url, "SELECT id, weight, value FROM bars ORDER BY id")
    ]


def positions(url: str) -> dict[int, object]:
    return {i: p for i, p in scalar_rows(url, "SELECT id, position FROM outbox_events")}


def execute_as_postsave(url: str, *statements: str) -> None:
    """As postsave's engine runs them: with SQLite's foreign keys on."""
    engine = make_engine(url)
    try:
        with engine.begin() as connection:
            for statement in statements:
                connection.execute(text(statement))
    finally:
        engine.dispose()


def columns(url: str, table: str) -> set[str]:
    engine = create_engine(url)
    try:
        with engine.connect() as connection:
            return {column["name"] for column in inspect(connection).get_columns(table)}
    finally:
        engine.dispose()


def as_json(state: object) -> object:
    return json.loads(state) if isinstance(state, str) else state  # SQLite's JSON is text


def test_every_bar_keeps_its_value_in_parts_of_a_thousand_by_id(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    before = insert_at_0009(empty_url)

    upgrade(empty_url, "0010")

    assert bars_kept(empty_url) == before
    ids = [bar_id for bar_id, _, _ in before]
    assert len(ids) == 2_070
    assert scalar_rows(empty_url, "SELECT id, part_id, position FROM bars ORDER BY id") == [
        (bar_id, rank // PART_SIZE + 1, APPLIED) for rank, bar_id in enumerate(ids)
    ]
    assert scalar_rows(
        empty_url,
        "SELECT id, position, applied_total, bars, state, failures, baseline_position,"
        " baseline_total, rebuilding FROM bar_parts ORDER BY id",
    ) == [
        (part, APPLIED, TOTAL, size, "ready", 0, APPLIED, TOTAL, False)
        for part, size in [(1, 1_000), (2, 1_000), (3, 70)]
    ]
    command.check(alembic_config(empty_url))  # the data moved, the schema is head's


def test_each_bar_state_now_is_its_baseline(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    before = insert_at_0009(empty_url, bars=30)

    upgrade(empty_url, "0010")

    baselines = scalar_rows(
        empty_url, "SELECT bar_id, position, state FROM bar_baselines ORDER BY bar_id"
    )
    assert [(bar_id, position, as_json(state)) for bar_id, position, state in baselines] == [
        (bar_id, APPLIED, {"weight": weight, "value": value}) for bar_id, weight, value in before
    ]
    execute_as_postsave(empty_url, "DELETE FROM bars WHERE id = 1")  # its baseline goes too
    assert scalar_rows(empty_url, "SELECT count(*) FROM bar_baselines WHERE bar_id = 1") == [(0,)]


def test_applied_events_are_sequenced_in_the_order_they_were_applied(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    insert_at_0009(empty_url, bars=3)

    upgrade(empty_url, "0010")

    assert positions(empty_url) == {
        **{event_id: None for event_id in UNAPPLIED},
        **{event_id: rank + 1 for rank, event_id in enumerate(APPLIED_IN_ORDER)},
    }
    assert scalar_rows(
        empty_url,
        "SELECT head_position, head_total, applied_position, counted_position, events_applied,"
        " recalculation FROM bar_projection",
    ) == [(APPLIED, TOTAL, APPLIED, APPLIED, EVENTS_APPLIED, RECALCULATION)]
    assert "applied_events" not in tables(empty_url)
    assert "applied_total" not in columns(empty_url, "bar_projection")


def test_a_dead_event_stays_unsequenced_and_a_position_is_given_once(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    insert_at_0009(empty_url, bars=3)

    upgrade(empty_url, "0010")

    with pytest.raises(IntegrityError, match="ck_outbox_events_dead_is_unsequenced"):
        execute(empty_url, "UPDATE outbox_events SET position = 4 WHERE id = 6")
    with pytest.raises(
        IntegrityError, match=r"uq_outbox_events_position|UNIQUE.*outbox_events\.position"
    ):
        execute(empty_url, "UPDATE outbox_events SET position = 1 WHERE id = 2")
    with pytest.raises(IntegrityError, match="ck_bar_projection_applied_within_head"):
        execute(empty_url, f"UPDATE bar_projection SET applied_position = {APPLIED + 1}")
    execute(empty_url, "UPDATE outbox_events SET position = 4 WHERE id = 2")  # the relay's next


def test_new_parts_and_bars_follow_the_migrated_ones(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    insert_at_0009(empty_url, bars=1_500)

    upgrade(empty_url, "0010")

    execute(
        empty_url,
        "INSERT INTO bar_parts (position, applied_total, baseline_position, baseline_total)"
        f" VALUES ({APPLIED}, {TOTAL}, {APPLIED}, {TOTAL})",
        f"INSERT INTO bars (part_id, position, weight, value) VALUES (3, {APPLIED}, 1, {TOTAL})",
    )
    assert scalar_rows(empty_url, "SELECT max(id) FROM bar_parts") == [(3,)]
    with pytest.raises(IntegrityError):  # a bar belongs to a part that exists
        execute_as_postsave(
            empty_url, "INSERT INTO bars (part_id, position, weight, value) VALUES (9, 0, 1, 0)"
        )
    with pytest.raises(IntegrityError):  # and a part with bars stays
        execute_as_postsave(empty_url, "DELETE FROM bar_parts WHERE id = 1")


def test_an_empty_database_has_no_parts_and_an_empty_head(empty_url: str) -> None:
    upgrade(empty_url, "0009")

    upgrade(empty_url, "0010")

    assert scalar_rows(empty_url, "SELECT count(*) FROM bar_parts") == [(0,)]
    assert scalar_rows(
        empty_url,
        "SELECT head_position, head_total, applied_position, events_applied FROM bar_projection",
    ) == [(0, 0, 0, 0)]


@pytest.mark.postgres
def test_values_beyond_bigint_are_kept_in_bars_parts_and_baselines() -> None:
    services.check_postgres()  # SQLite keeps 64-bit integers only
    name = services.create_database()
    url = services.database_url(name)
    try:
        upgrade(url, "0009")
        before = insert_at_0009(url, bars=20, total=BIG_TOTAL)

        upgrade(url, "0010")

        assert bars_kept(url) == before
        assert max(value for _, _, value in before) == 6 * BIG_TOTAL
        assert scalar_rows(url, "SELECT applied_total, baseline_total FROM bar_parts") == [
            (BIG_TOTAL, BIG_TOTAL)
        ]
        states = scalar_rows(url, "SELECT state FROM bar_baselines ORDER BY bar_id")
        assert [state for (state,) in states] == [{"weight": w, "value": v} for _, w, v in before]
        assert scalar_rows(url, "SELECT head_total FROM bar_projection") == [(BIG_TOTAL,)]

        downgrade(url, "0009")

        assert bars_kept(url) == before
        assert scalar_rows(url, "SELECT applied_total FROM bar_projection") == [(BIG_TOTAL,)]
    finally:
        services.drop_database(name)


# Downgrade: 0009 keeps one applied total for every bar, and its guard of applied events.


def assert_at_0009(url: str, applied: list[int], total: int, events_applied: int) -> None:
    assert scalar_rows(url, "SELECT event_id FROM applied_events ORDER BY event_id") == [
        (event_id,) for event_id in applied
    ]
    assert scalar_rows(url, "SELECT applied_total, events_applied FROM bar_projection") == [
        (total, events_applied)
    ]
    assert not {"bar_parts", "bar_baselines"} & tables(url)
    assert columns(url, "bars") == {"id", "weight", "value", "created_at"}
    assert "position" not in columns(url, "outbox_events")
    with pytest.raises(IntegrityError):  # the guard lets an event in once again
        execute(url, f"INSERT INTO applied_events (event_id) VALUES ({applied[0]})")


def test_downgrading_0010_keeps_every_value_and_restores_the_applied_guard(
    empty_url: str,
) -> None:
    upgrade(empty_url, "0009")
    before = insert_at_0009(empty_url)
    upgrade(empty_url, "0010")

    downgrade(empty_url, "0009")

    assert bars_kept(empty_url) == before
    assert_at_0009(empty_url, sorted(APPLIED_IN_ORDER), TOTAL, EVENTS_APPLIED)
    assert scalar_rows(empty_url, "SELECT id, state FROM outbox_events ORDER BY id") == [
        (event_id, state) for event_id, (state, _, _) in enumerate(EVENTS, start=1)
    ]
    upgrade(empty_url, "0010")  # and up again, to the same place
    assert bars_kept(empty_url) == before
    assert positions(empty_url)[1] == 2


def pass_every_part_through_event_2(url: str) -> None:
    """What 0010 does next: the relay sequences the pending event (delta 5), every part
    applies it to its bars, and no delivery has settled it yet."""
    execute(
        url,
        f"UPDATE outbox_events SET position = {APPLIED + 1}, state = 'dispatched' WHERE id = 2",
        f"UPDATE bar_projection SET head_position = {APPLIED + 1}, head_total = head_total + 5",
        "UPDATE bars SET value = value + weight * 5, position = position + 1",
        "UPDATE bar_parts SET position = position + 1, applied_total = applied_total + 5",
    )


def test_downgrading_0010_applies_what_every_part_has_passed(empty_url: str) -> None:
    upgrade(empty_url, "0009")
    insert_at_0009(empty_url)
    upgrade(empty_url, "0010")
    pass_every_part_through_event_2(empty_url)
    passed = bars_kept(empty_url)

    downgrade(empty_url, "0009")

    assert bars_kept(empty_url) == passed
    assert_at_0009(empty_url, [1, 2, 3, 4], TOTAL + 5, EVENTS_APPLIED + 1)
    assert scalar_rows(empty_url, "SELECT state FROM outbox_events WHERE id = 2") == [
        ("dispatched",)  # its message is still out: 0009 settles it when it is back
    ]


def test_downgrading_0010_is_refused_while_parts_stand_at_different_positions(
    empty_url: str,
) -> None:
    upgrade(empty_url, "0009")
    insert_at_0009(empty_url)
    upgrade(empty_url, "0010")
    pass_every_part_through_event_2(empty_url)
    execute(
        empty_url,
        "UPDATE bars SET value = value - weight * 5, position = position - 1 WHERE part_id = 3",
        "UPDATE bar_parts SET position = position - 1, applied_total = applied_total - 5"
        " WHERE id = 3",
    )
    behind = bars_kept(empty_url)

    with pytest.raises(RuntimeError, match=r"not all at one position \(2 part position"):
        downgrade(empty_url, "0009")

    assert bars_kept(empty_url) == behind
    assert scalar_rows(empty_url, "SELECT count(*) FROM bar_parts") == [(3,)]
    assert positions(empty_url)[2] == APPLIED + 1
