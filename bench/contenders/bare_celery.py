"""The bench's own Celery apps (bench/ceiling_app.py, bench/direct_app.py) on the run's vhost."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bench import procs
from bench.contenders.base import OneWorker
from bench.eventlog import bench_log
from bench.services import Database
from infrastructure.cli import processes
from tests.rabbitmq import ReadyWatch


@dataclass
class CeleryContender(OneWorker):
    app_module: str = ""
    queue: str = ""
    amqp_url: str = ""
    extra_env: dict[str, str] = field(default_factory=dict)
    _watch: ReadyWatch | None = None

    def producer_env(self) -> dict[str, str]:
        return {"BENCH_BROKER_URL": self.outage_url or self.amqp_url, **self.extra_env}

    def start(self) -> None:
        self.generation += 1
        log_name = f"{self.name}-worker-{self.generation}.log"
        command = processes.worker_command(app=self.app_module, queues=[self.queue], name=self.name)
        env = {"BENCH_BROKER_URL": self.amqp_url, **self.extra_env}  # consumers: never cut
        self.worker = self._spawn(command, env, log_name)
        procs.wait_for_log(self.workdir / log_name, self.worker)

    def queue_ready(self) -> int:
        """Messages waiting in its queue, polled every 10 ms by the ceiling's run."""
        if self._watch is None:
            self._watch = ReadyWatch(self.amqp_url, self.queue)
        return self._watch.ready()

    def stop(self) -> None:
        if self._watch is not None:
            self._watch.close()
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


def direct(workdir: Path, amqp_url: str, database: Database) -> CeleryContender:
    return CeleryContender(
        name="direct",
        kind="direct",
        workdir=workdir,
        dsn=database.conninfo,
        log=bench_log(database.conninfo),
        app_module="bench.direct_app",
        queue="bench.direct",
        amqp_url=amqp_url,
        extra_env={"BENCH_DIRECT_DSN": database.conninfo},
        description="commit, then apply_async; early ack, no outbox, no idempotency guard",
    )
