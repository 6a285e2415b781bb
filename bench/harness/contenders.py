"""The contenders: how each one's workers start and stop, and where its events are read back.

All of them apply the same delta to the same bars for the same stream of completed foos, on the
same PostgreSQL server (a database each) and RabbitMQ (the run's vhost). Commit and apply times
come from the database clock: postsave's outbox_events.occurred_at / applied_at, and
bench_events.created_at / applied_at for the others (clock_timestamp() in each transaction)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
import time
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from kombu import Connection

from bench.harness import processes as procs
from bench.harness.apps import CEILING_QUEUE, DIRECT_DSN_ENV, DIRECT_QUEUE
from bench.harness.data import DRIFT_SQL, execute, row
from bench.harness.services import Database, ready
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.cli import processes

STOP_GRACE_S = 1.0
_SQLITE_EPOCH = "(julianday({0}) - 2440587.5) * 86400.0"  # text timestamps, UTC


@dataclass(frozen=True)
class Window:
    """The events of one run: ids above `after`."""

    after: int


@dataclass
class EventLog:
    """A contender's events, on PostgreSQL (`conninfo`) or SQLite (`path`)."""

    table: str  # outbox_events or bench_events
    committed: str
    conninfo: str = ""
    path: str = ""

    def _rows(self, query: str, *params: object) -> list[Any]:
        if self.path:
            with closing(sqlite3.connect(self.path, timeout=30)) as connection:
                return connection.execute(query.replace("%s", "?"), params).fetchall()
        with psycopg.connect(self.conninfo, autocommit=True) as connection:
            return connection.execute(query, params).fetchall()

    def watermark(self) -> Window:
        return Window(int(self._rows(f"SELECT max(id) FROM {self.table}")[0][0] or 0))

    def unfinished(self, window: Window) -> int:
        query = f"SELECT count(*) FROM {self.table} WHERE id > %s AND applied_at IS NULL"
        return int(self._rows(query, window.after)[0][0])

    def times(self, window: Window) -> list[tuple[float, float | None]]:
        """(committed, applied) in epoch seconds, per event of the window, in id order."""
        if self.path:
            columns = (
                f"{_SQLITE_EPOCH.format(self.committed)}, {_SQLITE_EPOCH.format('applied_at')}"
            )
        else:
            columns = f"extract(epoch FROM {self.committed})::float8, "
            columns += "extract(epoch FROM applied_at)::float8"
        query = f"SELECT {columns} FROM {self.table} WHERE id > %s ORDER BY id"
        return [(row[0], row[1]) for row in self._rows(query, window.after)]


def drift_of(row: Any) -> float | None:
    """DRIFT_SQL's row as one number (bench/harness/data.py)."""
    if row is None or row[0] is None or row[0] != row[1]:
        return None  # no bars, or bars that disagree: a pass reached some bars only
    return float(row[0]) - float(row[2])


@dataclass
class Contender:
    name: str
    kind: str  # its own producer (bench/harness/producer.py)
    workdir: Path
    log: EventLog | None = None
    description: str = ""
    threads: int = 2
    dsn: str = ""  # libpq conninfo of its database ("" for the ceiling and the embedded default)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    next_foo: int = 1  # foos are handed out in order: every contender sees the same stream
    settle_quiet_s: float = 3.0  # after a kill: how long without progress means "done"
    outage_url: str | None = None  # publishers reach the broker through this (proxy.py)
    drift_unknown: bool = False  # no bars to check (the ceiling)
    generation: int = 0  # each worker started logs to a file of its own
    worker: subprocess.Popen[bytes] | None = None

    def take_foos(self, count: int) -> int:
        first = self.next_foo
        self.next_foo += count
        return first

    def producer_env(self) -> dict[str, str]:
        return {}

    def start(self) -> None:
        """Start the workers and wait until they consume."""

    def stop(self) -> None:
        # Everything they did is in the database already: a short grace, then SIGKILL.
        procs.stop_all(list(reversed(self.started)), timeout_s=STOP_GRACE_S)
        self.started.clear()

    def kill_workers(self) -> None:
        """SIGKILL the consuming worker (pool children too) and start a fresh one."""
        self._kill(self.worker)
        self.start()

    def stuck(self, window: Window) -> dict[str, int]:
        """Events of the window parked until an operator acts: `unapplied` ones, and
        `applied_but_pending` ones that acting on would apply a second time."""
        return {"unapplied": 0, "applied_but_pending": 0}

    def applied_twice(self) -> int | None:
        return None

    def drift(self) -> float | None:
        """How far the bars are off the invariant (DRIFT_SQL), None if the bars disagree with
        each other or there is no database to ask."""
        if not self.dsn:
            return None
        return drift_of(row(self.dsn, DRIFT_SQL))

    def invariant(self, before: float | None) -> dict[str, Any]:
        """Did the bars move by exactly the completed amounts since `before` (a drift())?"""
        after = self.drift()
        if before is None or after is None:
            return {"invariant_holds": None if self.drift_unknown else False, "drift": None}
        return {"invariant_holds": abs(after - before) < 1e-6, "drift": after - before}

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return list(self.started)

    def _spawn(self, command: list[str], env: dict[str, str], log: str) -> subprocess.Popen[bytes]:
        return self._track(procs.start(command, env, self.workdir / log))

    def _track(self, process: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.started.append(process)
        return process

    def _kill(self, process: subprocess.Popen[bytes] | None) -> None:
        assert process is not None
        processes.kill(process)
        self.started.remove(process)


@dataclass
class CeleryContender(Contender):
    """The bench's own Celery apps (bench/harness/apps.py) on the run's vhost."""

    app: str = ""
    queue: str = ""
    amqp_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    _watch: Connection | None = None

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_BROKER_URL": self.outage_url or self.amqp_url, **self.extra_env}

    def start(self) -> None:
        self.generation += 1
        log = f"{self.name}-worker-{self.generation}.log"
        command = processes.worker_command(app=self.app, queues=[self.queue], name=self.name)
        env = {"BENCH_BROKER_URL": self.amqp_url, **self.extra_env}  # consumers: never cut
        self.worker = self._spawn(command, env, log)
        procs.wait_for_log(self.workdir / log, self.worker)

    def queue_ready(self) -> int:
        """Messages waiting in its queue, on a connection kept open: polled every 10 ms."""
        if self._watch is None:
            self._watch = Connection(self.amqp_url)
        return ready(self.amqp_url, self.queue, self._watch)

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.release()
            self._watch = None
        super().stop()


@dataclass
class Procrastinate(Contender):
    """A job deferred in the write transaction, run by `procrastinate worker`."""

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_PROCRASTINATE_DSN": self.dsn}

    def install_schema(self) -> None:
        from procrastinate.schema import SchemaManager  # the bench extra's

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(SchemaManager.get_schema())

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

    def stuck(self, window: Window) -> dict[str, int]:
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
            window.after,
        )
        return {"unapplied": int(unapplied), "applied_but_pending": int(applied)}


@dataclass
class NaiveTimer(Contender):
    """The original approach: every tick (1 s) recompute every bar from all completed foos."""

    tick_s: float = 1.0
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
                next_tick += self.tick_s
                self._stopping.wait(max(0.0, next_tick - time.monotonic()))

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=30)

    def work(self, first: float, last: float) -> dict[str, float]:
        """Ticks, foos scanned and bars rewritten between two epoch times."""
        found = row(
            self.dsn,
            "SELECT count(*), coalesce(sum(foos_scanned), 0), coalesce(sum(bars_updated), 0)"
            " FROM bench_ticks WHERE ticked_at BETWEEN to_timestamp(%s) AND to_timestamp(%s)",
            first,
            last,
        )
        return dict(zip(("ticks", "foos_scanned", "bars_updated"), map(int, found), strict=True))


@dataclass
class Postsave(Contender):
    """postsave's own processes (relay worker, recalculation worker, beat), started through
    infrastructure.cli.processes, on PostgreSQL + RabbitMQ or on the embedded default."""

    database_url: str = ""
    broker_url: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)
    relay: subprocess.Popen[bytes] | None = None

    def producer_env(self) -> dict[str, str]:
        # The producer too: postsave may nudge the relay after a commit.
        return self._env(self.outage_url or self.broker_url)

    def _env(self, broker_url: str) -> dict[str, str]:
        urls = {"POSTSAVE_DATABASE_URL": self.database_url, "POSTSAVE_BROKER_URL": broker_url}
        return {**urls, **self.settings_env}

    def drift(self) -> float | None:
        if self.dsn:
            return super().drift()
        database = self.database_url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(database, timeout=30)) as connection:
            return drift_of(connection.execute(DRIFT_SQL).fetchone())

    def _start_recalc(self) -> None:
        self.generation += 1
        log = self.workdir / f"{self.name}-recalc-{self.generation}.log"
        env = procs.env_for(self._env(self.broker_url))  # consumers: never cut
        name = f"{self.name}-recalc"
        self.worker = self._track(
            processes.start_worker(env, log, queues=[RECALC_QUEUE], concurrency=2, name=name)
        )
        procs.wait_for_log(log, self.worker)

    def start(self) -> None:
        env = procs.env_for(self.producer_env())  # the relay publishes: through the outage
        log = self.workdir / f"{self.name}-relay.log"
        name = f"{self.name}-relay"
        self.relay = self._track(
            processes.start_worker(env, log, queues=[POLL_QUEUE], concurrency=1, name=name)
        )
        self._start_recalc()
        procs.wait_for_log(log, self.relay)
        self._track(processes.start_beat(env, self.workdir / f"{self.name}-beat.log"))

    def restart_recalc(self, settings_env: dict[str, str]) -> None:
        """Stop the recalculation worker gracefully; start it again with these settings."""
        assert self.worker is not None
        processes.stop(self.worker)
        self.started.remove(self.worker)
        self.settings_env = settings_env
        self._start_recalc()

    def kill_workers(self) -> None:
        self._kill(self.worker)
        self._start_recalc()

    def applied_twice(self) -> int | None:
        if not self.dsn:
            return None
        query = "SELECT (SELECT events_applied FROM bar_projection)"
        return int(execute(self.dsn, f"{query} - (SELECT count(*) FROM applied_events)"))


def outbox_log(conninfo: str = "", path: str = "") -> EventLog:
    return EventLog("outbox_events", "occurred_at", conninfo, path)


def bench_log(conninfo: str) -> EventLog:
    return EventLog("bench_events", "created_at", conninfo)


def ceiling(workdir: Path, amqp_url: str) -> CeleryContender:
    return CeleryContender(
        "ceiling", "ceiling", workdir, drift_unknown=True,
        app="bench.harness.apps:ceiling", queue=CEILING_QUEUE, amqp_url=amqp_url,
        description="bare Celery no-op tasks, apply_async, prefork 2, prefetch 1, acks_late",
    )  # fmt: skip


def direct(workdir: Path, amqp_url: str, database: Database) -> CeleryContender:
    return CeleryContender(
        "direct", "direct", workdir, bench_log(database.conninfo), dsn=database.conninfo,
        app="bench.harness.apps:direct", queue=DIRECT_QUEUE, amqp_url=amqp_url,
        extra_env={DIRECT_DSN_ENV: database.conninfo},
        description="commit, then apply_async; early ack, no outbox, no idempotency guard",
    )  # fmt: skip


def procrastinate(workdir: Path, database: Database) -> Procrastinate:
    description = "procrastinate 3 job deferred in the write transaction, worker concurrency 2"
    log = bench_log(database.conninfo)
    return Procrastinate(
        "procrastinate", "procrastinate", workdir, log, description, dsn=database.conninfo
    )


def naive(workdir: Path, database: Database) -> NaiveTimer:
    description = "a timer (1 s) recomputing every bar from all completed foos"
    return NaiveTimer(
        "naive", "naive", workdir, bench_log(database.conninfo), description, dsn=database.conninfo
    )


def postsave_pg(
    workdir: Path, database: Database, amqp_url: str, settings_env: dict[str, str],
    name: str = "postsave-pg", description: str = "postsave on PostgreSQL + RabbitMQ",
) -> Postsave:  # fmt: skip
    return Postsave(
        name, "postsave", workdir, outbox_log(database.conninfo),
        f"{description}: relay worker, recalc worker (2), beat", dsn=database.conninfo,
        database_url=database.url, broker_url=amqp_url, settings_env=settings_env,
    )  # fmt: skip


def postsave_embedded(workdir: Path, settings_env: dict[str, str]) -> Postsave:
    database = workdir / "embedded" / "postsave.db"
    return Postsave(
        "postsave-embedded", "postsave-use-cases", workdir, outbox_log(path=str(database)),
        "postsave's embedded default: SQLite + kombu's SQLAlchemy transport",
        threads=1,  # SQLite has one writer at a time; no libpq connection for the SQL producer
        database_url=f"sqlite:///{database}", settings_env=settings_env,
        broker_url=f"sqla+sqlite:///{workdir / 'embedded' / 'broker.db'}",
    )  # fmt: skip
