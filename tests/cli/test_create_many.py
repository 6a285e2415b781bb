"""`postsave foo create` and `bar create` with `--count`: a cap, one transaction per 1,000, ids
on stdout as each batch commits, progress on stderr, and after a failure the ids created so far
followed by one error line. On SQLite and PostgreSQL."""

from __future__ import annotations

import sys

import pytest
from sqlalchemy import Engine

from infrastructure.cli import bulk
from infrastructure.cli.main import build_parser
from tests.cli.conftest import Run, World, execute, scalar, snapshot
from tests.cli.test_cli import assert_one_line_error

COUNT = 2_500  # three transactions: 1,000, 1,000 and 500


def ids_in(db: Engine, table: str) -> list[int]:
    with db.connect() as connection:
        return list(connection.exec_driver_sql(f"SELECT id FROM {table} ORDER BY id").scalars())


def transactions(db: Engine, table: str) -> int | None:
    """How many transactions wrote the rows: PostgreSQL's xmin; SQLite cannot tell."""
    if db.dialect.name != "postgresql":
        return None
    return int(scalar(db, f"SELECT count(DISTINCT xmin::text) FROM {table}"))


@pytest.mark.parametrize("kind", ["foo", "bar"])
def test_a_count_above_the_cap_is_refused_and_changes_nothing(
    cli: Run, db: Engine, world: World, kind: str
) -> None:
    before = snapshot(db)
    option = "--amount" if kind == "foo" else "--weight"
    result = cli(kind, "create", option, "1", "--count", "100001")
    assert_one_line_error(result, code=2)
    assert "100001 is more than 100000, the most one command creates" in result.err
    assert snapshot(db) == before


def test_the_cap_itself_is_allowed() -> None:
    args = build_parser().parse_args(["foo", "create", "--amount", "1", "--count", "100000"])
    assert args.count == bulk.MAX_COUNT == 100_000


def test_many_foos_are_created_a_thousand_per_transaction(cli: Run, db: Engine) -> None:
    result = cli("foo", "create", "--amount", "3", "--count", str(COUNT))
    assert (result.code, result.err) == (0, "")  # not a terminal, not a large count: quiet
    assert [int(line) for line in result.out_lines] == ids_in(db, "foos")
    assert len(result.out_lines) == COUNT
    assert transactions(db, "foos") in (None, 3)


def test_many_bars_are_created_a_thousand_per_transaction(
    cli: Run, db: Engine, world: World
) -> None:
    before = ids_in(db, "bars")
    result = cli("bar", "create", "--weight", "4", "--count", str(COUNT))
    assert (result.code, result.err) == (0, "")
    new = [int(line) for line in result.out_lines]
    assert new == [i for i in ids_in(db, "bars") if i not in before]
    assert len(new) == COUNT
    # Every batch starts its bars at weight * the deltas applied so far (world applied 7 + 3).
    assert scalar(db, "SELECT count(*) FROM bars WHERE weight = 4 AND value = 40") == COUNT


def test_progress_is_one_rewritten_line_on_a_terminal(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = cli("foo", "create", "--amount", "1", "--count", str(COUNT))
    assert result.code == 0
    assert len(result.out_lines) == COUNT  # stdout: ids only
    assert result.err == (
        "\rcreated 1000 of 2500 foos\rcreated 2000 of 2500 foos\rcreated 2500 of 2500 foos\n"
    )


def test_a_terminal_sees_no_progress_for_a_single_transaction(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    result = cli("bar", "create", "--weight", "1", "--count", "1000")
    assert (result.code, result.err, len(result.out_lines)) == (0, "", 1000)


def test_progress_on_a_log_is_a_line_now_and_then_for_large_counts(
    cli: Run, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The thresholds scaled down (10,000 and every 10,000 rows): the same rule, in less time.
    monkeypatch.setattr(bulk, "PROGRESS_FROM", 2_000)
    monkeypatch.setattr(bulk, "PROGRESS_LINE_EVERY", 2_000)
    result = cli("bar", "create", "--weight", "1", "--count", str(COUNT))
    assert result.code == 0
    assert result.err == "created 2000 of 2500 bars\ncreated 2500 of 2500 bars\n"
    assert len(result.out_lines) == COUNT


def fail_inserts_after(db: Engine, rows: int) -> None:
    """The database refuses every foo after the first `rows`, like a disk that filled up."""
    if db.dialect.name == "sqlite":
        execute(
            db,
            f"CREATE TRIGGER disk_full BEFORE INSERT ON foos WHEN (SELECT count(*) FROM foos) "
            f">= {rows} BEGIN SELECT RAISE(ABORT, 'the disk is full'); END",
        )
        return
    execute(
        db,
        "CREATE FUNCTION disk_full() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF (SELECT count(*) FROM foos) >= {rows} THEN RAISE EXCEPTION 'the disk is full'; "
        "END IF; RETURN NEW; END $$",
    )
    execute(
        db,
        "CREATE TRIGGER disk_full BEFORE INSERT ON foos FOR EACH ROW EXECUTE FUNCTION disk_full()",
    )


@pytest.mark.parametrize("terminal", [False, True], ids=["log", "terminal"])
def test_a_failure_part_way_prints_the_ids_created_then_one_error_line(
    cli: Run, db: Engine, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    monkeypatch.setattr(sys.stderr, "isatty", lambda: terminal)
    fail_inserts_after(db, 1_500)  # the second transaction fails half-way and rolls back

    result = cli("foo", "create", "--amount", "1", "--count", str(COUNT))

    assert result.code == 1
    assert [int(line) for line in result.out_lines] == ids_in(db, "foos")
    assert len(result.out_lines) == 1_000
    progress = "\rcreated 1000 of 2500 foos\n" if terminal else ""
    assert result.err.startswith(f"{progress}postsave: error: database error: the disk is full")
    assert result.err.endswith(
        "; 1000 of 2500 foos were created before that (their ids are on stdout)\n"
    )
    assert "Traceback" not in result.err
    assert len(result.err.removeprefix(progress).splitlines()) == 1


def test_a_failure_in_the_first_transaction_changes_nothing(cli: Run, db: Engine) -> None:
    fail_inserts_after(db, 0)
    before = snapshot(db)
    result = cli("foo", "create", "--amount", "1", "--count", str(COUNT))
    assert_one_line_error(result, code=1)
    assert "created before that" not in result.err
    assert snapshot(db) == before
