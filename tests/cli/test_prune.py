"""`postsave prune`: finished events folded into the checkpoint and deleted, on SQLite and
PostgreSQL; the bars, `verify`, `rebuild` and new events as before."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import Engine

from domain import use_cases
from infrastructure.bootstrap import Container
from tests.cli.conftest import Run, World, event_ids, execute, process_all, scalar, snapshot
from tests.cli.test_cli import assert_one_line_error


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
    assert scalar(db, "SELECT count(*) FROM applied_events") == 0
    lines = [json.loads(line) for line in archive.read_text().splitlines()]
    assert [line["id"] for line in lines] == world.events
    assert lines[0]["event_type"] == "FooCompleted"
    assert oct(archive.stat().st_mode & 0o777) == "0o600"
    assert cli("verify").code == 0
    execute(db, "UPDATE bars SET value = 0")  # damaged: the checkpoint rebuilds them
    assert cli("rebuild").out == "rebuilt 3 bars from 5 applied events\n"
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
