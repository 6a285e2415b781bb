"""Fixtures for the command-line tests: run `postsave` in process, snapshot every table."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, inspect, text

from domain import use_cases
from domain.recalculation import EXAMPLE_RECALCULATION
from infrastructure.bootstrap import Container
from infrastructure.cli.main import main
from infrastructure.settings import Settings
from tests import services
from tests.deliveries import apply_events
from tests.recalculations import DIGEST

# Every setting infrastructure/settings.py reads (test_settings_and_files checks the list).
SETTINGS = (
    "POSTSAVE_DATABASE_URL",
    "POSTSAVE_BROKER_URL",
    "POSTSAVE_POLL_INTERVAL",
    "POSTSAVE_BATCH_SIZE",
    "POSTSAVE_MAX_IN_FLIGHT",
    "POSTSAVE_LEASE_SECONDS",
    "POSTSAVE_MAX_ATTEMPTS",
    "POSTSAVE_COALESCE_LIMIT",
    "POSTSAVE_NUDGE",
    "POSTSAVE_BROKER_TIMEOUT",
    "POSTSAVE_STATEMENT_TIMEOUT",
    "POSTSAVE_LOG_FORMAT",
    "POSTSAVE_RETENTION",
    "POSTSAVE_PRUNE_INTERVAL",
    "POSTSAVE_RECALCULATION",
    "POSTSAVE_PART_SIZE",
    "POSTSAVE_QUEUE_TYPE",
    "POSTSAVE_PART_TIME_LIMIT",
)

# Every table postsave writes, with the column that orders its rows.
TABLES = {
    "foos": "id",
    "bars": "id",
    "outbox_events": "id",
    "bar_parts": "id",
    "bar_baselines": "bar_id",
    "bar_projection": "id",
    "outbox_counters": "id",
    "projection_checkpoint": "id",
}

Snapshot = dict[str, list[tuple[Any, ...]]]


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting leaks in from the caller's environment; ./var/ would land in tmp_path."""
    for name in SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str

    @property
    def out_lines(self) -> list[str]:
        return self.out.splitlines()


Run = Callable[..., Result]


def run_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, argv: list[str]
) -> Result:
    monkeypatch.setenv("POSTSAVE_DATABASE_URL", url)
    capsys.readouterr()  # whatever came before is not this command's output
    code = main(argv)
    out, err = capsys.readouterr()
    return Result(code, out, err)


@pytest.fixture
def cli(
    database_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Run:
    """`cli("foo", "create", "--amount", "3")` runs `postsave` on the test's database."""

    def run(*argv: str) -> Result:
        return run_in_process(monkeypatch, capsys, database_url, list(argv))

    return run


@pytest.fixture
def db(database_url: str) -> Iterator[Engine]:
    """A plain engine on the test's database, for snapshots and deliberate corruption."""
    engine = create_engine(database_url)
    yield engine
    engine.dispose()


def snapshot(engine: Engine) -> Snapshot:
    """Every row of every postsave table, in key order."""
    with engine.connect() as connection:
        return {
            table: [
                tuple(row)
                for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY {key}"))
            ]
            for table, key in TABLES.items()
        }


def table_names(engine: Engine) -> list[str]:
    return sorted(inspect(engine).get_table_names())


def execute(engine: Engine, sql: str, **params: Any) -> None:
    with engine.begin() as connection:
        connection.execute(text(sql), params)


def scalar(engine: Engine, sql: str, **params: Any) -> Any:
    with engine.connect() as connection:
        return connection.execute(text(sql), params).scalar_one()


def event_ids(engine: Engine) -> list[int]:
    with engine.connect() as connection:
        return list(connection.execute(text("SELECT id FROM outbox_events ORDER BY id")).scalars())


def process_all(container: Container, engine: Engine) -> None:
    """What the workers would do: apply every unprocessed event once."""
    with engine.connect() as connection:
        ids = connection.execute(
            text("SELECT id FROM outbox_events WHERE state <> 'processed' ORDER BY id")
        ).scalars()
        wanted = list(ids)
    apply_events(container, wanted)


@dataclass(frozen=True)
class World:
    """A database with a foo in every state, bars, processed and pending events."""

    pending: int  # a pending foo, amount 5
    completed: int  # a completed foo, amount 7
    cancelled: int  # completed then cancelled, amount 3
    revised: int  # completed with 11, revised to 13
    bars: list[int]
    events: list[int]  # 5 events; the first two processed, the other three pending

    def ids(self) -> dict[str, int]:
        return {
            "pending": self.pending,
            "completed": self.completed,
            "cancelled": self.cancelled,
            "revised": self.revised,
            "bar": self.bars[0],
            "processed_event": self.events[0],
            "pending_event": self.events[-1],
        }


@pytest.fixture
def world(container: Container, db: Engine) -> World:
    uow = container.uow
    bars = use_cases.create_bars(uow(), 2, 2) + use_cases.create_bars(uow(), 3)
    pending, completed, cancelled, revised = (
        use_cases.create_foos(uow(), amount)[0] for amount in (5, 7, 3, 11)
    )
    use_cases.complete_foos(uow(), [completed, cancelled])
    use_cases.cancel_foos(uow(), [cancelled])
    use_cases.complete_foo(uow(), revised)
    use_cases.revise_foo(uow(), revised, 13)
    events = event_ids(db)
    assert len(events) == 5
    apply_events(container, events[:2])
    return World(pending, completed, cancelled, revised, bars, events)


@pytest.fixture(params=["sqlite", pytest.param("postgresql", marks=pytest.mark.postgres)])
def unmigrated_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database that exists but was never migrated: an empty SQLite file, an empty PostgreSQL
    database."""
    if request.param == "sqlite":
        path = tmp_path / "never-migrated.db"
        path.touch()
        yield f"sqlite:///{path}"
        return
    services.check_postgres()
    name = services.create_database()
    yield services.database_url(name)
    services.drop_database(name)


@dataclass(frozen=True)
class Running:
    """The recalculation the bars are computed with, and a container that applies events
    through it, as workers running it do."""

    name: str
    container: Container

    @property
    def replay(self) -> str:
        """What `verify` replays the bars through, as it says."""
        return f"a replay of their baselines and the event log through {self.name}"


@pytest.fixture(params=[EXAMPLE_RECALCULATION, DIGEST], ids=["example", "digest"])
def running(
    request: pytest.FixtureRequest,
    cli: Run,
    world: World,
    database_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[Running]:
    """The world's bars computed with the example's recalculation, or with a team's own that
    every command and worker runs (the digest, switched to by `postsave rebuild`)."""
    if request.param != EXAMPLE_RECALCULATION:
        monkeypatch.setenv("POSTSAVE_RECALCULATION", request.param)
        assert cli("rebuild").code == 0
    built = Container(Settings(database_url=database_url, recalculation=request.param))
    yield Running(request.param, built)
    built.close()
