"""Reading a contender's events back: which are done, and their commit and apply times.

Both times come from the database clock: postsave's outbox_events.occurred_at and
applied_at, and bench_events.created_at and applied_at for the others (clock_timestamp()
in the committing and in the applying transaction)."""

from __future__ import annotations

import sqlite3
from contextlib import closing
from dataclasses import dataclass

import psycopg

from bench.stats import percentile


@dataclass(frozen=True)
class Window:
    """The events of one run: ids above `after`."""

    after: int


class EventLog:
    def watermark(self) -> Window:
        raise NotImplementedError

    def unfinished(self, window: Window) -> int:
        raise NotImplementedError

    def times(self, window: Window) -> list[tuple[float, float | None]]:
        """(committed, applied) in epoch seconds, per event of the window, in id order."""
        raise NotImplementedError


@dataclass
class PostgresLog(EventLog):
    conninfo: str
    table: str  # outbox_events or bench_events
    committed: str
    applied: str

    def _one(self, query: str, *params: object) -> int:
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            row = connection.execute(query, params).fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    def watermark(self) -> Window:
        return Window(self._one(f"SELECT max(id) FROM {self.table}"))

    def unfinished(self, window: Window) -> int:
        return self._one(
            f"SELECT count(*) FROM {self.table} WHERE id > %s AND {self.applied} IS NULL",
            window.after,
        )

    def times(self, window: Window) -> list[tuple[float, float | None]]:
        query = (
            f"SELECT extract(epoch FROM {self.committed})::float8, "
            f"extract(epoch FROM {self.applied})::float8 "
            f"FROM {self.table} WHERE id > %s ORDER BY id"
        )
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            return [(row[0], row[1]) for row in connection.execute(query, (window.after,))]


def postsave_breakdown(conninfo: str, window: Window) -> dict[str, float | int]:
    """Where postsave's latency goes: commit to dispatch (the relay) and dispatch to applied
    (broker and worker); events applied by another event's pass before being dispatched have
    no dispatch time (`coalesced_before_dispatch`)."""
    query = (
        "SELECT extract(epoch FROM dispatched_at - occurred_at)::float8,"
        " extract(epoch FROM applied_at - dispatched_at)::float8"
        " FROM outbox_events WHERE id > %s"
    )
    with psycopg.connect(conninfo, autocommit=True) as connection:
        rows = connection.execute(query, (window.after,)).fetchall()
    relay = [r[0] for r in rows if r[0] is not None]
    worker = [r[1] for r in rows if r[1] is not None]
    return {
        "events": len(rows),
        "coalesced_before_dispatch": sum(1 for r in rows if r[0] is None),
        "relay_p50_ms": percentile(relay, 50) * 1000.0,
        "relay_p99_ms": percentile(relay, 99) * 1000.0,
        "worker_p50_ms": percentile(worker, 50) * 1000.0,
        "worker_p99_ms": percentile(worker, 99) * 1000.0,
    }


def postsave_log(conninfo: str) -> PostgresLog:
    return PostgresLog(conninfo, "outbox_events", "occurred_at", "applied_at")


def bench_log(conninfo: str) -> PostgresLog:
    return PostgresLog(conninfo, "bench_events", "created_at", "applied_at")


_SQLITE_EPOCH = "(julianday({}) - 2440587.5) * 86400.0"


@dataclass
class SqliteOutboxLog(EventLog):
    """postsave's outbox on the embedded default (timestamps stored as text, UTC)."""

    path: str

    def _connect(self) -> closing[sqlite3.Connection]:
        return closing(sqlite3.connect(self.path, timeout=30))

    def watermark(self) -> Window:
        with self._connect() as connection:
            (value,) = connection.execute("SELECT max(id) FROM outbox_events").fetchone()
        return Window(int(value or 0))

    def unfinished(self, window: Window) -> int:
        with self._connect() as connection:
            (value,) = connection.execute(
                "SELECT count(*) FROM outbox_events WHERE id > ? AND applied_at IS NULL",
                (window.after,),
            ).fetchone()
        return int(value)

    def times(self, window: Window) -> list[tuple[float, float | None]]:
        query = (
            f"SELECT {_SQLITE_EPOCH.format('occurred_at')}, {_SQLITE_EPOCH.format('applied_at')}"
            " FROM outbox_events WHERE id > ? ORDER BY id"
        )
        with self._connect() as connection:
            return [(row[0], row[1]) for row in connection.execute(query, (window.after,))]
