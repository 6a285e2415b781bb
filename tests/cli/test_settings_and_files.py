"""`postsave` against bad settings, missing databases and missing files: one line on stderr
that says what is wrong and what to do, no password anywhere, and no file left behind.

Commands run in process through `infrastructure.cli.main.main`, in an empty working directory."""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from sqlalchemy import Engine
from sqlalchemy.engine import make_url

from infrastructure.cli.main import main
from tests import services
from tests.cli.conftest import SETTINGS, Result, Run, World, run_in_process, snapshot
from tests.cli.test_cli import assert_one_line_error

SECRET = "s3cret"
MISSING_FILE = (
    "postsave: error: database file var/postsave.db does not exist; run `postsave migrate` "
    "first (or fix POSTSAVE_DATABASE_URL)\n"
)


def run_with_defaults(capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """`postsave ...` with every setting at its default (the fixture `_isolated` unsets them)."""
    capsys.readouterr()
    code = main(list(argv))
    out, err = capsys.readouterr()
    return Result(code, out, err)


def assert_no_secret(result: Result) -> None:
    assert SECRET not in result.out + result.err, result


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- settings: refused at start, before anything is read or written ---------------------------

BAD_DATABASE_URLS = [
    (f"postgresql+psycopg://postsave:{SECRET}@127.0.0.1:abc/postsave", "not a number"),
    (f"mysql://postsave:{SECRET}@127.0.0.1/postsave", "does not support ('mysql')"),
    (f"postgresql://postsave:{SECRET}@127.0.0.1/postsave", "does not support ('postgresql')"),
    (f"postgresql+psycopg//postsave:{SECRET}@127.0.0.1/postsave", "is not a database URL"),
]


@pytest.mark.parametrize(("url", "problem"), BAD_DATABASE_URLS)
@pytest.mark.parametrize("argv", [["status"], ["foo", "complete", "1"], ["migrate"]])
def test_a_database_url_postsave_cannot_use_is_one_line(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    url: str,
    problem: str,
    argv: list[str],
) -> None:
    result = run_in_process(monkeypatch, capsys, url, argv)
    assert_one_line_error(result, code=2)
    assert result.err.startswith("postsave: error: POSTSAVE_DATABASE_URL='")
    assert problem in result.err
    assert "; use " in result.err or "; fix the port" in result.err  # what to do
    assert_no_secret(result)
    assert list(tmp_path.iterdir()) == []


BAD_BROKER_URLS = [
    ("redis://localhost:6379/0", "does not support ('redis')"),
    ("memory://", "does not support ('memory')"),
    (f"amqp//guest:{SECRET}@127.0.0.1//", "is not a broker URL"),
    (f"amqp://guest:{SECRET}@127.0.0.1:abc//", "not a number"),
    ("sqla+sqlite://", "names no file for the embedded broker"),
]


@pytest.mark.parametrize(("url", "problem"), BAD_BROKER_URLS)
@pytest.mark.parametrize("argv", [["status"], ["foo", "complete", "{pending}"]])
def test_a_broker_url_postsave_cannot_use_is_one_line_and_changes_nothing(
    cli: Run,
    db: Engine,
    world: World,
    monkeypatch: pytest.MonkeyPatch,
    url: str,
    problem: str,
    argv: list[str],
) -> None:
    monkeypatch.setenv("POSTSAVE_BROKER_URL", url)
    before = snapshot(db)
    result = cli(*[part.format(**world.ids()) for part in argv])
    assert_one_line_error(result, code=2)
    assert result.err.startswith("postsave: error: POSTSAVE_BROKER_URL='")
    assert problem in result.err
    assert_no_secret(result)
    assert snapshot(db) == before


def wrong_password_amqp_url() -> str:
    parts = urlsplit(services.AMQP_URL)
    server = f"{parts.hostname}:{parts.port or 5672}"
    return parts._replace(netloc=f"{parts.username or 'guest'}:{SECRET}@{server}").geturl()


@pytest.mark.rabbitmq
def test_a_wrong_broker_password_is_one_line_and_a_failure(
    cli: Run, db: Engine, world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    services.check_rabbitmq()
    monkeypatch.setenv("POSTSAVE_BROKER_URL", wrong_password_amqp_url())
    result = cli("foo", "complete", str(world.pending))  # its commit nudges the relay
    assert "Traceback" not in result.err, result.err
    assert_no_secret(result)
    lines = result.err.splitlines()
    assert len(lines) == 1, result.err
    assert lines[0].startswith("postsave: error: "), result.err
    assert "POSTSAVE_BROKER_URL" in result.err  # what to fix
    assert "saved" in result.err  # the change itself is committed: not to be made again
    assert result.code != 0


# --- PostgreSQL: a missing database or role is named as such ----------------------------------


@pytest.fixture
def pg_server() -> Iterator[None]:
    services.check_postgres()
    yield


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_server")
@pytest.mark.parametrize("argv", [["status"], ["migrate"], ["foo", "create", "--amount", "1"]])
@pytest.mark.parametrize(
    ("change", "missing"),
    [
        ({"database": "postsave_no_such_database"}, 'database "postsave_no_such_database"'),
        ({"username": "postsave_no_such_role"}, 'role "postsave_no_such_role"'),
    ],
    ids=["database", "role"],
)
def test_a_missing_database_or_role_is_named_and_not_sent_to_migrate(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    change: dict[str, str],
    missing: str,
    argv: list[str],
) -> None:
    url = make_url(services.PG_SERVER_URL).set(password=SECRET, **change)  # type: ignore[arg-type]
    result = run_in_process(monkeypatch, capsys, url.render_as_string(hide_password=False), argv)
    assert_one_line_error(result, code=1)
    shown = url.render_as_string(hide_password=True)
    assert result.err == (
        f"postsave: error: {missing} does not exist (database: {shown}); "
        "create it or fix POSTSAVE_DATABASE_URL\n"
    )
    assert_no_secret(result)


# --- files: only where a command writes, and private ------------------------------------------

COMMANDS = [
    ["status"],
    ["status", "--json"],
    ["verify"],
    ["rebuild"],
    ["rebuild", "--on-workers"],
    ["dead", "list"],
    ["dead", "retry"],
    ["dead", "retry", "1"],
    ["foo", "create", "--amount", "1"],
    ["foo", "complete", "1"],
    ["foo", "cancel", "1"],
    ["bar", "create", "--weight", "1"],
    ["prune", "--older-than", "0s"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=" ".join)
def test_a_command_on_a_missing_database_file_says_so_and_creates_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: list[str]
) -> None:
    result = run_with_defaults(capsys, *argv)
    assert_one_line_error(result, code=1)
    assert result.err == MISSING_FILE
    assert list(tmp_path.iterdir()) == []  # no ./var/, no database, no broker directory


def test_a_missing_database_file_elsewhere_creates_nothing_either(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/postsave.db"
    result = run_in_process(monkeypatch, capsys, url, ["status"])
    assert_one_line_error(result, code=1)
    assert f"database file {tmp_path}/deep/er/postsave.db does not exist" in result.err
    assert list(tmp_path.iterdir()) == []


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: any mode below comes from postsave, none from the umask."""
    previous = os.umask(0)
    yield
    os.umask(previous)


@pytest.mark.usefixtures("permissive_umask")
def test_migrate_creates_a_private_directory_and_database_that_the_commands_then_use(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    result = run_with_defaults(capsys, "migrate")
    assert (result.code, result.err) == (0, "")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["var"]
    assert mode(tmp_path / "var") == 0o700
    assert mode(tmp_path / "var" / "postsave.db") == 0o600

    ids = run_with_defaults(capsys, "foo", "create", "--amount", "2", "--count", "2").out_lines
    assert run_with_defaults(capsys, "status").code == 0
    assert len(ids) == 2
    files = list((tmp_path / "var").iterdir())
    assert [p.name for p in files] == ["postsave.db"]  # no broker: nothing was nudged
    assert {mode(p) for p in files} == {0o600}


def test_the_demo_shows_its_urls_without_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # A database file that cannot be created stops the demo before any worker starts.
    (tmp_path / "plain-file").touch()
    monkeypatch.setenv("POSTSAVE_BROKER_URL", f"amqp://guest:{SECRET}@127.0.0.1:1//")
    url = f"sqlite:///{tmp_path}/plain-file/postsave.db"
    result = run_in_process(monkeypatch, capsys, url, ["demo"])
    assert result.out_lines == [
        f"postsave demo: database {url}, broker amqp://guest:***@127.0.0.1:1//"
    ]
    assert result.code == 1
    assert result.err.startswith(f"postsave: error: cannot create database file {tmp_path}/")
    assert len(result.err.splitlines()) == 1
    assert_no_secret(result)


@pytest.mark.postgres
@pytest.mark.usefixtures("pg_server")
def test_the_demo_and_its_errors_show_a_postgresql_url_without_its_password(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = make_url(services.PG_SERVER_URL).set(password=SECRET, database="postsave_no_such_db")
    result = run_in_process(
        monkeypatch, capsys, url.render_as_string(hide_password=False), ["demo"]
    )
    shown = url.render_as_string(hide_password=True)
    assert result.out_lines == [
        f"postsave demo: database {shown}, broker sqla+sqlite:///var/broker.db"
    ]
    assert result.err.startswith('postsave: error: database "postsave_no_such_db" does not exist')
    assert result.code == 1
    assert_no_secret(result)


REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("document", "entry"),
    [
        ("README.md", "| `{}` |"),
        ("docs/operations.md", "| `{}` |"),
        ("deploy/postsave.env.example", "{}="),
    ],
)
def test_every_setting_is_documented_where_operators_look(document: str, entry: str) -> None:
    source = (REPO / "infrastructure" / "settings.py").read_text()
    names = set(re.findall(r'"(POSTSAVE_[A-Z_]+)"', source))
    assert {"POSTSAVE_DATABASE_URL", "POSTSAVE_RETENTION"} <= names  # the pattern finds them
    text = (REPO / document).read_text()
    assert sorted(name for name in names if entry.format(name) not in text) == []


def test_the_tests_keep_every_setting_of_the_callers_environment_out() -> None:
    source = (REPO / "infrastructure" / "settings.py").read_text()
    names = set(re.findall(r'"(POSTSAVE_[A-Z_]+)"', source))
    assert sorted(names - set(SETTINGS)) == []
