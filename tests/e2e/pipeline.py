"""A running postsave: real `celery worker` and `celery beat` processes on a real broker."""

from __future__ import annotations

import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

from sqlalchemy import text

from domain import operations
from domain.outbox import OutboxStats
from infrastructure import processes
from infrastructure.bootstrap import Container
from infrastructure.broker.names import POLL_QUEUE, RECALC_QUEUE, RECALC_TASK
from infrastructure.settings import Settings
from tests.rabbitmq import broker_depths

# What the fault tests measured, printed at the end of the run (tests/conftest.py).
FAULT_REPORTS: list[str] = []


@dataclass
class Pipeline:
    database_url: str
    broker_url: str
    workdir: Path
    poll_interval_s: float = 0.2
    lease_seconds: float = 10.0
    max_in_flight: int = 1000
    batch_size: int = 100
    max_attempts: int = 10
    started: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.settings = Settings(
            database_url=self.database_url,
            broker_url=self.broker_url,
            poll_interval_s=self.poll_interval_s,
            lease_seconds=self.lease_seconds,
            max_in_flight=self.max_in_flight,
            batch_size=self.batch_size,
            max_attempts=self.max_attempts,
        )
        self.container = Container(self.settings, nudge=True)  # as an application would
        self.app = self.container.celery_app
        self.purge()

    @property
    def env(self) -> dict[str, str]:
        return {
            "POSTSAVE_DATABASE_URL": self.database_url,
            "POSTSAVE_BROKER_URL": self.broker_url,
            "POSTSAVE_POLL_INTERVAL": str(self.poll_interval_s),
            "POSTSAVE_LEASE_SECONDS": str(self.lease_seconds),
            "POSTSAVE_MAX_IN_FLIGHT": str(self.max_in_flight),
            "POSTSAVE_BATCH_SIZE": str(self.batch_size),
            "POSTSAVE_MAX_ATTEMPTS": str(self.max_attempts),
        }

    def start_worker(self, name: str = "w1", **options: object) -> subprocess.Popen[bytes]:
        process = processes.start_worker(
            self.env,
            self.workdir / f"worker-{name}.log",
            name=name,
            **options,  # type: ignore[arg-type]
        )
        self.started.append(process)
        return process

    def start_beat(self, name: str = "beat") -> subprocess.Popen[bytes]:
        process = processes.start_beat(
            self.env, self.workdir / f"{name}.log", self.workdir / f"{name}-schedule"
        )
        self.started.append(process)
        return process

    def stats(self) -> OutboxStats:
        return operations.outbox_stats(self.container.uow())

    def wait_until_drained(self, timeout_s: float = 120.0) -> OutboxStats:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_processes_alive()
            stats = self.stats()
            if stats.drained:
                return stats
            time.sleep(0.2)
        raise AssertionError(
            f"outbox not drained after {timeout_s}s: {self.stats()}\n{self.logs()}"
        )

    def queue_depths(self) -> dict[str, int]:
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            return {
                queue: channel.queue_declare(queue, passive=True).message_count
                for queue in (POLL_QUEUE, RECALC_QUEUE)
            }

    def broker_depths(self) -> dict[str, int]:
        """Messages RabbitMQ holds per queue, ready plus delivered-but-unacknowledged."""
        depths = broker_depths(unquote(urlparse(self.broker_url).path[1:]) or "/")
        return {queue: depths.get(queue, 0) for queue in (POLL_QUEUE, RECALC_QUEUE)}

    def counts(self) -> dict[str, int]:
        """What the fault tests report: events lost, and events applied more than once."""
        stats = self.stats()
        with self.container.engine.connect() as connection:
            applied = connection.execute(
                text("SELECT events_applied FROM bar_projection")
            ).scalar_one()
            recorded = connection.execute(text("SELECT count(*) FROM applied_events")).scalar_one()
        return {
            "events": stats.processed + stats.pending + stats.in_flight + stats.dead,
            "processed": stats.processed,
            "lost": stats.pending + stats.in_flight + stats.dead,
            "applied_twice": int(applied) - int(recorded),
        }

    def wait_until_processed(self, at_least: int, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            self.assert_processes_alive()
            if self.stats().processed >= at_least:
                return
            time.sleep(0.05)
        raise AssertionError(f"fewer than {at_least} processed after {timeout_s}s\n{self.logs()}")

    def wait_until_queues_empty(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.queue_depths()[RECALC_QUEUE] == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"{RECALC_QUEUE} not empty after {timeout_s}s")

    def deliver(self, event_id: object) -> None:
        """Publish a recalculate_bars message by hand, as a redelivery would."""
        self.app.send_task(RECALC_TASK, args=(event_id,), queue=RECALC_QUEUE)

    def purge(self) -> None:
        with self.app.connection_for_write() as connection:
            channel = connection.default_channel
            for queue in self.app.conf.task_queues:
                queue(channel).declare()
                queue(channel).purge()

    def assert_processes_alive(self) -> None:
        dead = [p.args for p in self.started if p.poll() is not None]
        assert not dead, f"processes died: {dead}\n{self.logs()}"

    def wait_for_log(self, text: str, count: int, timeout_s: float = 30.0) -> None:
        """Wait until the worker logs show `text` at least `count` times."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.logs(tail=None).count(text) >= count:
                return
            time.sleep(0.2)
        raise AssertionError(f"fewer than {count} log lines with {text!r}\n{self.logs()}")

    def logs(self, tail: int | None = 3000) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-(tail or 0) :]}"
            for path in sorted(self.workdir.glob("*.log"))
        )

    def stop(self) -> None:
        for process in reversed(self.started):
            processes.stop(process)
        self.started.clear()
        self.container.close()
