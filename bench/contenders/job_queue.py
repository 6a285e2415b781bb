"""procrastinate: a job deferred in the write transaction, run by `procrastinate worker`."""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import psycopg
from procrastinate.schema import SchemaManager

from bench import procs
from bench.contenders.base import OneWorker
from bench.eventlog import Window, bench_log
from bench.services import Database


@dataclass
class Procrastinate(OneWorker):
    def producer_env(self) -> dict[str, str]:
        return {"BENCH_PROCRASTINATE_DSN": self.dsn}

    def install_schema(self) -> None:
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


def procrastinate(workdir: Path, database: Database) -> Procrastinate:
    return Procrastinate(
        name="procrastinate",
        kind="procrastinate",
        workdir=workdir,
        dsn=database.conninfo,
        log=bench_log(database.conninfo),
        description="procrastinate 3 job deferred in the write transaction, worker concurrency 2",
    )
