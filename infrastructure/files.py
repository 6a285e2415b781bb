"""Files and directories postsave creates, and the SQLite files of the embedded setup, which
both the database and the embedded broker use.

Files and directories postsave creates are readable by their owner only, whatever the umask.

The embedded database holds every foo, bar and event, and the demo's logs name the broker: a
directory postsave creates is 0700, a file 0600. SQLite gives a database's -wal and -shm files
the database file's own mode."""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import make_url

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def make_private_directories(directory: Path) -> None:
    """Create `directory` and any missing parent, each 0700; existing ones stay as they are."""
    missing = [d for d in (directory, *directory.parents) if not d.exists()]
    for each in reversed(missing):  # Path.mkdir(parents=True) gives parents the default mode
        try:
            each.mkdir(mode=DIRECTORY_MODE)
        except FileExistsError:
            pass  # created meanwhile by another process
        else:
            os.chmod(each, DIRECTORY_MODE)  # mkdir's mode is cut by the umask


def create_private_file(path: Path) -> bool:
    """Create an empty file 0600 (and its directories) unless it exists; True if created."""
    make_private_directories(path.parent)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    except FileExistsError:
        return False
    try:
        os.fchmod(descriptor, FILE_MODE)
    finally:
        os.close(descriptor)
    return True


SQLITE_BUSY_TIMEOUT_S = 30  # how long a SQLite writer waits for another process's lock


class DatabaseFileError(Exception):
    """The SQLite database file is missing, or cannot be created."""


def sqlite_file(url: str) -> Path | None:
    """The file of a SQLite URL (`sqla+sqlite:` too); None for any other database, an
    in-memory one, or a `uri=true` URL that SQLite itself interprets."""
    parsed = make_url(url.removeprefix("sqla+"))
    if parsed.get_backend_name() != "sqlite" or parsed.query.get("uri"):
        return None
    if parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def ensure_sqlite_directory(url: str) -> None:
    """The directories of a SQLite file, 0700, for whoever creates the file (kombu's broker)."""
    path = sqlite_file(url)
    if path is not None:
        make_private_directories(path.parent)
