"""The original approach: a timer recomputing every bar from all completed foos."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench.contenders.base import Contender
from bench.eventlog import bench_log
from bench.services import Database


@dataclass
class NaiveTimer(Contender):
    """Every tick recompute every bar from all completed foos."""

    tick_s: float = 1.0
    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    ticks: int = 0

    # One statement, so the recompute and the record of which events it covered share one
    # snapshot: an event committed meanwhile is neither counted nor marked.
    TICK = """
    WITH total AS (
        SELECT coalesce(sum(amount), 0) AS amount, count(*) AS foos
        FROM foos WHERE state = 'completed'
    ), recomputed AS (
        UPDATE bars SET value = weight * (SELECT amount FROM total) RETURNING 1
    ), covered AS (
        UPDATE bench_events SET applied_at = clock_timestamp()
        WHERE applied_at IS NULL RETURNING 1
    )
    INSERT INTO bench_ticks (ticked_at, foos_scanned, bars_updated, events_covered)
    SELECT clock_timestamp(), (SELECT foos FROM total), (SELECT count(*) FROM recomputed),
           (SELECT count(*) FROM covered)
    """

    def start(self) -> None:
        self._stopping.clear()
        self._thread = threading.Thread(target=self._loop, name="naive-timer", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            next_tick = time.monotonic()
            while not self._stopping.is_set():
                connection.execute(self.TICK)
                self.ticks += 1
                next_tick += self.tick_s
                self._stopping.wait(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def work(self, first: float, last: float) -> dict[str, float]:
        """Ticks, foos scanned and bars rewritten between two epoch times."""
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*), coalesce(sum(foos_scanned), 0), coalesce(sum(bars_updated), 0)"
                " FROM bench_ticks WHERE ticked_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
                (first, last),
            ).fetchone()
        assert row is not None
        return {"ticks": int(row[0]), "foos_scanned": int(row[1]), "bars_updated": int(row[2])}


def naive(workdir: Path, database: Database) -> NaiveTimer:
    return NaiveTimer(
        name="naive",
        kind="naive",
        workdir=workdir,
        dsn=database.conninfo,
        log=bench_log(database.conninfo),
        description="a timer (1 s) recomputing every bar from all completed foos",
    )
