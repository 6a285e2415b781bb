"""`postsave prune`: finished events folded into the checkpoint and deleted, on SQLite and
PostgreSQL; the bars, `verify`, `rebuild` and new events as before."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from domain import use_cases
from infrastructure.bootstrap import Container
from tests.cli.conftest import (
    Run,
    Running,
    World,
    event_ids,
    execute,
    process_all,
    scalar,
    snapshot,
)
from tests.cli.test_cli import assert_one_line_error
from tests.cli.test_verify_and_rebuild import values
from tests.recalculations import DIGEST, History, digests_hold


def test_prune_archives_folds_and_deletes_every_finished_event(
    cli: Run, db: Engine, world: World, container: Container, tmp_path: Path
) -> None:
    process_all(container, db)
    archive = tmp_path / "kept" / "events.jsonl"

    result = cli("prune", "--older-than", "0s", "--archive", str(archive))

    assert (result.code, result.out) == (
        0,
        f"pruned 5 finished events older than 0s, archived to {archive}\n",
    )
    assert scalar(db, "SELECT count(*) FROM outbox_events") == 0
    # Each bar is its own baseline now, at the position the pruned events took it to.
    assert scalar(db, "SELECT count(*) FROM bar_baselines WHERE position = 5") == 3
    assert scalar(db, "SELECT baseline_position FROM bar_parts") == 5
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [line["id"] for line in lines] == world.events
    assert lines[0]["event_type"] == "FooCompleted"
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert cli("verify").code == 0
    execute(db, "UPDATE bars SET value = 0")  # damaged: their baselines rebuild them
    assert cli("rebuild").out.endswith("the bars' baselines and the 0 events after position 5\n")
    assert cli("verify").code == 0


def test_prune_keeps_unfinished_and_young_events_and_new_ones_flow(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    # Two of five events processed; three pending.
    assert cli("prune", "--older-than", "1h").out.startswith("pruned 0 finished events")
    assert cli("prune", "--older-than", "0s").out.startswith("pruned 2 finished events")
    assert event_ids(db) == world.events[2:]

    (foo,) = use_cases.create_foos(container.uow(), 30)
    use_cases.complete_foo(container.uow(), foo)
    process_all(container, db)

    assert cli("verify").code == 0
    assert scalar(db, "SELECT events_applied FROM projection_checkpoint") == 2


def test_a_wrong_duration_is_one_line_and_prunes_nothing(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    process_all(container, db)
    before = snapshot(db)

    result = cli("prune", "--older-than", "7 days")

    assert_one_line_error(result, code=1)
    assert "'7 days' is not a duration" in result.err
    assert snapshot(db) == before


def test_an_archive_that_cannot_be_written_is_one_line_and_prunes_nothing(
    cli: Run, db: Engine, world: World, container: Container, tmp_path: Path
) -> None:
    process_all(container, db)
    (tmp_path / "file").write_text("")
    before = snapshot(db)

    result = cli("prune", "--older-than", "0s", "--archive", str(tmp_path / "file" / "x.jsonl"))

    assert_one_line_error(result, code=1)
    assert "cannot write the archive" in result.err
    assert snapshot(db) == before


def test_prune_of_every_event_then_rebuild_leaves_verify_ok(
    cli: Run, db: Engine, running: Running
) -> None:
    process_all(running.container, db)
    history = History()
    with db.connect() as connection:
        history.record(connection)  # every event and bar as created, before they go

    assert cli("prune", "--older-than", "0s").out == "pruned 5 finished events older than 0s\n"
    result = cli("rebuild")

    assert (result.code, result.err) == (0, "")
    assert result.out == (
        f"rebuilt 1 part through {running.name}: the bars' baselines and the 0 events after "
        "position 5\n"
    )
    assert cli("verify").out.startswith("ok: all 3 bars (1 part) equal ")
    if running.name == DIGEST:
        with db.connect() as connection:
            assert digests_hold(connection, history) == []
    else:
        assert values(db) == [(2, 40), (2, 40), (3, 60)]


def test_events_after_a_prune_are_replayed_from_the_baselines_it_left(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    # Two events applied and pruned; three more applied after: a rebuild replays those three.
    assert cli("prune", "--older-than", "0s").out.startswith("pruned 2 finished events")
    process_all(container, db)
    execute(db, "UPDATE bars SET value = value * 2")

    assert cli("rebuild").out.endswith("the bars' baselines and the 3 events after position 2\n")

    assert values(db) == [(2, 40), (2, 40), (3, 60)]
    assert cli("verify").code == 0
