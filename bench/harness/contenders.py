"""The contenders: how each one's workers start and stop, and where its events are read back.

All apply the same delta to the same bars for the same stream of completed foos, on the same
PostgreSQL server (a database each) and RabbitMQ (the run's vhost). Commit and apply times come
from the database clock: outbox_events.occurred_at / applied_at for postsave, bench_events.
created_at / applied_at for the others (clock_timestamp() in each transaction)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from bench.harness import processes as procs
from bench.harness.apps import CEILING_QUEUE, DIRECT_DSN_ENV, DIRECT_QUEUE
from bench.harness.data import DRIFT_SQL, execute, row
from bench.harness.services import Database
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.cli import processes

# Bars (the example's recalculation) whose value holds more than weight x the deltas of the
# events through the bar's position: an event applied to them twice.
AHEAD_SQL = """
WITH through AS (
    SELECT position, sum((payload->>'delta')::numeric) OVER (ORDER BY position) AS total
    FROM outbox_events WHERE position IS NOT NULL
)
SELECT count(*) FROM bars LEFT JOIN through USING (position)
WHERE bars.value > bars.weight * coalesce(through.total, 0)
"""
_SQLITE_EPOCH = "(julianday({0}) - 2440587.5) * 86400.0"  # text timestamps, UTC
_PG_EPOCH = "extract(epoch FROM {0})::float8"


@dataclass
class EventLog:
    """A contender's events, on PostgreSQL (`conninfo`) or SQLite (`path`). A run's events are
    a window: the ids above the watermark taken before it."""

    table: str  # outbox_events or bench_events
    committed: str
    conninfo: str = ""
    path: str = ""

    def rows(self, query: str, *params: object) -> list[Any]:
        if self.path:
            with closing(sqlite3.connect(self.path, timeout=30)) as connection:
                return connection.execute(query.replace("%s", "?"), params).fetchall()
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            return connection.execute(query, params).fetchall()

    def watermark(self) -> int:
        return int(self.rows(f"SELECT max(id) FROM {self.table}")[0][0] or 0)

    def unfinished(self, after: int) -> int:
        query = f"SELECT count(*) FROM {self.table} WHERE id > %s AND applied_at IS NULL"
        return int(self.rows(query, after)[0][0])

    def times(self, after: int) -> list[tuple[float, float | None]]:
        """(committed, applied) in epoch seconds, per event of the window, in id order."""
        epoch = _SQLITE_EPOCH if self.path else _PG_EPOCH
        columns = f"{epoch.format(self.committed)}, {epoch.format('applied_at')}"
        query = f"SELECT {columns} FROM {self.table} WHERE id > %s ORDER BY id"
        return [(found[0], found[1]) for found in self.rows(query, after)]


@dataclass
class Contender:
    name: str
    kind: str  # its own producer (bench/harness/producer.py)
    workdir: Path
    log: EventLog | None = None  # None: the ceiling, which has no bars to check
    description: str = ""
    threads: int = 2
    dsn: str = ""  # libpq conninfo of its database ("" for the ceiling and the embedded default)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    next_foo: int = 1  # foos are handed out in order: every contender sees the same stream
    settle_quiet_s: float = 3.0  # after a kill: how long without progress means "done"
    outage_url: str | None = None  # publishers reach the broker through this (proxy.py)
    generation: int = 0  # each worker started logs to a file of its own
    worker: subprocess.Popen[bytes] | None = None

    def take_foos(self, count: int) -> int:
        self.next_foo += count
        return self.next_foo - count

    def producer_env(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        """Start the workers and wait until they consume."""

    def stop(self) -> None:
        # Everything they did is in the database already: a short grace, then SIGKILL.
        procs.stop_all(list(reversed(self.started)), timeout_s=1.0)
        self.started.clear()

    def kill_workers(self) -> None:
        """SIGKILL the consuming worker (pool children too) and start a fresh one."""
        self._kill()
        self.start()

    def stuck(self, after: int) -> dict[str, int]:
        """Events of the window parked until an operator acts: `unapplied` ones, and
        `applied_but_pending` ones that acting on would apply a second time."""
        return {"unapplied": 0, "applied_but_pending": 0}

    def applied_twice(self) -> int | None:
        return None

    def drift(self) -> float | None:
        """How far the bars are off the invariant (DRIFT_SQL), None if there are no bars or
        they disagree with each other (a pass reached some bars only)."""
        found = self.log.rows(DRIFT_SQL)[0] if self.log else None
        if found is None or found[0] is None or found[0] != found[1]:
            return None
        return float(found[0]) - float(found[2])

    def invariant(self, before: float | None) -> dict[str, Any]:
        """Did the bars move by exactly the completed amounts since `before` (a drift())?"""
        after = self.drift()
        if before is None or after is None:
            return {"invariant_holds": None if self.log is None else False, "drift": None}
        return {"invariant_holds": abs(after - before) < 1e-6, "drift": after - before}

    def _spawn(self, command: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        self.started.append(procs.start(command, env, self.workdir / log))
        return self.started[-1]

    def _kill(self) -> None:
        assert self.worker is not None
        processes.kill(self.worker)
        self.started.remove(self.worker)


@dataclass
class CeleryContender(Contender):
    """The bench's own Celery apps (bench/harness/apps.py) on the run's vhost."""

    app: str = ""
    queue: str = ""
    amqp_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_BROKER_URL": self.outage_url or self.amqp_url, **self.extra_env}

    def start(self) -> None:
        self.generation += 1
        log = f"{self.name}-worker-{self.generation}.log"
        command = processes.worker_command(app=self.app, queues=[self.queue], name=self.name)
        env = {"BENCH_BROKER_URL": self.amqp_url, **self.extra_env}  # consumers: never cut
        self.worker = self._spawn(command, env, log)
        procs.wait_for_log(self.workdir / log, self.worker)


@dataclass
class Procrastinate(Contender):
    """A job deferred in the write transaction, run by `procrastinate worker`."""

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_PROCRASTINATE_DSN": self.dsn}

    def _workers(self) -> int:
        return int(execute(self.dsn, "SELECT count(*) FROM procrastinate_workers"))

    def start(self) -> None:
        self.generation += 1
        before = self._workers()
        command = [sys.executable, "-m", "procrastinate", "--app=bench.harness.job_app.app"]
        command += ["worker", "--concurrency=2", "--queues=bench"]
        log = f"procrastinate-worker-{self.generation}.log"
        self.worker = self._spawn(command, self.producer_env(), log)
        procs.wait_until(lambda: self._workers() > before, "procrastinate", alive=[self.worker])

    def stuck(self, after: int) -> dict[str, int]:
        # A killed worker's jobs stay 'doing' until someone calls retry_stalled_jobs; a job
        # killed after its transaction committed has applied already, and a retry applies
        # it again (job state and effect commit separately).
        unapplied, applied = row(
            self.dsn,
            "SELECT count(*) FILTER (WHERE e.applied_at IS NULL),"
            " count(*) FILTER (WHERE e.applied_at IS NOT NULL)"
            " FROM procrastinate_jobs j"
            " JOIN bench_events e ON e.id = (j.args->>'event_id')::bigint"
            " WHERE j.status = 'doing' AND e.id > %s",
            after,
        )
        return {"unapplied": int(unapplied), "applied_but_pending": int(applied)}


@dataclass
class NaiveTimer(Contender):
    """The original approach: every tick (1 s) recompute every bar from all completed foos."""

    _thread: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)

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
                next_tick += 1.0
                self._stopping.wait(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Postsave(Contender):
    """postsave's own processes (relay worker, recalculation worker, beat), as
    infrastructure.cli.processes commands them, on PostgreSQL + RabbitMQ or on the embedded
    default."""

    database_url: str = ""
    broker_url: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)
    recalc_processes: int = 2  # the recalculation worker's prefork pool

    def producer_env(self) -> dict[str, str]:
        # The producer too: postsave may nudge the relay after a commit.
        return self._env(self.outage_url or self.broker_url)

    def _env(self, broker_url: str) -> dict[str, str]:
        urls = {"POSTSAVE_DATABASE_URL": self.database_url, "POSTSAVE_BROKER_URL": broker_url}
        return procs.env_for({**urls, **self.settings_env})

    def _start_worker(self, role: str, queue: str, env: dict[str, str]) -> Callable[[], None]:
        """Started, at the repository's root (a recalculation of the bench's is importable);
        the call returned waits until it consumes."""
        self.generation += 1
        log = self.workdir / f"{self.name}-{role}-{self.generation}.log"
        concurrency = self.recalc_processes if queue == RECALC_QUEUE else 1
        command = processes.worker_command(
            queues=[queue], concurrency=concurrency, name=f"{self.name}-{role}"
        )
        worker = self._spawn(command, env, log.name)
        if queue == RECALC_QUEUE:
            self.worker = worker
        return lambda: procs.wait_for_log(log, worker)

    def _start_recalc(self) -> None:
        self._start_worker("recalc", RECALC_QUEUE, self._env(self.broker_url))()  # never cut

    def start(self) -> None:
        env = self.producer_env()  # the relay publishes: through the outage
        relay_ready = self._start_worker("relay", POLL_QUEUE, env)
        self._start_recalc()
        relay_ready()
        schedule = f"--schedule={self.workdir / f'{self.name}-beat-schedule'}"
        beat = processes.celery_command("beat", "--loglevel=INFO", schedule)
        self._spawn(beat, env, f"{self.name}-beat.log")

    def restart_recalc(self, settings_env: dict[str, str]) -> None:
        """Stop the recalculation worker gracefully; start it again with these settings."""
        assert self.worker is not None
        processes.stop(self.worker)
        self.started.remove(self.worker)
        self.settings_env = settings_env
        self._start_recalc()

    def kill_workers(self) -> None:
        self._kill()
        self._start_recalc()

    def applied_twice(self) -> int | None:
        """Bars holding more than the deltas of the events through their position."""
        return int(execute(self.dsn, AHEAD_SQL)) if self.dsn else None


def make_all(
    workdir: Path, amqp_url: str, databases: dict[str, Database], settings_env: dict[str, str]
) -> list[Contender]:
    """Every contender, in the order they run, on its own database."""

    def bench_log(role: str) -> dict[str, Any]:
        conninfo = databases[role].conninfo
        return {"log": EventLog("bench_events", "created_at", conninfo), "dsn": conninfo}

    direct_dsn = databases["direct"].conninfo
    embedded = workdir / "embedded"
    return [
        CeleryContender(
            "ceiling", "ceiling", workdir, app="bench.harness.apps:ceiling", queue=CEILING_QUEUE,
            amqp_url=amqp_url,
            description="bare Celery no-op tasks, apply_async, prefork 2, prefetch 1, acks_late",
        ),
        NaiveTimer(
            "naive", "naive", workdir, **bench_log("naive"),
            description="a timer (1 s) recomputing every bar from all completed foos",
        ),
        CeleryContender(
            "direct", "direct", workdir, **bench_log("direct"), app="bench.harness.apps:direct",
            queue=DIRECT_QUEUE, amqp_url=amqp_url, extra_env={DIRECT_DSN_ENV: direct_dsn},
            description="commit, then apply_async; early ack, no outbox, no idempotency guard",
        ),
        Procrastinate(
            "procrastinate", "procrastinate", workdir, **bench_log("procrastinate"),
            description="procrastinate 3 job deferred in the write transaction, worker "
            "concurrency 2",
        ),
        postsave_pg(workdir, databases["postsave"], amqp_url, settings_env),
        Postsave(
            "postsave-embedded", "postsave-use-cases", workdir,
            EventLog("outbox_events", "occurred_at", path=str(embedded / "postsave.db")),
            "postsave's embedded default: SQLite + kombu's SQLAlchemy transport",
            threads=1,  # SQLite has one writer at a time
            database_url=f"sqlite:///{embedded / 'postsave.db'}", settings_env=dict(settings_env),
            broker_url=f"sqla+sqlite:///{embedded / 'broker.db'}",
        ),
    ]  # fmt: skip


def postsave_pg(
    workdir: Path, database: Database, amqp_url: str, settings_env: dict[str, str],
    name: str = "postsave-pg", description: str = "postsave on PostgreSQL + RabbitMQ",
) -> Postsave:  # fmt: skip
    return Postsave(
        name, "postsave", workdir, EventLog("outbox_events", "occurred_at", database.conninfo),
        f"{description}: relay worker, recalc worker (2), beat", dsn=database.conninfo,
        database_url=database.url, broker_url=amqp_url, settings_env=dict(settings_env),
    )  # fmt: skip
