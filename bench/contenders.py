"""The contenders: how each one's workers start and stop, and where its events are read back.

All of them apply the same delta to the same 100 bars for the same stream of completed foos,
on the same PostgreSQL server (a database each) and RabbitMQ (the run's vhost)."""

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

from bench import procs
from bench.eventlog import EventLog, SqliteOutboxLog, Window, bench_log, postsave_log
from bench.schema import DRIFT_SQL

STOP_GRACE_S = 1.0


def _drift(row: Any) -> float | None:
    if row is None or row[0] is None or row[0] != row[1]:
        return None  # no bars, or bars that disagree: a pass reached some bars only
    return float(row[0]) - float(row[2])


def invariant(contender: Contender, before: float | None) -> dict[str, Any]:
    """Did the bars move by exactly the completed amounts since `before` (a drift())?"""
    after = contender.drift()
    if before is None or after is None:
        return {"invariant_holds": None if contender.drift_unknown else False, "drift": None}
    off = after - before
    return {"invariant_holds": abs(off) < 1e-6, "drift": off}


@dataclass
class Contender:
    name: str
    kind: str  # the producer's kind (bench/producer.py)
    workdir: Path
    threads: int = 2
    dsn: str = ""  # libpq conninfo of its database ("" for the ceiling and the embedded default)
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)
    next_foo: int = 1  # foos are handed out in order: every contender sees the same stream

    log: EventLog | None = None
    description: str = ""
    settle_quiet_s: float = 3.0  # after a kill: how long without progress means "done"
    outage_url: str | None = None  # publishers reach the broker through this (bench/outage.py)
    drift_unknown: bool = False  # no bars to check (the ceiling)

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
        """SIGKILL the consuming workers (pool children too) and start fresh ones."""
        raise NotImplementedError

    def stuck(self, window: Window) -> dict[str, int]:
        """Events of the window parked until an operator acts: `unapplied` ones, and
        `applied_but_pending` ones that acting on would apply a second time."""
        return {"unapplied": 0, "applied_but_pending": 0}

    def applied_twice(self) -> int | None:
        return None

    def drift(self) -> float | None:
        """How far the bars are off the invariant (bench/schema.py), None if the bars disagree
        with each other or there is no database to ask."""
        if not self.dsn:
            return None
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute(DRIFT_SQL).fetchone()
        return _drift(row)

    def alive(self) -> list[subprocess.Popen[bytes]]:
        return list(self.started)

    def _spawn(self, command: list[str], env: dict[str, str], log_name: str) -> Any:
        process = procs.start(command, env, self.workdir / log_name)
        self.started.append(process)
        return process


@dataclass
class CeleryContender(Contender):
    """A bench Celery app (ceiling, direct) on the run's vhost."""

    app_module: str = ""
    queue: str = ""
    amqp_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    worker: subprocess.Popen[bytes] | None = None
    generation: int = 0
    _watch: Any = None  # kombu Connection for queue_ready()

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_BROKER_URL": self.outage_url or self.amqp_url, **self.extra_env}

    def start(self) -> None:
        self.generation += 1
        log_name = f"{self.name}-worker-{self.generation}.log"
        command = procs.celery_worker(self.app_module, self.queue, self.name)
        env = {"BENCH_BROKER_URL": self.amqp_url, **self.extra_env}  # consumers: never cut
        self.worker = self._spawn(command, env, log_name)
        procs.wait_for_log(self.workdir / log_name, self.worker)

    def kill_workers(self) -> None:
        assert self.worker is not None
        procs.kill(self.worker)
        self.started.remove(self.worker)
        self.start()

    def queue_ready(self) -> int:
        """Messages waiting in the queue: an AMQP passive declare on a connection kept open,
        cheap enough to poll every 10 ms."""
        from kombu import Connection

        if self._watch is None:
            self._watch = Connection(self.amqp_url)
        return int(self._watch.default_channel.queue_declare(self.queue, passive=True)[1])

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.release()
            self._watch = None
        super().stop()


def ceiling(workdir: Path, amqp_url: str) -> CeleryContender:
    return CeleryContender(
        drift_unknown=True,
        name="ceiling",
        kind="ceiling",
        workdir=workdir,
        app_module="bench.ceiling_app",
        queue="bench.ceiling",
        amqp_url=amqp_url,
        description="bare Celery no-op tasks, apply_async, prefork 2, prefetch 1, acks_late",
    )


def direct(workdir: Path, amqp_url: str, dsn: str) -> CeleryContender:
    contender = CeleryContender(
        name="direct",
        kind="direct",
        workdir=workdir,
        dsn=dsn,
        app_module="bench.direct_app",
        queue="bench.direct",
        amqp_url=amqp_url,
        extra_env={"BENCH_DIRECT_DSN": dsn},
        description="commit, then apply_async; early ack, no outbox, no idempotency guard",
    )
    contender.log = bench_log(dsn)
    return contender


@dataclass
class NaiveTimer(Contender):
    """The original approach: every tick recompute every bar from all completed foos."""

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


def naive(workdir: Path, dsn: str) -> NaiveTimer:
    contender = NaiveTimer(
        name="naive",
        kind="naive",
        workdir=workdir,
        dsn=dsn,
        description="a timer (1 s) recomputing every bar from all completed foos",
    )
    contender.log = bench_log(dsn)
    return contender


@dataclass
class Procrastinate(Contender):
    worker: subprocess.Popen[bytes] | None = None
    generation: int = 0

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_PROCRASTINATE_DSN": self.dsn}

    def install_schema(self) -> None:
        from procrastinate.schema import SchemaManager

        with psycopg.connect(self.dsn, autocommit=True) as connection:
            connection.execute(SchemaManager.get_schema())

    def _workers(self) -> int:
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute("SELECT count(*) FROM procrastinate_workers").fetchone()
        return int(row[0]) if row else 0

    def start(self) -> None:
        self.generation += 1
        before = self._workers()
        command = [
            sys.executable,
            "-m",
            "procrastinate",
            "--app=bench.procrastinate_app.app",
            "worker",
            "--concurrency=2",
            "--queues=bench",
        ]
        self.worker = self._spawn(
            command, self.producer_env(), f"procrastinate-worker-{self.generation}.log"
        )
        procs.wait_until(
            lambda: self._workers() > before, "procrastinate worker", alive=[self.worker]
        )

    def kill_workers(self) -> None:
        assert self.worker is not None
        procs.kill(self.worker)
        self.started.remove(self.worker)
        self.start()

    def stuck(self, window: Window) -> dict[str, int]:
        # A killed worker's jobs stay 'doing' until someone calls retry_stalled_jobs; a job
        # killed after its transaction committed has applied already, and a retry applies
        # it again (job state and effect commit separately).
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FILTER (WHERE e.applied_at IS NULL),"
                " count(*) FILTER (WHERE e.applied_at IS NOT NULL)"
                " FROM procrastinate_jobs j"
                " JOIN bench_events e ON e.id = (j.args->>'event_id')::bigint"
                " WHERE j.status = 'doing' AND e.id > %s",
                (window.after,),
            ).fetchone()
        assert row is not None
        return {"unapplied": int(row[0]), "applied_but_pending": int(row[1])}


def procrastinate(workdir: Path, dsn: str) -> Procrastinate:
    contender = Procrastinate(
        name="procrastinate",
        kind="procrastinate",
        workdir=workdir,
        dsn=dsn,
        description="procrastinate 3 job deferred in the write transaction, worker concurrency 2",
    )
    contender.log = bench_log(dsn)
    return contender


@dataclass
class Postsave(Contender):
    """postsave's own processes, started through infrastructure.processes."""

    database_url: str = ""
    broker_url: str = ""
    settings_env: dict[str, str] = field(default_factory=dict)
    relay: subprocess.Popen[bytes] | None = None
    recalc: subprocess.Popen[bytes] | None = None
    generation: int = 0

    def producer_env(self) -> dict[str, str]:
        # The producer too: postsave may nudge the relay after a commit.
        return self._env(self.outage_url or self.broker_url)

    def _env(self, broker_url: str) -> dict[str, str]:
        return {
            "POSTSAVE_DATABASE_URL": self.database_url,
            "POSTSAVE_BROKER_URL": broker_url,
            **self.settings_env,
        }

    def drift(self) -> float | None:
        if self.dsn:
            return super().drift()
        database = self.database_url.removeprefix("sqlite:///")
        with closing(sqlite3.connect(database, timeout=30)) as connection:
            return _drift(connection.execute(DRIFT_SQL).fetchone())

    def _start_recalc(self) -> None:
        from infrastructure import processes

        self.generation += 1
        log = self.workdir / f"{self.name}-recalc-{self.generation}.log"
        self.recalc = processes.start_worker(
            procs.env_for(self._env(self.broker_url)),  # consumers: never cut
            log,
            queues=["postsave.recalc"],
            concurrency=2,
            name=f"{self.name}-recalc",
        )
        self.started.append(self.recalc)
        procs.wait_for_log(log, self.recalc)

    def start(self) -> None:
        from infrastructure import processes

        env = procs.env_for(self.producer_env())  # the relay publishes: through the outage
        relay_log = self.workdir / f"{self.name}-relay.log"
        self.relay = processes.start_worker(
            env, relay_log, queues=["postsave.poll"], concurrency=1, name=f"{self.name}-relay"
        )
        self.started.append(self.relay)
        self._start_recalc()
        procs.wait_for_log(relay_log, self.relay)
        beat = processes.start_beat(
            env, self.workdir / f"{self.name}-beat.log", self.workdir / f"{self.name}-schedule"
        )
        self.started.append(beat)

    def restart_recalc(self, settings_env: dict[str, str]) -> None:
        """Stop the recalculation worker gracefully; start it again with these settings."""
        from infrastructure import processes

        assert self.recalc is not None
        processes.stop(self.recalc)
        self.started.remove(self.recalc)
        self.settings_env = settings_env
        self._start_recalc()

    def kill_workers(self) -> None:
        assert self.recalc is not None
        procs.kill(self.recalc)
        self.started.remove(self.recalc)
        self._start_recalc()

    def applied_twice(self) -> int | None:
        if not self.dsn:
            return None
        with psycopg.connect(self.dsn, autocommit=True) as connection:
            row = connection.execute(
                "SELECT (SELECT events_applied FROM bar_projection)"
                " - (SELECT count(*) FROM applied_events)"
            ).fetchone()
        return int(row[0]) if row else None


def postsave_pg(
    workdir: Path, dsn: str, database_url: str, amqp_url: str, settings_env: dict[str, str]
) -> Postsave:
    contender = Postsave(
        name="postsave-pg",
        kind="postsave",
        workdir=workdir,
        dsn=dsn,
        database_url=database_url,
        broker_url=amqp_url,
        settings_env=settings_env,
        description="postsave on PostgreSQL + RabbitMQ: relay worker, recalc worker (2), beat",
    )
    contender.log = postsave_log(dsn)
    return contender


def postsave_embedded(workdir: Path, settings_env: dict[str, str]) -> Postsave:
    database = workdir / "embedded" / "postsave.db"
    contender = Postsave(
        name="postsave-embedded",
        kind="postsave-use-cases",  # SQLite: no libpq connection for the SQL producer
        workdir=workdir,
        threads=1,  # SQLite has one writer at a time
        database_url=f"sqlite:///{database}",
        broker_url=f"sqla+sqlite:///{workdir / 'embedded' / 'broker.db'}",
        settings_env=settings_env,
        description="postsave's embedded default: SQLite + kombu's SQLAlchemy transport",
    )
    contender.log = SqliteOutboxLog(str(database))
    return contender
