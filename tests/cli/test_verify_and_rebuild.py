"""`postsave verify` and `postsave rebuild`: the bars against a replay of their baselines and the
event log through the recalculation, the example's (and then its closed form too) or a team's
own (`tests.recalculations:digest`, order-sensitive). On SQLite and PostgreSQL."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.bootstrap import Container
from infrastructure.cli import projection
from infrastructure.settings import Settings
from infrastructure.sql.schema import bar_baselines
from tests.cli.conftest import (
    Run,
    Running,
    World,
    execute,
    process_all,
    scalar,
    snapshot,
)
from tests.cli.test_cli import assert_one_line_error
from tests.recalculations import DIGEST, History, digests_hold

CLOSED_FORM = "weight * 20 (the sum of completed foo amounts)"
NOT_VERIFIED = (
    "NOT VERIFIED: 3 events still pending or in flight; run again once `postsave status` shows "
    "none (or `postsave verify --wait S`)"
)

# What a rebuild, run twice, must leave as it was: every column but the times of day.
SETTLED = {
    "bars": "id, part_id, position, weight, value",
    "bar_baselines": "bar_id, position, state",
    "bar_parts": "id, position, applied_total, bars, state, failures, rebuilding, "
    "baseline_position, baseline_total",
    "bar_projection": "head_position, head_total, applied_position, events_applied, "
    "counted_position, recalculation",
    "outbox_events": "id, state, position, dispatches, failures, applied_at IS NOT NULL",
}


def checked(running: Running) -> str:
    """All that verify checks once every event is applied."""
    if running.name == EXAMPLE_RECALCULATION:
        return f"{running.replay}, and {CLOSED_FORM}"
    return running.replay


def settled(db: Engine) -> dict[str, list[tuple[Any, ...]]]:
    with db.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.exec_driver_sql(f"SELECT {columns} FROM {table} ORDER BY 1")
            ]
            for table, columns in SETTLED.items()
        }


def value_of(db: Engine, bar_id: int) -> int:
    return int(scalar(db, "SELECT value FROM bars WHERE id = :id", id=bar_id))


def values(db: Engine) -> list[tuple[int, int]]:
    with db.connect() as connection:
        rows = connection.exec_driver_sql("SELECT weight, value FROM bars ORDER BY id").all()
    return [(int(weight), int(value)) for weight, value in rows]


# --- verify -----------------------------------------------------------------------------------


def test_verify_passes_once_every_event_is_applied(cli: Run, db: Engine, running: Running) -> None:
    process_all(running.container, db)
    result = cli("verify")
    assert (result.code, result.err) == (0, "")
    assert result.out == f"ok: all 3 bars (1 part) equal {checked(running)}\n"


def test_verify_passes_on_an_empty_database(cli: Run) -> None:
    result = cli("verify")
    assert (result.code, result.err) == (0, "")
    assert result.out == (
        "ok: all 0 bars (0 parts) equal a replay of their baselines and the event log through "
        f"{EXAMPLE_RECALCULATION}, and weight * 0 (the sum of completed foo amounts)\n"
    )


def test_verify_finds_a_bar_whose_value_was_tampered_with(
    cli: Run, db: Engine, world: World, running: Running
) -> None:
    process_all(running.container, db)
    victim = world.bars[1]
    right = value_of(db, victim)
    execute(db, "UPDATE bars SET value = value + 1 WHERE id = :id", id=victim)
    before = snapshot(db)

    result = cli("verify")

    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [  # off its replay and the closed form alike: one line
        f"FAILED: bars differ from {checked(running)}; first ones:",
        f"  bar {victim}: value {right + 1}, expected {right}",
    ]
    assert snapshot(db) == before  # verify only reads


def test_verify_finds_a_bar_whose_baseline_was_tampered_with(
    cli: Run, db: Engine, world: World, running: Running
) -> None:
    # The bar is right, but its replay starts elsewhere: bars and baselines disagree.
    process_all(running.container, db)
    victim = world.bars[0]
    stored = value_of(db, victim)
    with db.begin() as connection:
        row = bar_baselines.c.bar_id == victim
        baseline = connection.execute(select(bar_baselines.c.state).where(row)).scalar_one()
        changed = {**baseline, "value": int(baseline["value"]) + 1}
        connection.execute(update(bar_baselines).where(row).values(state=changed))
    if running.name == EXAMPLE_RECALCULATION:
        replayed = stored + 1  # the example adds to whatever the baseline holds
    else:
        with db.connect() as connection:
            history = History()
            history.record(connection)  # the baseline as tampered with
        replayed = history.expected(victim, int(scalar(db, "SELECT max(position) FROM bars")))
    assert replayed != stored

    result = cli("verify")

    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines() == [
        f"FAILED: bars differ from {checked(running)}; first ones:",
        f"  bar {victim}: value {stored}, expected {replayed}",
    ]


def test_verify_finds_a_bar_whose_position_was_tampered_with(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    # After a prune, the bar's baseline is its state at position 5: a bar that says it is at
    # 4 holds what its replay does, but claims not to have applied the fifth event.
    process_all(container, db)
    assert cli("prune", "--older-than", "0s").code == 0
    victim = world.bars[2]
    execute(db, "UPDATE bars SET position = position - 1 WHERE id = :id", id=victim)

    result = cli("verify")

    assert (result.code, result.out) == (1, "")
    assert result.err.splitlines()[1:] == [
        f"  bar {victim}: the same as its replay (weight 3, value 60), but at another position "
        "in the log"
    ]


def test_verify_is_not_passed_while_events_are_pending_and_says_how_far_it_got(
    cli: Run, db: Engine, running: Running
) -> None:
    # The world's last three events are pending: the bars are right as far as they have got.
    before = snapshot(db)
    result = cli("verify")
    assert (result.code, result.out) == (1, "")
    later = "; weight * 20 is checked once every event is applied"
    assert result.err.splitlines() == [
        NOT_VERIFIED,
        f"  so far all 3 bars (1 part) equal {running.replay}"
        + (later if running.name == EXAMPLE_RECALCULATION else ""),
    ]
    assert snapshot(db) == before


def test_verify_waits_for_the_workers_when_asked_to(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    applying = threading.Timer(1.0, process_all, args=(container, db))  # a worker, a bit later
    applying.start()
    try:
        result = cli("verify", "--wait", "30")
    finally:
        applying.join()
    assert (result.code, result.err) == (0, ""), result
    assert result.out.startswith("ok: all 3 bars (1 part) equal ")


def test_verify_waits_no_longer_than_asked(cli: Run, world: World) -> None:
    started = time.monotonic()
    result = cli("verify", "--wait", "0.5")
    assert time.monotonic() - started >= 0.5
    assert result.code == 1
    assert result.err.startswith(f"{NOT_VERIFIED}\n")


def test_verify_names_the_dead_events_that_the_bars_miss(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    dead = world.events[2]  # the cancellation of 3: its foo no longer counts, the bars miss it
    execute(
        db, "UPDATE outbox_events SET state = 'dead', last_error = 'boom' WHERE id = :id", id=dead
    )
    process_all(container, db)

    result = cli("verify")

    assert (result.code, result.out) == (1, "")
    lines = result.err.splitlines()
    assert lines[0] == (
        f"FAILED: bars differ from a replay of their baselines and the event log through "
        f"{EXAMPLE_RECALCULATION}, and {CLOSED_FORM}; first ones:"
    )
    assert lines[1:] == [
        f"  bar {world.bars[0]}: value 46, expected 40",
        f"  bar {world.bars[1]}: value 46, expected 40",
        f"  bar {world.bars[2]}: value 69, expected 60",
        "  (1 dead event, not on the bars: `postsave dead list`)",
    ]


def test_verify_refuses_to_replay_through_another_recalculation_than_the_bars(
    cli: Run, db: Engine, world: World, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    process_all(container, db)
    monkeypatch.setenv("POSTSAVE_RECALCULATION", DIGEST)
    before = snapshot(db)

    result = cli("verify")

    assert_one_line_error(result, code=1)
    assert result.err == (
        f"postsave: error: the bars were computed with {EXAMPLE_RECALCULATION}, not "
        f"POSTSAVE_RECALCULATION={DIGEST}: verify with {EXAMPLE_RECALCULATION}, or run "
        f"`postsave rebuild` with {DIGEST} first\n"
    )
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("tests.no_such_module:digest", "cannot import tests.no_such_module"),
        ("tests.recalculations:no_such_function", "has no function no_such_function"),
    ],
)
@pytest.mark.parametrize("argv", [["verify"], ["rebuild"], ["rebuild", "--on-workers"]])
def test_a_recalculation_that_cannot_be_loaded_is_one_line_and_changes_nothing(
    cli: Run,
    db: Engine,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    problem: str,
    argv: list[str],
) -> None:
    monkeypatch.setenv("POSTSAVE_RECALCULATION", name)
    before = snapshot(db)
    result = cli(*argv)
    assert_one_line_error(result, code=2)
    assert f"POSTSAVE_RECALCULATION={name!r}: " in result.err
    assert problem in result.err
    assert snapshot(db) == before


# --- rebuild ----------------------------------------------------------------------------------


def test_rebuild_repairs_a_corrupted_bar_and_part(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    process_all(container, db)
    execute(db, "UPDATE bars SET value = -12345 WHERE id = :id", id=world.bars[0])
    execute(db, "UPDATE bar_parts SET applied_total = 999")
    assert cli("verify").code == 1

    result = cli("rebuild")

    assert (result.code, result.err) == (0, "")
    assert result.out == (
        f"rebuilt 1 part through {EXAMPLE_RECALCULATION}: the bars' baselines and the 5 events "
        "after position 0\n"
    )
    assert cli("verify").code == 0
    assert values(db) == [(2, 40), (2, 40), (3, 60)]
    assert scalar(db, "SELECT applied_total FROM bar_parts") == 20
    with db.connect() as connection:
        row = connection.exec_driver_sql(
            "SELECT head_total, events_applied, recalculation FROM bar_projection"
        ).one()
    assert tuple(row) == (20, 5, EXAMPLE_RECALCULATION)  # a replay counts no event again


def test_rebuild_leaves_pending_events_to_the_workers(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    # Two of five events applied (+7, +3): rebuilt from those, then the rest arrive on top.
    execute(db, "UPDATE bars SET value = 0")
    result = cli("rebuild")
    assert result.out.endswith("the bars' baselines and the 2 events after position 0\n")
    assert values(db) == [(2, 20), (2, 20), (3, 30)]
    assert cli("verify").code == 1  # three events still pending
    process_all(container, db)
    assert cli("verify").code == 0


def test_rebuild_is_idempotent(cli: Run, db: Engine, world: World, container: Container) -> None:
    process_all(container, db)
    assert cli("rebuild").code == 0
    before = settled(db)
    assert cli("rebuild").code == 0
    assert settled(db) == before


def test_rebuild_with_another_recalculation_recomputes_every_bar_through_it(
    cli: Run,
    db: Engine,
    database_url: str,
    world: World,
    container: Container,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    process_all(container, db)  # every event applied through the example's
    assert values(db) == [(2, 40), (2, 40), (3, 60)]
    monkeypatch.setenv("POSTSAVE_RECALCULATION", DIGEST)

    result = cli("rebuild")

    assert (result.code, result.err) == (0, "")
    assert result.out == (
        f"rebuilt 1 part through {DIGEST}: the bars' baselines and the 5 events after position 0\n"
    )
    assert scalar(db, "SELECT recalculation FROM bar_projection") == DIGEST
    history = History()
    with db.connect() as connection:
        assert digests_hold(connection, history) == []  # each event once, in the one order
    assert all(value not in (40, 60) for _, value in values(db))
    assert (
        cli("verify").out == f"ok: all 3 bars (1 part) equal {Running(DIGEST, container).replay}\n"
    )

    # The workers run the digest from now on; new events reach the bars through it.
    digesting = Container(Settings(database_url=database_url, recalculation=DIGEST))
    try:
        (foo,) = cli("foo", "create", "--amount", "4").out_lines
        assert cli("foo", "complete", foo).code == 0
        process_all(digesting, db)
    finally:
        digesting.close()
    with db.connect() as connection:
        assert digests_hold(connection, history) == []
    assert cli("verify").code == 0


def test_rebuild_on_the_workers_only_starts_it(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    process_all(container, db)
    execute(db, "UPDATE bars SET value = 0 WHERE id = :id", id=world.bars[2])

    result = cli("rebuild", "--on-workers")

    assert (result.code, result.err) == (0, "")
    assert result.out == (
        f"rebuilding 1 part through {EXAMPLE_RECALCULATION} on the workers: 5 events to replay "
        "after position 0; `postsave status` shows the parts still rebuilding\n"
    )
    assert scalar(db, "SELECT count(*) FROM bar_parts WHERE rebuilding") == 1
    assert values(db)[2] == (3, 0)  # nothing replayed yet
    process_all(container, db)  # the workers' passes replay it
    assert values(db) == [(2, 40), (2, 40), (3, 60)]
    assert cli("verify").code == 0


def test_rebuild_shows_its_progress_on_stderr(
    cli: Run, db: Engine, container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("POSTSAVE_PART_SIZE", "1")
    monkeypatch.setattr(projection, "PROGRESS_EVERY_S", 0.0)  # every report, not one a second
    assert len(cli("bar", "create", "--weight", "2", "--count", "3").out_lines) == 3
    foos = cli("foo", "create", "--amount", "5", "--count", "2").out_lines
    assert cli("foo", "complete", *foos).code == 0
    process_all(container, db)

    result = cli("rebuild")

    assert result.code == 0
    assert result.out.startswith("rebuilt 3 parts through ")
    lines = result.err.splitlines()
    assert lines and all(
        line.startswith("rebuilt ") and line.endswith(" of 3 parts") for line in lines
    ), result.err
    assert lines[-1] == "rebuilt 3 of 3 parts"
    assert values(db) == [(2, 20)] * 3
