"""postsave's own processes (relay worker, recalculation worker, beat), started through
infrastructure.cli.processes, on PostgreSQL + RabbitMQ or on the embedded default."""

from __future__ import annotations

import sqlite3
import subprocess
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

from bench import procs
from bench.contenders.base import Contender, drift_of
from bench.eventlog import SqliteOutboxLog, postsave_log
from bench.schema import DRIFT_SQL
from bench.services import Database
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE
from infrastructure.cli import processes


@dataclass
class Postsave(Contender):
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
            return drift_of(connection.execute(DRIFT_SQL).fetchone())

    def _start_recalc(self) -> None:
        self.generation += 1
        log = self.workdir / f"{self.name}-recalc-{self.generation}.log"
        self.recalc = self._track(
            processes.start_worker(
                procs.env_for(self._env(self.broker_url)),  # consumers: never cut
                log,
                queues=[RECALC_QUEUE],
                concurrency=2,
                name=f"{self.name}-recalc",
            )
        )
        procs.wait_for_log(log, self.recalc)

    def start(self) -> None:
        env = procs.env_for(self.producer_env())  # the relay publishes: through the outage
        relay_log = self.workdir / f"{self.name}-relay.log"
        self.relay = self._track(
            processes.start_worker(
                env, relay_log, queues=[POLL_QUEUE], concurrency=1, name=f"{self.name}-relay"
            )
        )
        self._start_recalc()
        procs.wait_for_log(relay_log, self.relay)
        self._track(processes.start_beat(env, self.workdir / f"{self.name}-beat.log"))

    def restart_recalc(self, settings_env: dict[str, str]) -> None:
        """Stop the recalculation worker gracefully; start it again with these settings."""
        assert self.recalc is not None
        processes.stop(self.recalc)
        self.started.remove(self.recalc)
        self.settings_env = settings_env
        self._start_recalc()

    def kill_workers(self) -> None:
        self._kill(self.recalc)
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
    workdir: Path,
    database: Database,
    amqp_url: str,
    settings_env: dict[str, str],
    name: str = "postsave-pg",
    description: str = "postsave on PostgreSQL + RabbitMQ",
) -> Postsave:
    return Postsave(
        name=name,
        kind="postsave",
        workdir=workdir,
        dsn=database.conninfo,
        log=postsave_log(database.conninfo),
        database_url=database.url,
        broker_url=amqp_url,
        settings_env=settings_env,
        description=f"{description}: relay worker, recalc worker (2), beat",
    )


def postsave_embedded(workdir: Path, settings_env: dict[str, str]) -> Postsave:
    database = workdir / "embedded" / "postsave.db"
    return Postsave(
        name="postsave-embedded",
        kind="postsave-use-cases",  # SQLite: no libpq connection for the SQL producer
        workdir=workdir,
        threads=1,  # SQLite has one writer at a time
        log=SqliteOutboxLog(str(database)),
        database_url=f"sqlite:///{database}",
        broker_url=f"sqla+sqlite:///{workdir / 'embedded' / 'broker.db'}",
        settings_env=settings_env,
        description="postsave's embedded default: SQLite + kombu's SQLAlchemy transport",
    )
