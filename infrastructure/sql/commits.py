"""A commit that waits for a synchronous standby is bounded like every other wait.

PostgreSQL's `statement_timeout` does not cover a commit's wait for a synchronous standby,
neither COMMIT's nor that of a statement run on its own (autocommit, as the write path runs
`complete_foo`): with the standby gone, they wait until one comes back. Here, one still
waiting after the bound is cancelled. PostgreSQL then stops waiting, with a WARNING that the
transaction is committed locally but might not have been replicated, and the call raises
CommitNotConfirmedError: the change stands on the primary, and is lost if the primary is lost
before a standby has it.

One watchdog thread per process keeps the deadlines: registering a commit costs a lock and a
dict entry, not a timer thread."""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

import psycopg

# PostgreSQL's WARNING when a wait for synchronous replication is cancelled.
SYNC_WAIT_CANCELLED = "canceling wait for synchronous replication"


class CommitNotConfirmedError(psycopg.OperationalError):
    """Committed on the primary; no synchronous standby confirmed it within the bound."""


class Watchdog:
    """Cancels what a connection runs once its deadline passes, unless it ended first."""

    def __init__(self) -> None:
        self._lock = threading.Condition()
        self._watched: dict[int, tuple[float, psycopg.Connection[Any]]] = {}
        self._tokens = itertools.count()
        self._pid: int | None = None

    def watch(self, connection: psycopg.Connection[Any], timeout_s: float) -> int:
        with self._lock:
            if self._pid != os.getpid():  # none yet, or a forked child: its thread is gone
                self._pid = os.getpid()
                self._watched.clear()
                threading.Thread(
                    target=self._run, name="postsave-commit-watchdog", daemon=True
                ).start()
            token = next(self._tokens)
            self._watched[token] = (time.monotonic() + timeout_s, connection)
            self._lock.notify()
            return token

    def unwatch(self, token: int) -> None:
        # Waits while a cancel is being sent: it reaches the server before the next statement.
        with self._lock:
            self._watched.pop(token, None)

    def _run(self) -> None:
        with self._lock:
            while True:
                now = time.monotonic()
                due = [token for token, (deadline, _) in self._watched.items() if deadline <= now]
                for token in due:
                    _, connection = self._watched.pop(token)
                    connection.cancel_safe()
                upcoming = [deadline for deadline, _ in self._watched.values()]
                self._lock.wait(min(upcoming) - now if upcoming else None)


WATCHDOG = Watchdog()


class BoundedCommitCursor(psycopg.Cursor[Any]):
    """A statement run on its own (autocommit) commits as it ends: bounded like COMMIT."""

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        connection = self.connection
        if isinstance(connection, BoundedCommitConnection) and connection.autocommit:
            with connection.bounded():
                return super().execute(*args, **kwargs)
        return super().execute(*args, **kwargs)


class BoundedCommitConnection(psycopg.Connection[Any]):
    """psycopg's connection, whose commits give up waiting for a standby after
    `commit_timeout_s` (set on a subclass per engine; None: no bound)."""

    commit_timeout_s: ClassVar[float | None] = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursor_factory = BoundedCommitCursor
        self._unconfirmed = False
        self.add_notice_handler(self._note)

    def _note(self, notice: psycopg.errors.Diagnostic) -> None:
        if SYNC_WAIT_CANCELLED in (notice.message_primary or ""):
            self._unconfirmed = True

    def commit(self) -> None:
        with self.bounded():
            super().commit()

    @contextmanager
    def bounded(self) -> Iterator[None]:
        timeout_s = self.commit_timeout_s
        if not timeout_s:
            yield
            return
        self._unconfirmed = False
        token = WATCHDOG.watch(self, timeout_s)
        try:
            yield
        finally:
            WATCHDOG.unwatch(token)
        if self._unconfirmed:
            raise CommitNotConfirmedError(
                f"the commit waited more than {timeout_s:g} s (POSTSAVE_STATEMENT_TIMEOUT) for "
                "a synchronous standby: it is committed on the primary, but no standby "
                "confirmed it; check the standbys (pg_stat_replication)"
            )


def bounded_commit_class(timeout_s: float | None) -> type[BoundedCommitConnection]:
    return type(
        "BoundedCommitConnection", (BoundedCommitConnection,), {"commit_timeout_s": timeout_s}
    )
