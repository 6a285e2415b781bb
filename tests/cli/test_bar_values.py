"""Bar values beyond BIGINT (`weight * sum(amounts)` passes 2**63 - 1 once about 9.2 million foos
at MAX_AMOUNT are completed, for a bar at MAX_WEIGHT): on PostgreSQL they apply, verify and
rebuild, and the totals beside them (a part's applied total, the head's) too; on SQLite, whose
integers stop there, an overflowing pass fails and changes no bar."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, create_engine, select, update
from sqlalchemy.exc import IntegrityError

from domain import use_cases
from domain.bar import MAX_WEIGHT
from domain.delivery import Outcome
from domain.foo import MAX_AMOUNT
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from infrastructure.sql import schema
from tests.cli.conftest import Result, event_ids, execute, process_all, run_in_process, scalar
from tests.deliveries import apply_events

BIGINT_MAX = 2**63 - 1
# A completed total past what a BIGINT holds at MAX_WEIGHT (9.22e12): 9.4 million foos at
# MAX_AMOUNT. They are one row here, and the bars, their baselines and the totals are set to
# match directly, as if a prune had folded their events.
TOTAL = 9_400_000_000_000
assert MAX_WEIGHT * TOTAL > BIGINT_MAX

Cli = Callable[..., Result]


@pytest.fixture
def pg_cli(pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return lambda *argv: run_in_process(monkeypatch, capsys, pg_url, list(argv))


def as_if_completed(db: Engine, total: int) -> None:
    """The database as if foos summing to `total` were completed, applied to every bar and then
    pruned: the totals and every bar at `weight * total`, which the baselines hold too."""
    execute(db, "INSERT INTO foos (amount, state, version) VALUES (:t, 'completed', 1)", t=total)
    execute(db, "UPDATE bar_parts SET applied_total = :t, baseline_total = :t", t=total)
    execute(db, "UPDATE bar_projection SET head_total = :t, events_applied = 1", t=total)
    execute(db, "UPDATE bars SET value = weight * CAST(:t AS NUMERIC)", t=total)
    with db.begin() as connection:
        bars = connection.execute(select(schema.bars.c.id, schema.bars.c.weight)).all()
        for bar_id, weight in bars:
            connection.execute(
                update(schema.bar_baselines)
                .where(schema.bar_baselines.c.bar_id == bar_id)
                .values(state={"weight": weight, "value": weight * total})
            )


@pytest.mark.postgres
def test_values_beyond_bigint_apply_and_verify_on_postgresql(pg_url: str, pg_cli: Cli) -> None:
    db = create_engine(pg_url)
    container = Container(Settings(database_url=pg_url))
    try:
        bars = [int(i) for i in pg_cli("bar", "create", "--weight", str(MAX_WEIGHT)).out_lines]
        bars += [int(i) for i in pg_cli("bar", "create", "--weight", "1").out_lines]
        as_if_completed(db, TOTAL)
        assert pg_cli("verify").out.endswith(
            f"and weight * {TOTAL} (the sum of completed foo amounts)\n"
        )

        (foo,) = pg_cli("foo", "create", "--amount", str(MAX_AMOUNT)).out_lines
        assert pg_cli("foo", "complete", foo).code == 0
        process_all(container, db)  # the recalculation in Python, the totals in NUMERIC
        total = TOTAL + MAX_AMOUNT

        result = pg_cli("verify")
        assert (result.code, result.err) == (0, "")
        assert result.out.endswith(f"and weight * {total} (the sum of completed foo amounts)\n")
        with container.uow() as uow:
            (part,) = uow.parts.parts()
            stored = {each.bar.id: each.bar.value for each in uow.bars.of_part(part.id)}
            baselines = {
                each.bar.id: each.bar.value for each in uow.bars.baselines_of_part(part.id)
            }
            off_zero = {bar.id: bar.value for bar in uow.bars.mismatched(0, len(bars))}
            head_total = uow.parts.projection().head_total
        read = [stored[bar_id] for bar_id in bars] + [off_zero[bar_id] for bar_id in bars]
        assert read == [MAX_WEIGHT * total, total] * 2  # as the repository reads them
        assert [baselines[bar_id] for bar_id in bars] == [MAX_WEIGHT * TOTAL, TOTAL]
        assert (part.applied_total, head_total) == (total, total)
        every = [*read, *baselines.values(), part.applied_total, head_total]
        assert {type(value) for value in every} == {int}  # never Decimal

        # A bar created now starts at weight * its part's applied total, past BIGINT too.
        (late,) = pg_cli("bar", "create", "--weight", str(MAX_WEIGHT)).out_lines
        assert scalar(db, "SELECT value FROM bars WHERE id = :id", id=int(late)) == (
            MAX_WEIGHT * total
        )
        # A rebuild replays the baselines past BIGINT, and the event after them.
        execute(db, "UPDATE bars SET value = 0")
        assert pg_cli("rebuild").code == 0
        assert scalar(db, "SELECT sum(value) FROM bars") == MAX_WEIGHT * total * 2 + total
        assert pg_cli("verify").code == 0
    finally:
        container.close()
        db.dispose()


def test_an_overflow_on_sqlite_fails_the_pass_and_changes_no_bar(sqlite_url: str) -> None:
    db = create_engine(sqlite_url)
    container = Container(Settings(database_url=sqlite_url))
    try:
        (bar_id,) = use_cases.create_bars(container.uow(), MAX_WEIGHT)
        (foo_id,) = use_cases.create_foos(container.uow(), MAX_AMOUNT)
        use_cases.complete_foo(container.uow(), foo_id)
        near_the_top = BIGINT_MAX - 10
        execute(db, "UPDATE bars SET value = :v", v=near_the_top)

        # The pass fails on its part, which backs off; the event waits for it.
        assert apply_events(container, event_ids(db)) == [Outcome.WAITING]

        assert scalar(db, "SELECT value FROM bars WHERE id = :id", id=bar_id) == near_the_top
        assert scalar(db, "SELECT typeof(value) FROM bars") == "integer"
        with db.connect() as connection:
            part = connection.exec_driver_sql(
                "SELECT position, applied_total, failures, last_error FROM bar_parts"
            ).one()
        assert tuple(part[:3]) == (0, 0, 1)
        assert "does not fit SQLite's 64-bit integers; values this large need PostgreSQL" in (
            part.last_error
        )
    finally:
        container.close()
        db.dispose()


@pytest.mark.parametrize(
    ("table", "column"),
    [
        ("bars", "value"),
        ("bar_parts", "applied_total"),
        ("bar_parts", "baseline_total"),
        ("bar_projection", "head_total"),
        ("projection_checkpoint", "applied_total"),
    ],
)
def test_sums_are_guarded_on_sqlite_against_becoming_reals(
    sqlite_url: str, table: str, column: str
) -> None:
    # SQLite would turn an overflowing sum into a REAL, rounded: the CHECK refuses it.
    db = create_engine(sqlite_url)
    container = Container(Settings(database_url=sqlite_url))
    try:
        use_cases.create_bars(container.uow(), 1)
        execute(db, f"UPDATE {table} SET {column} = :v", v=BIGINT_MAX)
        with pytest.raises(IntegrityError, match=f"ck_{table}_{column}_is_integer"):
            execute(db, f"UPDATE {table} SET {column} = {column} + 1")
        assert scalar(db, f"SELECT {column} FROM {table}") == BIGINT_MAX
        assert scalar(db, f"SELECT typeof({column}) FROM {table}") == "integer"
    finally:
        container.close()
        db.dispose()


def test_a_bar_that_would_start_past_sqlites_integers_is_refused_in_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = create_engine(sqlite_url)
    try:
        assert (
            run_in_process(monkeypatch, capsys, sqlite_url, ["bar", "create", "--weight", "1"]).code
            == 0
        )
        execute(db, "UPDATE bar_parts SET applied_total = :t", t=TOTAL)
        result = run_in_process(
            monkeypatch, capsys, sqlite_url, ["bar", "create", "--weight", str(MAX_WEIGHT)]
        )
        assert (result.code, result.out) == (1, "")
        assert result.err.startswith(
            f"postsave: error: database error: {MAX_WEIGHT * TOTAL} does not fit SQLite's "
            "64-bit integers; values this large need PostgreSQL"
        )
        assert len(result.err.splitlines()) == 1
        assert scalar(db, "SELECT count(*) FROM bars") == 1
        assert scalar(db, "SELECT bars FROM bar_parts") == 1
    finally:
        db.dispose()
