"""Bar values beyond BIGINT (`weight * sum(amounts)` passes 2**63 - 1 once about 9.2 million foos
at MAX_AMOUNT are completed, for a bar at MAX_WEIGHT): on PostgreSQL they apply and verify; on
SQLite, whose integers stop there, an overflowing update fails and changes no bar."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from sqlalchemy import Engine, create_engine
from sqlalchemy.exc import IntegrityError

from domain import use_cases
from domain.bar import MAX_WEIGHT
from domain.delivery import apply_pass
from domain.foo import MAX_AMOUNT
from infrastructure.bootstrap import Container
from infrastructure.settings import Settings
from tests.cli.conftest import Result, event_ids, execute, process_all, run_in_process, scalar

BIGINT_MAX = 2**63 - 1
# A completed total past what a BIGINT holds at MAX_WEIGHT (9.22e12): 9.4 million foos at
# MAX_AMOUNT. They are one row here, and the bars and projection are set to match directly.
TOTAL = 9_400_000_000_000
assert MAX_WEIGHT * TOTAL > BIGINT_MAX

Cli = Callable[..., Result]


@pytest.fixture
def pg_cli(pg_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> Cli:
    return lambda *argv: run_in_process(monkeypatch, capsys, pg_url, list(argv))


def as_if_completed(db: Engine, total: int) -> None:
    """The database as if foos summing to `total` were completed and applied to every bar."""
    execute(db, "INSERT INTO foos (amount, state, version) VALUES (:t, 'completed', 1)", t=total)
    execute(db, "UPDATE bar_projection SET applied_total = :t, events_applied = 1", t=total)
    execute(db, "UPDATE bars SET value = weight * CAST(:t AS NUMERIC)", t=total)


@pytest.mark.postgres
def test_values_beyond_bigint_apply_and_verify_on_postgresql(pg_url: str, pg_cli: Cli) -> None:
    db = create_engine(pg_url)
    container = Container(Settings(database_url=pg_url))
    try:
        bars = [int(i) for i in pg_cli("bar", "create", "--weight", str(MAX_WEIGHT)).out_lines]
        bars += [int(i) for i in pg_cli("bar", "create", "--weight", "1").out_lines]
        as_if_completed(db, TOTAL)
        assert pg_cli("verify").out.startswith(f"ok: all 2 bars equal weight * {TOTAL}")

        (foo,) = pg_cli("foo", "create", "--amount", str(MAX_AMOUNT)).out_lines
        assert pg_cli("foo", "complete", foo).code == 0
        process_all(container, db)  # the set-based update, past BIGINT
        total = TOTAL + MAX_AMOUNT

        result = pg_cli("verify")
        assert (result.code, result.err) == (0, "")
        assert result.out.startswith(f"ok: all 2 bars equal weight * {total}")
        with container.uow() as uow:
            off_zero = {bar.id: bar.value for bar in uow.bars.mismatched(0, len(bars))}
            values = [off_zero[bar_id] for bar_id in bars]  # as the repository reads them
            applied_total = uow.bars.lock_applied_total()
        assert values == [MAX_WEIGHT * total, total]
        assert {type(value) for value in [*values, applied_total]} == {int}  # never Decimal

        # A bar created now starts at weight * applied total, past BIGINT too.
        (late,) = pg_cli("bar", "create", "--weight", str(MAX_WEIGHT)).out_lines
        assert scalar(db, "SELECT value FROM bars WHERE id = :id", id=int(late)) == (
            MAX_WEIGHT * total
        )
        # What `rebuild` runs: every bar set to weight * total, then checked against it.
        with container.uow() as uow:
            uow.bars.reset_all(total, events=2)
            assert uow.bars.mismatched(total, limit=10) == []
            uow.commit()
        assert pg_cli("verify").code == 0
    finally:
        container.close()
        db.dispose()


def test_an_overflow_on_sqlite_fails_and_changes_no_bar(sqlite_url: str) -> None:
    db = create_engine(sqlite_url)
    container = Container(Settings(database_url=sqlite_url))
    try:
        (bar_id,) = use_cases.create_bars(container.uow(), MAX_WEIGHT)
        (foo_id,) = use_cases.create_foos(container.uow(), MAX_AMOUNT)
        use_cases.complete_foo(container.uow(), foo_id)
        near_the_top = BIGINT_MAX - 10
        execute(db, "UPDATE bars SET value = :v", v=near_the_top)

        # SQLite would turn the sum into a REAL, rounded: the CHECK refuses it.
        with pytest.raises(IntegrityError, match="ck_bars_value_is_integer"):
            apply_pass(container.uow(), event_ids(db)[0])

        assert scalar(db, "SELECT value FROM bars WHERE id = :id", id=bar_id) == near_the_top
        assert scalar(db, "SELECT typeof(value) FROM bars") == "integer"
        assert scalar(db, "SELECT applied_total FROM bar_projection") == 0
    finally:
        container.close()
        db.dispose()


def test_the_projection_total_is_guarded_on_sqlite_too(sqlite_url: str) -> None:
    db = create_engine(sqlite_url)
    try:
        execute(db, "UPDATE bar_projection SET applied_total = :v", v=BIGINT_MAX)
        with pytest.raises(IntegrityError, match="ck_bar_projection_applied_total_is_integer"):
            execute(db, "UPDATE bar_projection SET applied_total = applied_total + 1")
        assert scalar(db, "SELECT applied_total FROM bar_projection") == BIGINT_MAX
    finally:
        db.dispose()


def test_a_bar_that_would_start_past_sqlites_integers_is_refused_in_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    db = create_engine(sqlite_url)
    try:
        execute(db, "UPDATE bar_projection SET applied_total = :t", t=TOTAL)
        result = run_in_process(
            monkeypatch, capsys, sqlite_url, ["bar", "create", "--weight", str(MAX_WEIGHT)]
        )
        assert (result.code, result.out) == (1, "")
        assert result.err.startswith(
            f"postsave: error: database error: {MAX_WEIGHT * TOTAL} does not fit SQLite's "
            "64-bit integers; values this large need PostgreSQL"
        )
        assert len(result.err.splitlines()) == 1
        assert scalar(db, "SELECT count(*) FROM bars") == 0
    finally:
        db.dispose()
