"""`postsave`, the command line: every command, and every bad input changes nothing.

Commands run in process through `infrastructure.cli.main.main`; a few run the installed console
script to prove the entry point. Each runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine

from domain.events import PAYLOAD_VERSION
from infrastructure.bootstrap import Container
from tests.cli.conftest import (
    SETTINGS,
    Result,
    Run,
    World,
    event_ids,
    execute,
    process_all,
    run_in_process,
    scalar,
    snapshot,
    table_names,
)
from tests.deliveries import apply_events

BIGINT_MAX = 2**63 - 1
UNKNOWN = "999"


def assert_one_line_error(result: Result, code: int) -> None:
    """What every refused command looks like: one line on stderr, nothing on stdout."""
    assert result.code == code, result
    assert result.out == "", result
    assert "Traceback" not in result.err, result.err
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert result.err.endswith("\n")
    assert lines[0].startswith("postsave: error: "), result.err


# --- bad input changes nothing ----------------------------------------------------------------

MALFORMED_IDS = ["abc", "0", "-1", "1.5", "", " 1", "\uff11", "0x1"]
ID_COMMANDS = [
    ["foo", "complete", "{id}"],
    ["foo", "revise", "{id}", "--amount", "1"],
    ["foo", "cancel", "{id}"],
    ["dead", "retry", "{id}"],
]
BAD_NUMBERS = ["-1", "abc", "1.5", "", "1e3", "+-1", "\u0663"]

USAGE_ERRORS = [
    *[
        [part.replace("{id}", bad) for part in command]
        for command in ID_COMMANDS
        for bad in MALFORMED_IDS
    ],
    # a valid id followed by a malformed one: parsing fails before anything runs
    ["foo", "complete", "{pending}", "abc"],
    ["foo", "cancel", "{completed}", "0"],
    *[["foo", "create", "--amount", bad] for bad in BAD_NUMBERS],
    *[["foo", "revise", "{pending}", "--amount", bad] for bad in BAD_NUMBERS],
    *[["bar", "create", "--weight", bad] for bad in BAD_NUMBERS],
    ["foo", "create", "--amount=-5"],
    ["foo", "create", "--amount", "1", "--count", "0"],
    ["foo", "create", "--amount", "1", "--count", "-2"],
    ["foo", "create", "--amount", "1", "--count", "two"],
    ["bar", "create", "--weight", "1", "--count", "0"],
    ["bar", "create", "--weight", "1", "--count", "1.5"],
    # the command line itself is incomplete or wrong
    [],
    ["foo"],
    ["frobnicate"],
    ["foo", "create"],
    ["foo", "complete"],
    ["foo", "cancel"],
    ["foo", "revise", "{pending}"],
    ["foo", "revise", "--amount", "3"],
    ["foo", "revise", "{pending}", "{completed}", "--amount", "3"],
    ["bar", "create"],
    ["bar", "create", "--weight", "1", "--amount", "1"],
    ["status", "--bogus"],
    ["verify", "extra"],
    ["dead"],
    ["dead", "bury", "1"],
]

DOMAIN_ERRORS = [
    # unknown foo
    ["foo", "complete", UNKNOWN],
    ["foo", "revise", UNKNOWN, "--amount", "1"],
    ["foo", "cancel", UNKNOWN],
    # one valid and one unknown id: all or nothing
    ["foo", "complete", "{pending}", UNKNOWN],
    ["foo", "complete", UNKNOWN, "{pending}"],
    ["foo", "cancel", "{completed}", UNKNOWN],
    # forbidden transitions
    ["foo", "complete", "{completed}"],
    ["foo", "complete", "{cancelled}"],
    ["foo", "cancel", "{cancelled}"],
    ["foo", "revise", "{cancelled}", "--amount", "4"],
    # a forbidden transition after an allowed one: the allowed one is rolled back
    ["foo", "complete", "{pending}", "{completed}"],
    ["foo", "cancel", "{completed}", "{revised}", "{cancelled}"],
    # retrying events that are not dead: processed, pending, unknown; all or nothing
    ["dead", "retry", "{processed_event}"],
    ["dead", "retry", "{pending_event}"],
    ["dead", "retry", UNKNOWN],
]


def _fill(argv: list[str], world: World) -> list[str]:
    return [part.format(**world.ids()) for part in argv]


def _case_id(argv: list[str]) -> str:
    return " ".join(repr(part) if part.strip() != part or not part else part for part in argv)


@pytest.mark.parametrize("argv", USAGE_ERRORS, ids=_case_id)
def test_usage_error_changes_nothing(cli: Run, db: Engine, world: World, argv: list[str]) -> None:
    before = snapshot(db)
    assert_one_line_error(cli(*_fill(argv, world)), code=2)
    assert snapshot(db) == before


@pytest.mark.parametrize("argv", DOMAIN_ERRORS, ids=_case_id)
def test_domain_error_changes_nothing(cli: Run, db: Engine, world: World, argv: list[str]) -> None:
    before = snapshot(db)
    result = cli(*_fill(argv, world))
    assert_one_line_error(result, code=1)
    assert "nothing was changed" in result.err
    assert snapshot(db) == before


def test_unknown_foo_is_named(cli: Run, world: World) -> None:
    result = cli("foo", "complete", str(world.pending), UNKNOWN)
    assert result.err == f"postsave: error: foo {UNKNOWN} does not exist; nothing was changed\n"


def test_forbidden_transition_is_explained(cli: Run, world: World) -> None:
    result = cli("foo", "cancel", str(world.cancelled))
    assert f"foo {world.cancelled} is already cancelled" in result.err
    result = cli("foo", "complete", str(world.completed))
    assert "only a pending foo can be completed" in result.err
    result = cli("foo", "revise", str(world.cancelled), "--amount", "1")
    assert "cannot be revised" in result.err


def test_retrying_an_event_that_is_not_dead_names_it(cli: Run, db: Engine, world: World) -> None:
    dead, alive = world.events[2], world.events[3]
    execute(db, "UPDATE outbox_events SET state='dead', last_error='boom' WHERE id = :id", id=dead)
    before = snapshot(db)
    result = cli("dead", "retry", str(dead), str(alive))
    assert_one_line_error(result, code=1)
    assert f"event(s) {alive} are not dead" in result.err
    assert snapshot(db) == before  # the dead one stays dead: all or nothing


def test_malformed_id_message_names_the_argument(cli: Run, world: World) -> None:
    result = cli("foo", "complete", "abc")
    assert result.err.startswith("postsave: error: argument ID: 'abc' is not an id")
    assert "postsave foo complete --help" in result.err


@pytest.mark.parametrize(
    "argv",
    [
        ["foo", "complete", str(BIGINT_MAX + 1)],
        ["foo", "cancel", "{completed}", str(BIGINT_MAX + 1)],
        ["foo", "create", "--amount", str(BIGINT_MAX + 1)],
        ["foo", "revise", "{pending}", "--amount", str(10**20)],
        ["bar", "create", "--weight", str(10**20)],
        ["dead", "retry", str(10**20)],
    ],
    ids=_case_id,
)
def test_number_beyond_bigint_is_a_usage_error(
    cli: Run, db: Engine, world: World, argv: list[str]
) -> None:
    before = snapshot(db)
    assert_one_line_error(cli(*_fill(argv, world)), code=2)
    assert snapshot(db) == before


# --- the database and the settings ------------------------------------------------------------


@pytest.mark.parametrize(
    "argv",
    [
        ["foo", "create", "--amount", "1"],
        ["foo", "complete", "1"],
        ["foo", "revise", "1", "--amount", "2"],
        ["foo", "cancel", "1"],
        ["bar", "create", "--weight", "1"],
        ["status"],
        ["status", "--json"],
        ["verify"],
        ["rebuild"],
        ["dead", "list"],
        ["dead", "retry"],
        ["dead", "retry", "1"],
    ],
    ids=_case_id,
)
def test_never_migrated_database_says_to_migrate(
    unmigrated_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    argv: list[str],
) -> None:
    result = run_in_process(monkeypatch, capsys, unmigrated_url, argv)
    assert_one_line_error(result, code=1)
    assert "run `postsave migrate`" in result.err
    assert "no postsave tables" in result.err
    engine = create_engine(unmigrated_url)
    try:
        assert table_names(engine) == []
    finally:
        engine.dispose()


def test_migrate_then_the_same_database_works(
    unmigrated_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    result = run_in_process(monkeypatch, capsys, unmigrated_url, ["migrate"])
    assert (result.code, result.err) == (0, "")
    result = run_in_process(monkeypatch, capsys, unmigrated_url, ["status", "--json"])
    assert result.code == 0
    assert json.loads(result.out)["pending"] == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTSAVE_BATCH_SIZE", "abc"),
        ("POSTSAVE_BATCH_SIZE", "0"),
        ("POSTSAVE_BATCH_SIZE", "1.5"),
        ("POSTSAVE_MAX_IN_FLIGHT", "-3"),
        ("POSTSAVE_MAX_ATTEMPTS", "ten"),
        ("POSTSAVE_POLL_INTERVAL", "soon"),
        ("POSTSAVE_LEASE_SECONDS", "0"),
        ("POSTSAVE_COALESCE_LIMIT", "-1"),
        ("POSTSAVE_RECALCULATION", "recalculate"),
        ("POSTSAVE_RECALCULATION", "domain.recalculation:"),
        ("POSTSAVE_RECALCULATION", "no such:module"),
        ("POSTSAVE_PART_SIZE", "0"),
        ("POSTSAVE_PART_SIZE", "1.5"),
        ("POSTSAVE_PART_SIZE", "many"),
        ("POSTSAVE_PART_TIME_LIMIT", "-5"),
        ("POSTSAVE_PART_TIME_LIMIT", "5 min"),
    ],
)
@pytest.mark.parametrize(
    "argv", [["status"], ["foo", "create", "--amount", "1"], ["foo", "complete", "{pending}"]]
)
def test_bad_setting_is_one_line_and_changes_nothing(
    cli: Run,
    db: Engine,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    name: str,
    value: str,
    argv: list[str],
) -> None:
    monkeypatch.setenv(name, value)
    before = snapshot(db)
    result = cli(*_fill(argv, world))
    assert_one_line_error(result, code=2)
    assert f"{name}={value!r}" in result.err
    assert snapshot(db) == before


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("POSTSAVE_POLL_INTERVAL", "nan"),
        ("POSTSAVE_POLL_INTERVAL", "inf"),
        ("POSTSAVE_LEASE_SECONDS", "nan"),
        ("POSTSAVE_LEASE_SECONDS", "inf"),
    ],
)
def test_non_finite_setting_is_refused(
    cli: Run, db: Engine, monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    before = snapshot(db)
    assert_one_line_error(cli("foo", "create", "--amount", "1"), code=2)
    assert snapshot(db) == before


@pytest.mark.parametrize("url", ["not a url", "postgresql+psycopg//missing-colon"])
def test_unparseable_database_url_is_a_settings_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str
) -> None:
    result = run_in_process(monkeypatch, capsys, url, ["status"])
    assert_one_line_error(result, code=2)
    assert "POSTSAVE_DATABASE_URL" in result.err


def test_unreachable_database_is_one_line_without_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "postgresql+psycopg://postsave:s3cret@127.0.0.1:1/postsave?connect_timeout=3"
    result = run_in_process(monkeypatch, capsys, url, ["status"])
    assert_one_line_error(result, code=1)
    assert "database error" in result.err
    assert "s3cret" not in result.err


# --- foos and bars ----------------------------------------------------------------------------


def test_foo_create_prints_each_id_on_its_own_line(cli: Run, db: Engine) -> None:
    result = cli("foo", "create", "--amount", "4", "--count", "3")
    assert (result.code, result.err) == (0, "")
    with db.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, amount, state FROM foos ORDER BY id").all()
    assert result.out == "".join(f"{row.id}\n" for row in rows)
    assert len(rows) == 3
    assert {(row.amount, row.state) for row in rows} == {(4, "pending")}
    assert event_ids(db) == []  # creating a foo emits nothing


def test_foo_create_defaults_to_one(cli: Run, db: Engine) -> None:
    result = cli("foo", "create", "--amount", "0")
    assert result.code == 0
    assert result.out_lines == [str(scalar(db, "SELECT id FROM foos"))]


def test_bar_create_prints_each_id_on_its_own_line(cli: Run, db: Engine) -> None:
    result = cli("bar", "create", "--weight", "6", "--count", "2")
    assert (result.code, result.err) == (0, "")
    with db.connect() as connection:
        rows = connection.exec_driver_sql("SELECT id, weight, value FROM bars ORDER BY id").all()
    assert result.out == "".join(f"{row.id}\n" for row in rows)
    assert [(row.weight, row.value) for row in rows] == [(6, 0), (6, 0)]


def test_bar_created_later_starts_from_the_applied_events(
    cli: Run, db: Engine, world: World
) -> None:
    # world applied +7 and +3; the three pending events reach the new bar like any other.
    (bar_id,) = map(int, cli("bar", "create", "--weight", "10").out_lines)
    assert scalar(db, "SELECT value FROM bars WHERE id = :id", id=bar_id) == 100


def test_foo_commands_write_the_events_in_the_same_transaction(cli: Run, db: Engine) -> None:
    a, b, c = cli("foo", "create", "--amount", "10", "--count", "3").out_lines

    assert cli("foo", "complete", a, b).out_lines == [a, b]
    assert cli("foo", "revise", a, "--amount", "15").out_lines == [a]
    assert cli("foo", "revise", c, "--amount", "1").out_lines == [c]  # pending: no event
    assert cli("foo", "cancel", b, c).out_lines == [b, c]  # c was pending: no event

    with db.connect() as connection:
        states = dict(connection.exec_driver_sql("SELECT id, state FROM foos").all())
        events = connection.exec_driver_sql(
            "SELECT event_type, payload, state FROM outbox_events ORDER BY id"
        ).all()
    assert states == {int(a): "completed", int(b): "cancelled", int(c): "cancelled"}
    payloads = [
        (kind, p if isinstance(p, dict) else json.loads(p), state) for kind, p, state in events
    ]
    assert payloads == [  # pending events, each with its delta and the foo as it left it
        written("FooCompleted", a, delta=10, amount=10, state="completed"),
        written("FooCompleted", b, delta=10, amount=10, state="completed"),
        written("FooRevised", a, delta=5, amount=15, state="completed"),
        written("FooCancelled", b, delta=-10, amount=10, state="cancelled"),
    ]


def written(
    kind: str, foo: str, delta: int, amount: int, state: str
) -> tuple[str, dict[str, object], str]:
    payload = {"v": PAYLOAD_VERSION, "foo_id": int(foo), "delta": delta}
    return (kind, {**payload, "amount": amount, "state": state}, "pending")


# --- status -----------------------------------------------------------------------------------


def _status(cli: Run) -> dict[str, object]:
    result = cli("status", "--json")
    assert (result.code, result.err) == (0, "")
    assert len(result.out_lines) == 1
    status = json.loads(result.out)
    assert isinstance(status, dict)
    return status


def test_status_json_counts_every_state(cli: Run, db: Engine, container: Container) -> None:
    status = _status(cli)
    assert {"pending", "in_flight", "processed", "dead", "oldest_pending_age_s"} <= set(status)
    assert {k: status[k] for k in ("pending", "in_flight", "processed", "dead")} == dict.fromkeys(
        ("pending", "in_flight", "processed", "dead"), 0
    )
    assert status["oldest_pending_age_s"] is None

    ids = cli("foo", "create", "--amount", "2", "--count", "5").out_lines
    cli("foo", "complete", *ids)
    status = _status(cli)
    assert (status["pending"], status["in_flight"], status["processed"], status["dead"]) == (
        5,
        0,
        0,
        0,
    )
    age = status["oldest_pending_age_s"]
    assert isinstance(age, float)
    assert 0 <= age < 60

    first, second, third, *_ = event_ids(db)
    apply_events(container, [first])
    execute(db, "UPDATE outbox_events SET state = 'dispatched' WHERE id = :id", id=second)
    execute(
        db, "UPDATE outbox_events SET state = 'dead', last_error = 'boom' WHERE id = :id", id=third
    )
    status = _status(cli)
    assert (status["pending"], status["in_flight"], status["processed"], status["dead"]) == (
        2,
        1,
        1,
        1,
    )

    process_all(container, db)  # a dead event stays parked until `dead retry`
    status = _status(cli)
    assert (status["pending"], status["in_flight"], status["processed"], status["dead"]) == (
        0,
        0,
        4,
        1,
    )
    assert status["oldest_pending_age_s"] is None


def test_status_age_is_the_oldest_unfinished_event(cli: Run, db: Engine) -> None:
    ids = cli("foo", "create", "--amount", "2", "--count", "2").out_lines
    cli("foo", "complete", *ids)
    oldest = event_ids(db)[0]
    backdated = "2000-01-01 00:00:00" if db.dialect.name == "sqlite" else "2000-01-01 00:00:00+00"
    execute(db, "UPDATE outbox_events SET occurred_at = :t WHERE id = :id", t=backdated, id=oldest)
    age = _status(cli)["oldest_pending_age_s"]
    assert isinstance(age, float)
    assert age > 20 * 365 * 86400


def test_status_plain_text(cli: Run) -> None:
    ids = cli("foo", "create", "--amount", "2", "--count", "2").out_lines
    cli("foo", "complete", *ids)
    result = cli("status")
    assert (result.code, result.err) == (0, "")
    lines = result.out_lines
    assert [line.split()[:2] for line in lines[:4]] == [
        ["pending", "2"],
        ["in", "flight"],
        ["processed", "0"],
        ["dead", "0"],
    ]
    assert lines[1].split()[2] == "0"
    assert lines[4].startswith("oldest unfinished")
    assert lines[4].endswith(" s")


# --- dead letters -----------------------------------------------------------------------------


def _kill(db: Engine, event_id: int, failures: int = 10, dispatches: int = 12) -> None:
    execute(
        db,
        "UPDATE outbox_events SET state='dead', last_error='boom', failures=:f, dispatches=:d "
        "WHERE id = :id",
        f=failures,
        d=dispatches,
        id=event_id,
    )


def test_dead_list_and_retry(cli: Run, db: Engine, world: World) -> None:
    assert cli("dead", "list").out == ""
    first, second = world.events[2], world.events[4]
    _kill(db, first)
    _kill(db, second, failures=3, dispatches=4)

    result = cli("dead", "list")
    assert (result.code, result.err) == (0, "")
    assert result.out_lines == [
        f"{first}\tFooCancelled\tfailures=10\tdispatches=12\tboom",
        f"{second}\tFooRevised\tfailures=3\tdispatches=4\tboom",
    ]
    assert _status(cli)["dead"] == 2

    result = cli("dead", "retry", str(second))
    assert (result.code, result.err, result.out_lines) == (0, "", [str(second)])
    with db.connect() as connection:
        row = connection.exec_driver_sql(
            f"SELECT state, failures, dispatches, last_error FROM outbox_events WHERE id = {second}"
        ).one()
    # Failures start again, dispatches are history; the last error stays until it is processed.
    assert tuple(row) == ("pending", 0, 4, "boom")
    assert cli("dead", "list").out_lines == [
        f"{first}\tFooCancelled\tfailures=10\tdispatches=12\tboom"
    ]
    assert _status(cli)["dead"] == 1


def test_dead_retry_without_ids_revives_every_dead_event(
    cli: Run, db: Engine, world: World, container: Container
) -> None:
    for event_id in world.events[2:]:
        _kill(db, event_id)
    result = cli("dead", "retry")
    assert (result.code, result.err) == (0, "")
    assert result.out_lines == [str(event_id) for event_id in world.events[2:]]
    assert cli("dead", "list").out == ""
    status = _status(cli)
    assert (status["pending"], status["dead"]) == (3, 0)
    process_all(container, db)
    assert cli("verify").code == 0


def test_dead_retry_without_ids_and_nothing_dead_does_nothing(
    cli: Run, db: Engine, world: World
) -> None:
    before = snapshot(db)
    result = cli("dead", "retry")
    assert (result.code, result.out, result.err) == (0, "", "")
    assert snapshot(db) == before


def test_dead_retry_of_a_repeated_id_retries_it_once(cli: Run, db: Engine, world: World) -> None:
    event_id = str(world.events[3])
    _kill(db, int(event_id))
    result = cli("dead", "retry", event_id, event_id)
    assert (result.code, result.out_lines) == (0, [event_id])


# --- the installed console script -------------------------------------------------------------

SCRIPT = Path(sys.executable).with_name("postsave")


def _script(url: str, cwd: Path, *argv: str, **extra_env: str) -> Result:
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(POSTSAVE_DATABASE_URL=url, **extra_env)
    done = subprocess.run(
        [str(SCRIPT), *argv], env=env, cwd=cwd, capture_output=True, text=True, timeout=120
    )
    return Result(done.returncode, done.stdout, done.stderr)


def test_console_script_is_installed() -> None:
    assert SCRIPT.is_file(), f"no console script at {SCRIPT}: run `pip install -e .`"
    assert os.access(SCRIPT, os.X_OK)


def test_console_script_creates_and_completes(
    database_url: str, db: Engine, tmp_path: Path
) -> None:
    result = _script(database_url, tmp_path, "foo", "create", "--amount", "3", "--count", "2")
    assert (result.code, result.err) == (0, "")
    ids = result.out_lines
    assert len(ids) == 2
    result = _script(database_url, tmp_path, "foo", "complete", *ids)
    assert (result.code, result.err, result.out_lines) == (0, "", ids)
    assert scalar(db, "SELECT count(*) FROM outbox_events") == 2
    result = _script(database_url, tmp_path, "status", "--json")
    assert json.loads(result.out)["pending"] == 2


def test_console_script_domain_error(database_url: str, db: Engine, tmp_path: Path) -> None:
    before = snapshot(db)
    result = _script(database_url, tmp_path, "foo", "complete", UNKNOWN)
    assert_one_line_error(result, code=1)
    assert snapshot(db) == before


def test_console_script_usage_and_settings_errors(
    database_url: str, db: Engine, tmp_path: Path
) -> None:
    before = snapshot(db)
    assert_one_line_error(_script(database_url, tmp_path, "foo", "create", "--amount", "x"), 2)
    result = _script(database_url, tmp_path, "status", POSTSAVE_BATCH_SIZE="abc")
    assert_one_line_error(result, 2)
    assert "POSTSAVE_BATCH_SIZE" in result.err
    assert snapshot(db) == before


def test_migrate_works_from_a_non_editable_install(tmp_path: Path) -> None:
    # What `pip install .` puts in site-packages: the packages that pyproject.toml lists.
    project = Path(__file__).resolve().parents[2]
    installed = tmp_path / "site-packages"
    listed = tomllib.loads((project / "pyproject.toml").read_text())["tool"]["setuptools"]
    for package in (name.rstrip("*") for name in listed["packages"]["find"]["include"]):
        shutil.copytree(
            project / package, installed / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    url = f"sqlite:///{tmp_path / 'installed.db'}"
    env = {k: v for k, v in os.environ.items() if k not in SETTINGS}
    env.update(PYTHONPATH=str(installed), POSTSAVE_DATABASE_URL=url)
    program = "import sys; from infrastructure.cli.main import main; sys.exit(main())"
    done = subprocess.run(
        [sys.executable, "-c", program, "migrate"],
        env=env,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode, done.stderr) == (0, "")
    engine = create_engine(url)
    try:
        assert "outbox_events" in table_names(engine)
    finally:
        engine.dispose()
