"""The SQLite files postsave creates: only when asked to, and readable by their owner only."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from infrastructure.files import DatabaseFileError, ensure_sqlite_directory
from infrastructure.sql.engines import make_engine


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def permissive_umask() -> Iterator[None]:
    """umask 0: any mode below comes from postsave, none from the umask."""
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_an_engine_on_a_missing_file_refuses_and_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(DatabaseFileError) as refused:
        make_engine(f"sqlite:///{tmp_path}/var/postsave.db")

    assert str(refused.value) == (
        f"database file {tmp_path}/var/postsave.db does not exist; run `postsave migrate` first "
        "(or fix POSTSAVE_DATABASE_URL)"
    )
    assert list(tmp_path.iterdir()) == []


@pytest.mark.usefixtures("permissive_umask")
def test_creating_makes_private_directories_and_files_and_sqlite_follows(tmp_path: Path) -> None:
    database = tmp_path / "a" / "b" / "postsave.db"
    engine = make_engine(f"sqlite:///{database}", create=True)
    try:
        with engine.begin() as connection:  # WAL: SQLite adds -wal and -shm next to it
            connection.execute(text("CREATE TABLE t (x INTEGER)"))
            assert {p.name for p in database.parent.iterdir()} >= {
                "postsave.db",
                "postsave.db-wal",
                "postsave.db-shm",
            }
            files = {p.name: mode(p) for p in database.parent.iterdir()}
    finally:
        engine.dispose()

    assert (mode(tmp_path / "a"), mode(tmp_path / "a" / "b")) == (0o700, 0o700)
    assert files == dict.fromkeys(files, 0o600)


def test_creating_leaves_an_existing_file_and_directory_as_they_are(tmp_path: Path) -> None:
    database = tmp_path / "postsave.db"
    database.touch(mode=0o640)
    os.chmod(database, 0o640)
    os.chmod(tmp_path, 0o755)

    make_engine(f"sqlite:///{database}", create=True).dispose()

    assert (mode(database), mode(tmp_path)) == (0o640, 0o755)


def test_a_file_that_cannot_be_created_is_one_clear_error(tmp_path: Path) -> None:
    (tmp_path / "plain-file").touch()
    with pytest.raises(DatabaseFileError, match=r"cannot create database file .*plain-file/x\.db"):
        make_engine(f"sqlite:///{tmp_path}/plain-file/x.db", create=True)


@pytest.mark.usefixtures("permissive_umask")
def test_the_embedded_brokers_directories_are_private(tmp_path: Path) -> None:
    ensure_sqlite_directory(f"sqla+sqlite:///{tmp_path}/var/queues/broker.db")

    assert mode(tmp_path / "var") == mode(tmp_path / "var" / "queues") == 0o700
    assert list((tmp_path / "var" / "queues").iterdir()) == []  # kombu creates the file


def test_in_memory_uri_and_server_databases_create_no_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each URL names something that reads like a relative path: taken for a file, it would
    # appear in the working directory.
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://", "sqlite:///:memory:", "sqlite:///file:x.db?uri=true"):
        make_engine(url, create=True).dispose()
        ensure_sqlite_directory(f"sqla+{url}")
    make_engine("postgresql+psycopg://u@127.0.0.1:1/db").dispose()  # never connected
    ensure_sqlite_directory("amqp://guest@127.0.0.1/postsave/queues")

    assert list(tmp_path.iterdir()) == []
